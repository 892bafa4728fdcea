"""The investigator's and the auditor's pages in a real browser (issue 16): Debian's chromium driven
by Playwright against a live ``facesearch serve`` (fixtures in conftest.py).

- Search: web wording (pick the face on the photo, no command-line hints), candidates above the
  threshold alone by default with the number of weaker ones, weaker ones only on an explicit,
  audited request, one count of the faces searched.
- Photo: score, collection, source name, capture time, the face boxed, back to the same results
  without searching again; refusals (no grant, opted out) as messages, for an admin too.
- Compare: both photos with their faces boxed and the verdict with its false-match estimate.
- Audit: details as labelled fields, long values folded and expandable, filters by date and purpose.

Every page is checked for script errors and console errors. Screenshots go to build/screenshots.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.conftest import browser_logged_in, shot, wait_images_loaded
from tests.video_fixtures import Appearance, render_video

COLLECTION = "harbour"
PURPOSE = "identify a witness seen at the harbour"
WEAKER_PURPOSE = "rule out lookalikes before an interview"
CASE_REF = "CASE-2026-0316"
CAPTURED = "2025:06:14 09:30:00"
#: What a refused request logs in the browser console by itself (not a script error).
REFUSED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of 403")


@pytest.fixture(scope="module", autouse=True)
def inbox(tmp_path_factory, lfw, wider_group):
    """A folder the server may ingest from (set before the module's server starts): Powell with a
    camera capture time, Bush, Chavez and the WIDER group photo, under names the photo view shows."""
    root = tmp_path_factory.mktemp("inbox")
    folder = root / "photos"
    folder.mkdir()
    # a 5-second clip in which Powell is on screen from 0.5 s to 4.5 s
    walk = Appearance("Colin_Powell_0001", 0.5, 4.5, (40, 40), (120, 50), 140, 150)
    (root / "clips").mkdir()
    render_video(root / "clips" / "crossing.mp4", (walk,), 5.0)
    with Image.open(lfw("Colin_Powell_0001")) as img:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = CAPTURED  # DateTimeOriginal
        img.save(folder / "powell_at_the_harbour.jpg", exif=exif, quality=95)
    shutil.copyfile(lfw("George_W_Bush_0001"), folder / "bush.jpg")
    shutil.copyfile(lfw("Hugo_Chavez_0001"), folder / "chavez.jpg")
    shutil.copyfile(wider_group[0], folder / "group.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACESEARCH_INGEST_ROOTS", str(root))
        yield root


def watch_errors(page: Page) -> list[str]:
    """Script errors and console errors of ``page`` from now on."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"script error: {exc}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def field(scope, label: str):
    """The value (``dd``) of the field labelled ``label`` in ``scope``."""
    return scope.locator(f".field:has(> dt:text-is('{label}')) > dd")


def index_folder_and_grant(ada: Page, folder: Path, collection: str = COLLECTION) -> int:
    """As the admin: a collection indexed from ``folder`` (server-side), granted to ivan; its face count."""
    ada.goto("/collections")
    create = ada.locator("#new-collection")
    create.get_by_label("Name", exact=True).fill(collection)
    create.get_by_label("Legal basis / consent note").fill("Harbour CCTV stills, warrant 2026/88")
    create.get_by_role("button", name="Create").click()
    expect(ada.locator("#upload-collection")).to_have_value(collection)
    ada.locator("#folder-form input[name=path]").fill(str(folder))
    ada.locator("#folder-form button[type=submit]").click()
    job = ada.locator("#jobs .job")
    expect(job).to_have_attribute("data-state", "done", timeout=120_000)
    faces = int(re.search(r"(\d+) faces", job.inner_text()).group(1))
    ada.goto("/admin")
    grant = ada.locator("#grant-form")
    grant.get_by_placeholder("username").fill("ivan")
    grant.locator("select").select_option(collection)
    grant.get_by_role("button", name="Grant collection").click()
    expect(ada.locator("#user-result")).to_have_text(f"Granted {collection} to ivan.")
    return faces


@pytest.fixture(scope="module")
def harbour(browser_chromium, browser_live_server, inbox) -> int:
    """The collection every test here searches, indexed from the inbox and granted to ivan, once
    per module; its number of faces."""
    context, ada = browser_logged_in(browser_chromium, browser_live_server.url, "ada")
    try:
        return index_folder_and_grant(ada, inbox / "photos")
    finally:
        context.close()


def search(page: Page, probe: Path, purpose: str = PURPOSE, collection: str = COLLECTION) -> dict:
    """A search from the search page in ``collection`` only; the API's answer."""
    page.goto("/")
    expect(page.locator(f"#collection-picks input[value='{collection}']")).to_be_checked()
    for other in page.locator("#collection-picks input[name=collections]").all():
        other.set_checked(other.get_attribute("value") == collection)
    page.get_by_label("Photo of the person to search for").set_input_files(probe)
    wait_images_loaded(page, "#probe-img")
    page.get_by_label("Purpose (required)").fill(purpose)
    page.get_by_label("Case reference (required)").fill(CASE_REF)
    with page.expect_response("**/api/search") as answer:
        page.get_by_role("button", name="Search", exact=True).click()
    assert answer.value.ok, answer.value.text()
    expect(page.locator("#search-button")).to_be_enabled()
    return answer.value.json()


def test_search_photo_back_and_audit(browser_login, harbour, lfw, wider_group):
    faces_indexed = harbour
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)

    # -- search: the one candidate above the threshold, alone; the weaker ones counted, not shown ----
    result = search(ivan, lfw("Colin_Powell_0002"))
    weaker = result.get("weaker_count", result["weaker_withheld"])
    assert result["confident_match"] and weaker > 0 and not result["include_weaker"], result
    assert all(c["above_threshold"] for c in result["candidates"]), "a below-threshold candidate by default"
    expect(ivan.locator("#candidates a.cand")).to_have_count(1)
    expect(ivan.locator("#weaker-candidates a.cand")).to_have_count(0)
    expect(ivan.locator("#weaker-text")).to_have_text(re.compile(rf"^{weaker} weaker candidate\(s\) below"))
    expect(ivan.get_by_role("button", name="Show weaker candidates")).to_be_visible()
    expect(ivan.locator("#probe-meta")).to_have_text(re.compile(r"^Face looked for: the only one in the photo"))
    # one count of the faces searched, the same wherever a number of faces searched is said
    assert result["faces_searched"] == faces_indexed
    body = ivan.locator("main").inner_text()
    assert "--face" not in body and "--" not in ivan.locator("#results").inner_text()
    assert body.count("Searched ") == 1, body
    said = {int(n.replace(",", "")) for n in re.findall(r"(?:Searched|searching|search of) ([\d,]+) faces", body)}
    assert said == {faces_indexed}, (said, body)
    card = ivan.locator("#candidates a.cand.above")
    expect(card).to_have_attribute("aria-label", re.compile(r"^candidate 1: similarity 0\.\d{3}, above the threshold"))
    wait_images_loaded(ivan, "#candidates img")
    shot(ivan, "search_above_only")

    # -- the photo: score, collection, source name, capture time, the face boxed ---------------------
    top = result["candidates"][0]
    card.click()
    expect(ivan).to_have_url(re.compile(rf"/photo/{top['face_id']}\?view=fv_"))
    wait_images_loaded(ivan, "#photo")
    facts = ivan.locator("#photo-facts")
    expect(field(facts, "Score")).to_have_text(f"{top['similarity']:.3f} · above the threshold · rank 1")
    expect(field(facts, "Collection")).to_have_text(COLLECTION)
    expect(field(facts, "Source")).to_have_text("powell_at_the_harbour.jpg")
    expect(field(facts, "Captured")).to_have_text("2025-06-14 09:30:00 (camera clock, from the photo)")
    expect(field(facts, "False-match estimate")).to_contain_text(re.compile(r"^(about|fewer than) 1 in [\d,]+"))
    expect(ivan.locator("#photo-wrap .box.this")).to_have_count(1)
    expect(ivan.get_by_role("img", name=f"face {top['face_id']}, the one looked for")).to_be_visible()
    box = ivan.locator("#photo-wrap .box.this").bounding_box()
    photo = ivan.locator("#photo").bounding_box()
    assert box["width"] > 20 and photo["x"] <= box["x"] and box["x"] + box["width"] <= photo["x"] + photo["width"] + 1
    shot(ivan, "photo_view")

    # -- back to the same results, shown again from this tab's memory: no new search ----------------
    searches: list[str] = []
    ivan.on("request", lambda r: searches.append(r.url) if r.url.endswith("/api/search") else None)
    ivan.get_by_role("link", name="← Back to the results").click()
    expect(ivan).to_have_url(re.compile(r"/\?results=fv_"))
    expect(ivan.locator("#restored")).to_be_visible()
    expect(ivan.locator("#candidates a.cand.above")).to_have_count(1)
    expect(ivan.locator(f"#candidates a.cand[data-face-id='{top['face_id']}']")).to_be_visible()
    expect(ivan.get_by_label("Purpose (required)")).to_have_value(PURPOSE)
    expect(ivan.get_by_label("Case reference (required)")).to_have_value(CASE_REF)
    wait_images_loaded(ivan, "#candidates img, #probe-img")
    assert searches == [], "going back searched again"

    # -- a group photo: pick another face on the photo ------------------------------------------------
    group = search(ivan, wider_group[0])
    n = group["probe"]["faces_in_image"]
    assert n > 2
    expect(ivan.locator("#probe-meta")).to_contain_text(f"The photo shows {n} faces. Face looked for: the largest, "
                                                        "most central one (green box)")
    expect(ivan.locator("#probe-meta")).to_contain_text("pick their face on the photo")
    picks = ivan.locator("#probe-view button.pick")
    expect(picks).to_have_count(n)
    other = next(i for i in range(n) if i != group["probe"]["chosen"])
    shot(ivan, "search_pick_face")
    with ivan.expect_response("**/api/search") as answer:
        ivan.get_by_role("button", name=f"search for face {other + 1} of {n}", exact=True).click()
    assert answer.value.json()["probe"]["chosen"] == other
    picked = f"Face looked for: the one you picked (face {other + 1}, green box)"
    expect(ivan.locator("#probe-meta")).to_contain_text(picked)
    expect(ivan.locator("#probe-view button.pick.this")).to_have_attribute("aria-label",
                                                                          f"searched: face {other + 1} of {n}")

    # -- weaker candidates: only when asked, recorded; shown apart, after the leads --------------------
    search(ivan, lfw("Colin_Powell_0002"), purpose=WEAKER_PURPOSE)
    with ivan.expect_response("**/api/search") as answer:
        ivan.get_by_role("button", name="Show weaker candidates").click()
    asked = answer.value.json()
    below = [c for c in asked["candidates"] if not c["above_threshold"]]
    assert asked["include_weaker"] and len(below) > 6, asked
    expect(ivan.locator("#weaker-candidates a.cand.below")).to_have_count(len(below))
    expect(ivan.locator("#candidates a.cand.above")).to_have_count(1)
    expect(ivan.locator("#weaker-shown")).to_be_visible()
    expect(ivan.locator("#weaker")).to_be_hidden()
    wait_images_loaded(ivan, "#results .cand img")
    shot(ivan, "search_weaker_shown")
    assert errors == [], errors

    # -- the auditor: readable fields, folded long values, filters --------------------------------------
    audrey = browser_login("audrey")
    audit_errors = watch_errors(audrey)
    rows = audrey.locator("#audit-table tbody tr[data-action='search']")
    expect(rows).to_have_count(5)
    for i in range(5):
        details = rows.nth(i).locator("td.details")
        expect(field(details, "collections")).to_have_text(f"1 — {COLLECTION}")
        assert '{"' not in details.inner_text() and '":' not in details.inner_text(), details.inner_text()
    weaker_row = rows.filter(has_text=WEAKER_PURPOSE).filter(
        has=audrey.locator(".field:has(> dt:text-is('weaker candidates asked for')) > dd:text-is('yes')"))
    expect(weaker_row).to_have_count(1)
    # a long list is folded after its first items and opens whole on click
    fold = field(weaker_row, "candidates shown")
    expect(fold).to_contain_text(re.compile(rf"^{len(asked['candidates'])} — face \d+ \(0\.\d{{3}}\)"))
    expect(fold).to_contain_text(f"{len(asked['candidates']) - 6} more")
    fold.get_by_text(f"{len(asked['candidates']) - 6} more").click()
    expect(fold.locator(".full")).to_be_visible()
    assert fold.locator(".full").inner_text().count("face ") == len(asked["candidates"])
    # the probe hash is folded too, never cut: the full 64 hex digits on click
    sha = field(rows.first, "probe SHA-256").locator("details")
    expect(sha.locator("summary")).to_have_text(re.compile(r"^[0-9a-f]{12}… show all$"))
    sha.locator("summary").click()
    expect(sha.locator(".full")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    # ids lead to what they refer to, where an auditor may go: the record that issued a view grant
    view = audrey.locator("#audit-table tbody tr[data-action='view_photo']").first
    record = field(view, "under record").get_by_role("link")
    expect(record).to_have_attribute("href", re.compile(r"^#rec-\d+$"))
    expect(audrey.locator(record.get_attribute("href"))).to_have_attribute("data-action", "search")
    shot(audrey, "audit_fields")

    filters = audrey.locator("#audit-filter")
    filters.get_by_label("Purpose contains").fill("LOOKALIKES")  # any case
    filters.get_by_role("button", name="Filter").click()
    expect(audrey.locator("#audit-table tbody tr")).to_have_count(2)  # the search and the one asking for weaker
    expect(audrey.locator("#audit-table tbody tr td:nth-child(5)")).to_have_text([WEAKER_PURPOSE] * 2)
    expect(audrey).to_have_url(re.compile(r"/audit\?purpose=LOOKALIKES$"))
    today = datetime.now(UTC).date()
    filters.get_by_label("From (UTC date)").fill(str(today + timedelta(days=1)))
    filters.get_by_role("button", name="Filter").click()
    expect(audrey.locator("#audit-table tbody tr")).to_have_count(0)
    expect(audrey.locator("#audit-count")).to_have_text("0 record(s) matching the filters, newest first.")
    filters.get_by_label("From (UTC date)").fill(str(today))
    filters.get_by_label("To (UTC date, inclusive)").fill(str(today))  # a whole day, today's records too
    filters.get_by_role("button", name="Filter").click()
    expect(audrey.locator("#audit-table tbody tr")).to_have_count(2)
    filters.get_by_role("button", name="Clear").click()
    # a user name is a filtered view of that user's records
    audrey.locator("#audit-table tbody tr[data-action='search'] td:nth-child(3)").first.get_by_role("link").click()
    expect(audrey).to_have_url(re.compile(r"/audit\?actor=ivan$"))
    expect(audrey.locator("#audit-table tbody tr td:nth-child(3)").first).to_have_text("ivan")
    assert set(audrey.locator("#audit-table tbody tr td:nth-child(3)").all_inner_texts()) == {"ivan"}
    shot(audrey, "audit_filtered")
    assert audit_errors == [], audit_errors


def test_photo_refusals_are_messages_for_investigator_and_admin(browser_login, harbour, lfw):
    """No grant, or a face whose person opted out after the search: a message, no broken image,
    no script error -- for the admin too."""
    ivan, ada = browser_login("ivan"), browser_login("ada")
    ivan_errors, ada_errors = watch_errors(ivan), watch_errors(ada)
    result = search(ivan, lfw("Hugo_Chavez_0002"))
    chavez = next(c for c in result["candidates"] if c["above_threshold"])
    admin_result = search(ada, lfw("Hugo_Chavez_0002"))
    admin_link = ada.locator(f"#candidates a.cand[data-face-id='{chavez['face_id']}']").get_attribute("href")
    assert admin_result["confident_match"]

    ivan.goto(f"/photo/{chavez['face_id']}")  # the id without the grant of a search
    expect(ivan.locator("#photo-meta")).to_have_class("error")
    expect(ivan.locator("#photo-meta")).to_contain_text("carries no valid view grant. Search again to see it.")
    expect(ivan.locator("#photo-wrap img")).to_have_count(0)
    expect(ivan.locator("#photo-figure")).to_be_hidden()

    ada.goto("/admin")
    optout = ada.locator("#optout-form")
    optout.locator("input[type=file]").set_input_files(lfw("Hugo_Chavez_0001"))
    optout.locator("input[name=reference]").fill("OPT-2026-7")
    optout.get_by_role("button", name="Register opt-out").click()
    expect(ada.locator("#optout-result")).to_contain_text("registered")

    for page, link in ((ivan, None), (ada, admin_link)):
        if link is None:
            search_page = search(page, lfw("Colin_Powell_0002"))  # any search page, then the old link
            assert search_page["confident_match"]
            link = f"/photo/{chavez['face_id']}?view={result['view_token']}"
        page.goto(link)
        expect(page.locator("#photo-meta")).to_contain_text("cannot be shown: it was erased, the person opted out")
        expect(page.locator("#photo-wrap img")).to_have_count(0)
        expect(page.locator("#photo-figure")).to_be_hidden()
    expect(ada.locator("#erase-panel")).to_be_hidden()
    shot(ada, "photo_refused")
    for errors in (ivan_errors, ada_errors):
        assert [e for e in errors if not REFUSED_LOAD.match(e)] == [], errors


def test_compare_shows_both_faces_boxed_and_the_verdict(browser_login, lfw, two_people):
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)
    form = ivan.locator("#verify-form")
    form.get_by_label("First photo").set_input_files(lfw("Colin_Powell_0002"))
    form.get_by_label("Second photo").set_input_files(two_people)
    form.get_by_label("Purpose of this comparison (required)").fill("check a witness statement")
    form.get_by_label("Case of this comparison (required)").fill(CASE_REF)
    with ivan.expect_response("**/api/verify") as answer:
        form.get_by_role("button", name="Compare").click()
    r = answer.value.json()
    assert r["same_person"], r
    expect(ivan.locator("#verify-result")).to_contain_text(re.compile(
        r"^Same person: a lead for human review — similarity 0\.\d{3}; (about|fewer than) 1 in [\d,]+"))
    figures = ivan.locator("#verify-faces figure")
    expect(figures).to_have_count(2)
    wait_images_loaded(ivan, "#verify-faces img")
    expect(figures.nth(0).locator(".box")).to_have_count(1)
    expect(figures.nth(1).locator(".box")).to_have_count(2)  # Powell and Bush; Powell compared
    expect(figures.nth(0).locator(".box.this")).to_have_count(1)
    expect(figures.nth(1).locator(".box.this")).to_have_count(1)
    chosen = r["faces"][1]["chosen"]
    expect(figures.nth(1).get_by_role("img", name=f"Second photo, face {chosen + 1} (compared)")).to_be_visible()
    expect(figures.nth(1).locator("figcaption")).to_contain_text(f"face {chosen + 1} of 2 compared")
    big = figures.nth(1).locator(".box.this").bounding_box()
    small = figures.nth(1).locator(".box:not(.this)").bounding_box()
    assert big["width"] > small["width"], "the compared face is the large one (Powell)"
    expect(ivan.locator("#verify-meta")).to_contain_text("false-match rate")
    shot(ivan, "compare_faces")
    assert errors == [], errors


