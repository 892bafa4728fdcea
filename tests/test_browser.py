"""The web app in a real browser: Debian's chromium driven by Playwright against a live
``facesearch serve`` (fixtures ``browser_live_server``, ``browser_chromium`` and
``browser_login`` in conftest.py).

One story, end to end: an admin creates a collection and uploads photos, grants it to an
investigator; the investigator searches with another photo of the same person, finds and
opens the photo; the admin erases it; the same search no longer finds it; an auditor sees
both searches with their purpose and case reference, and the audit chain verifies. Weaker
candidates (below the threshold) are shown only when the investigator asks, and the asking is
recorded; a photo page opened without the view grant of a search shows nothing.

Each run writes screenshots to build/screenshots/ (curated copies for the README are in docs/screenshots/).
"""

from __future__ import annotations

import re
import time
from hashlib import sha256
from pathlib import Path

from playwright.sync_api import Page, expect

from facesearch.services.engine import Engine
from tests.conftest import SCREENSHOTS, shot, wait_images_loaded

COLLECTION = "case-files"
LEGAL_BASIS = "Seized-device evidence, court order 2026/117"
PURPOSE = "identify a witness seen on seized footage"
CASE_REF = "CASE-2026-0142"


def image_source(home: Path, face_id: int) -> Path:
    """Where the server's catalog says the photo of ``face_id`` is (the uploaded copy)."""
    with Engine.open(home) as engine:
        faces = engine.catalog.faces([face_id])
    assert face_id in faces, f"face {face_id} is not in the catalog"
    return Path(faces[face_id].image_source)


def search(page: Page, probe: Path) -> dict:
    """Run a search from the Search page; returns the API's JSON answer (the page shows it)."""
    page.goto("/")
    expect(page.locator(f"#collection-picks input[value='{COLLECTION}']")).to_be_checked()
    page.locator("#probe").set_input_files(probe)
    wait_images_loaded(page, "#probe-img")
    page.get_by_label("Purpose (required)").fill(PURPOSE)
    page.get_by_label("Case reference (required)").fill(CASE_REF)
    with page.expect_response("**/api/search") as answer:
        page.get_by_role("button", name="Search", exact=True).click()
    assert answer.value.ok, f"search failed: {answer.value.status} {answer.value.text()}"
    expect(page.locator("#results")).to_be_visible()
    expect(page.locator("#search-button")).to_be_enabled()
    return answer.value.json()


def test_upload_search_open_erase_and_audit(browser_login, browser_live_server, lfw, wider_group):
    started = time.monotonic()
    server = browser_live_server
    powell_1, powell_2 = lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002")
    uploads = [powell_1, lfw("George_W_Bush_0001"), lfw("Hugo_Chavez_0001"), wider_group[0]]

    # -- 1. the admin logs in, creates a collection, uploads four photos, grants the collection ----
    ada = browser_login("ada", screenshot=SCREENSHOTS / "login.png")
    expect(ada).to_have_url(server.url + "/")
    expect(ada.get_by_test_id("who")).to_contain_text("ada · admin")
    ada.get_by_role("link", name="Collections", exact=True).click()
    expect(ada).to_have_url(server.url + "/collections")

    create = ada.locator("#new-collection")
    create.get_by_label("Name", exact=True).fill(COLLECTION)
    create.get_by_label("Legal basis / consent note").fill(LEGAL_BASIS)
    create.get_by_role("button", name="Create").click()
    row = ada.locator("#collections-table tbody tr", has_text=COLLECTION)
    expect(row).to_contain_text(LEGAL_BASIS)
    expect(ada.locator("#upload-collection")).to_have_value(COLLECTION)

    ada.locator("#upload-files").set_input_files(uploads)
    ada.get_by_role("button", name="Upload and index").click()
    job = ada.locator("#jobs .job")
    expect(job).to_have_attribute("data-state", re.compile("^(done|failed)$"), timeout=90_000)
    expect(job).to_have_attribute("data-state", "done")
    expect(job).to_contain_text(f"upload into {COLLECTION}: done — 4/4 files, 4 photos")
    faces_indexed = int(re.search(r"(\d+) faces", job.inner_text()).group(1))
    assert faces_indexed > len(uploads), job.inner_text()  # the group photo holds many faces
    expect(row.locator("td").nth(1)).to_have_text("4")  # the table reloads after the job
    expect(row.locator("td").nth(2)).to_have_text(str(faces_indexed))
    shot(ada, "collections")

    ada.get_by_role("link", name="Admin", exact=True).click()
    expect(ada).to_have_url(server.url + "/admin")
    expect(ada.locator("#users-table tbody tr")).to_have_count(3)
    grant = ada.locator("#grant-form")
    expect(grant.locator("select option")).to_have_text([COLLECTION])
    grant.get_by_placeholder("username").fill("ivan")
    grant.locator("select").select_option(COLLECTION)
    grant.get_by_role("button", name="Grant collection").click()
    expect(ada.locator("#user-result")).to_have_text(f"Granted {COLLECTION} to ivan.")
    shot(ada, "admin")

    # -- 2. the investigator searches with another photo of Powell and opens the match ------------
    ivan = browser_login("ivan")
    expect(ivan).to_have_url(server.url + "/")
    result = search(ivan, powell_2)
    assert result["confident_match"], result
    expect(ivan.locator("#verdict")).to_have_class(re.compile(r"\bleads\b"))
    expect(ivan.locator("#verdict")).to_contain_text("1 candidate lead(s) above the threshold")
    above = ivan.locator("#candidates a.cand.above")
    expect(above).to_have_count(1)
    expect(ivan.locator("#candidates a.cand").first).to_have_class(re.compile(r"\babove\b"))  # ranked first
    face_id = int(above.get_attribute("data-face-id"))
    # the calibrated false-match estimate is on the card, in words a reviewer can act on
    estimate = above.locator(".fmr").inner_text()
    one_in = re.search(r"(about|fewer than) 1 in [\d,]+ different people score this high", estimate)
    assert one_in, estimate
    top = result["candidates"][0]
    assert top["false_match_words"] in estimate and top["false_match_rate"] < 1e-3
    assert re.search(r"searching \d[\d,]* faces, the chance that some different person scores this high", estimate)
    # the link carries the search's view grant, so the photo view is audited under its purpose and case
    expect(above).to_have_attribute("href", re.compile(rf"^/photo/{face_id}\?view=fv_[\w-]+$"))
    # strangers below the threshold are not shown unless asked for
    assert result["weaker_withheld"] > 0 and not result["include_weaker"]
    expect(ivan.locator("#weaker")).to_be_visible()
    expect(ivan.locator("#weaker-text")).to_contain_text(f"{result['weaker_withheld']} weaker candidate(s)")
    uploaded_copy = image_source(server.home, face_id)
    assert uploaded_copy.is_file()
    # uploads are stored under a keyed hash of their content: compare the content itself
    assert sha256(uploaded_copy.read_bytes()).digest() == sha256(powell_1.read_bytes()).digest(), \
        f"top candidate face {face_id} is from {uploaded_copy}, not Colin_Powell_0001"
    expect(ivan.locator("#candidates a.cand")).to_have_count(len(result["candidates"]))
    wait_images_loaded(ivan, "#candidates img")
    shot(ivan, "search_results")

    # counting ids instead: the photo page of the same face without the grant shows nothing
    ivan.goto(f"/photo/{face_id}")
    expect(ivan.locator("#photo-meta")).to_contain_text("no valid view grant")
    expect(ivan.locator("#photo-wrap .box")).to_have_count(0)
    search(ivan, powell_2)
    above.click()
    expect(ivan).to_have_url(re.compile(rf"^{re.escape(server.url)}/photo/{face_id}\?view=fv_"))
    wait_images_loaded(ivan, "#photo")
    expect(ivan.locator("#photo-wrap .box.this")).to_have_count(1)  # the face box is drawn on the photo
    expect(ivan.locator("#photo-facts")).to_contain_text(COLLECTION)
    expect(ivan.locator("#erase-image")).to_have_count(0)  # only admins erase
    shot(ivan, "photo")

    # -- 3. the admin erases the photo; the same search no longer finds Powell ---------------------
    search(ada, powell_2)  # the admin too looks at a face only through an audited search
    ada.locator(f"#candidates a.cand[data-face-id='{face_id}']").click()
    wait_images_loaded(ada, "#photo")
    ada.on("dialog", lambda dialog: dialog.accept())
    ada.get_by_role("button", name="Erase this photo and all its faces").click()
    expect(ada.locator("#erase-result")).to_have_text("Erased 1 face(s) and 1 photo(s).")
    expect(ada.locator("#photo")).to_have_count(0)
    assert not uploaded_copy.exists(), f"erased, but the uploaded copy {uploaded_copy} is still on disk"

    result = search(ivan, powell_2)
    assert not result["confident_match"], result
    expect(ivan.locator("#verdict")).to_have_class(re.compile(r"\bnone\b"))
    expect(ivan.locator("#verdict")).to_contain_text("No confident match")
    expect(ivan.locator("#candidates a.cand.above")).to_have_count(0)
    expect(ivan.locator(f"#candidates a.cand[data-face-id='{face_id}']")).to_have_count(0)
    expect(ivan.locator("#candidates a.cand")).to_have_count(0)  # nobody below the threshold either
    expect(ivan.locator("#weaker")).to_be_visible()
    with ivan.expect_response("**/api/search") as answer:
        ivan.get_by_role("button", name="Show weaker candidates").click()
    weaker = answer.value.json()
    assert weaker["include_weaker"] and weaker["candidates"] and not weaker["confident_match"], weaker
    expect(ivan.locator("#weaker-candidates a.cand.below")).to_have_count(len(weaker["candidates"]))
    expect(ivan.locator("#weaker-shown")).to_be_visible()
    expect(ivan.locator("#weaker")).to_be_hidden()
    wait_images_loaded(ivan, "#results .cand img")
    shot(ivan, "no_match")
    assert ivan.request.get(f"/api/faces/{face_id}").status == 403  # gone: same answer as "not yours"

    # -- 4. the auditor sees both searches with purpose and case; the chain verifies --------------
    audrey = browser_login("audrey")
    expect(audrey).to_have_url(server.url + "/audit")
    searches = audrey.locator("#audit-table tbody tr[data-action='search']").filter(has_text="ivan")
    expect(searches).to_have_count(4)  # two searches, one again to open the photo, one asking for weaker ones
    for i in range(4):
        # columns: #, when, user, action, purpose, case, details
        expect(searches.nth(i).locator("td").nth(2)).to_have_text("ivan")
        expect(searches.nth(i).locator("td").nth(4)).to_have_text(PURPOSE)
        expect(searches.nth(i).locator("td").nth(5)).to_have_text(CASE_REF)
        expect(searches.nth(i).locator("td").nth(6)).to_contain_text(f"collections1 — {COLLECTION}")
    views = audrey.locator("#audit-table tbody tr[data-action='view_photo']").filter(has_text="ivan")
    expect(views).to_have_count(1)  # ivan's photo view, audited with the purpose and case of his search
    expect(views.locator("td").nth(4)).to_have_text(PURPOSE)
    expect(views.locator("td").nth(5)).to_have_text(CASE_REF)
    erase = audrey.locator("#audit-table tbody tr[data-action='erase']")
    expect(erase).to_have_count(1)
    expect(erase.locator("td").nth(2)).to_have_text("ada")
    expect(erase.locator("td").nth(6)).to_contain_text(re.compile(r"faces1 — \d+.*photos1 — \d+"))
    audrey.get_by_role("button", name="Verify chain").click()
    expect(audrey.locator("#chain-status")).to_have_text(re.compile(r"^Chain intact: \d+ records verified\.$"))
    expect(audrey.locator("#chain-status")).to_have_class("ok")
    shot(audrey, "audit")

    print(f"browser story took {time.monotonic() - started:.1f} s")