def test_a_video_candidate_shows_its_frame_and_time_on_screen(browser_login, harbour, inbox, lfw):
    ada = browser_login("ada")
    index_folder_and_grant(ada, inbox / "clips", "clips")
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)
    result = search(ivan, lfw("Colin_Powell_0002"), collection="clips")
    top = result["candidates"][0]
    assert top["above_threshold"] and top["media"] == "video", result
    assert len([c for c in result["candidates"] if c["media"] == "video"]) == 1  # one candidate per track
    card = ivan.locator(f"#candidates a.cand[data-face-id='{top['face_id']}']")
    others = [f for f in top["track_faces"] if f != top["face_id"]]
    assert others, top
    expect(card.locator(".frames")).to_have_text(
        f"best of {top['track_hits']} matching frame(s), {len(top['track_faces'])} in the track")
    # the track's other faces only on demand: a view of its own, with the search's purpose and case
    with ivan.expect_response("**/api/views") as granted:
        ivan.get_by_role("button", name=f"Show the other {len(others)} face(s) of the track of candidate 1 "
                                        "(recorded in the audit log)").click()
    assert granted.value.status == 201
    track = ivan.locator(f"#tracks .track[data-face-id='{top['face_id']}'] .track-faces a.cand")
    expect(track).to_have_count(len(others))
    wait_images_loaded(ivan, "#tracks img")
    shot(ivan, "search_video_track")
    expect(card.locator(".when")).to_contain_text(re.compile(r"^video at 0:0\d\.\d · on screen 0:0\d\.\d–0:0\d\.\d$"))
    card.click()
    wait_images_loaded(ivan, "#photo")
    facts = ivan.locator("#photo-facts")
    expect(field(facts, "Source")).to_have_text("crossing.mp4")
    expect(field(facts, "Video frame")).to_have_text(re.compile(r"^at 0:0\d\.\d$"))
    span = re.escape(f"(face track {top['track_id']})")
    expect(field(facts, "On screen")).to_have_text(re.compile(rf"^0:0[01]\.\d–0:0[45]\.\d {span}$"))
    expect(field(facts, "Captured")).to_have_text(re.compile("^not known"))
    expect(ivan.locator("#photo-wrap .box.this")).to_have_count(1)
    alt = re.compile(r"^video frame at 0:0\d\.\d with face \d+ boxed$")
    expect(ivan.locator("#photo")).to_have_attribute("alt", alt)
    expect(ivan.get_by_role("heading", level=1)).to_have_text(f"Video frame of face {top['face_id']}")
    shot(ivan, "photo_video_frame")
    assert errors == [], errors


#: A form control without a label: no <label>, aria-label, aria-labelledby or title (a placeholder
#: disappears when typing and is not a label). Hidden inputs and buttons with text are fine.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !el.title
    && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => `${el.tagName.toLowerCase()}#${el.id || ''}[name=${el.name || ''}]`)"""


def test_every_page_has_labelled_controls_and_no_console_errors(browser_login, harbour):
    pages = {"ada": [("/", "#collection-picks label"), ("/collections", "#collections-table tbody tr"),
                     ("/subjects", "#gallery-filter-select option"), ("/clusters", "#cluster-collection"),
                     ("/admin", "#users-table tbody tr"), ("/account", "#own-password")],
             "audrey": [("/audit", "#audit-table tbody tr"), ("/account", "#own-password")]}
    unlabelled: dict[str, list[str]] = {}
    for user, paths in pages.items():
        page = browser_login(user)
        errors = watch_errors(page)
        for path, ready in paths:
            page.goto(path)
            expect(page.locator(ready).first).to_be_attached()
            page.wait_for_load_state("networkidle")
            if found := page.evaluate(UNLABELLED):
                unlabelled[f"{user} {path}"] = found
        assert errors == [], (user, errors)
    assert unlabelled == {}, "controls without a label"