def test_wrong_password_and_role_pages(browser_chromium, browser_live_server, browser_login):
    context = browser_chromium.new_context(base_url=browser_live_server.url)
    try:
        page = context.new_page()
        page.goto("/")
        expect(page).to_have_url(browser_live_server.url + "/login")  # not logged in: sent to log in
        page.get_by_label("Username").fill("ivan")
        page.get_by_label("Password").fill("not-his-password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
        expect(page).to_have_url(browser_live_server.url + "/login")
    finally:
        context.close()

    ivan = browser_login("ivan")
    expect(ivan.locator("header nav a")).to_have_text(["Search", "Collections", "Subjects", "Clusters"])
    ivan.goto("/admin")
    expect(ivan.get_by_role("heading", name="Not allowed")).to_be_visible()
    audrey = browser_login("audrey")
    expect(audrey.locator("header nav a")).to_have_text(["Audit"])
    audrey.goto("/")
    expect(audrey).to_have_url(browser_live_server.url + "/audit")


def test_compare_two_photos_shows_the_verdict_and_the_false_match_estimate(browser_login, lfw):
    ivan = browser_login("ivan")
    form = ivan.locator("#verify-form")
    form.locator("#verify-a").set_input_files(lfw("Colin_Powell_0001"))
    form.locator("#verify-b").set_input_files(lfw("Colin_Powell_0002"))
    form.get_by_label("Purpose of this comparison (required)").fill("check a witness statement")
    form.get_by_label("Case of this comparison (required)").fill("CASE-1:1")
    form.get_by_role("button", name="Compare").click()
    result = ivan.locator("#verify-result")
    expect(result).to_have_class(re.compile(r"\bleads\b"))
    expect(result).to_contain_text("Same person")
    expect(result).to_contain_text(re.compile(r"(about|fewer than) 1 in [\d,]+ different people score this high"))
    expect(ivan.locator("#verify-meta")).to_contain_text("false-match rate 0.0001")

    form.locator("#verify-b").set_input_files(lfw("Hugo_Chavez_0001"))
    form.get_by_role("button", name="Compare").click()
    expect(result).to_have_class(re.compile(r"\bnone\b"))
    expect(result).to_contain_text("Not the same person")
    shot(ivan, "verify")


def test_every_page_runs_under_the_content_security_policy(browser_login):
    """The policy forbids inline script and style attributes: no page may trip it, and the pages
    still work (their scripts ran: the menus and tables are filled). /docs is Swagger UI from this
    server's own files, and renders."""
    ada = browser_login("ada")
    violations: list[str] = []
    ada.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    ada.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                        "console.error('Content Security Policy: ' + e.violatedDirective + ' ' + e.blockedURI))")
    for path, ready in [("/", "#collection-picks label, #collection-picks p"), ("/collections", "#collections-table"),
                        ("/subjects", "#gallery-filter-select option"), ("/clusters", "#cluster-collection"),
                        ("/admin", "#users-table tbody tr"), ("/photo/1", "#photo-meta.error")]:
        ada.goto(path)
        expect(ada.locator(ready).first).to_be_attached()
    ada.goto("/photo/1")
    expect(ada.locator("#photo-meta")).to_contain_text("no valid view grant")  # its script ran, and was refused
    hosts: set[str] = set()
    ada.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    ada.goto("/docs")
    expect(ada.locator(".swagger-ui .opblock").first).to_be_visible(timeout=30_000)
    assert hosts == {ada.url.split("/")[2]}, f"/docs fetched from other hosts: {hosts}"
    assert violations == [], violations
