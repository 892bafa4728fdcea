"""Issue 16's web pages for a registry and for clusters, in a real browser (Debian's chromium driven by
Playwright against a live ``facesearch serve``; fixtures in conftest.py).

- Subjects: "Import a folder of people" uploads a folder-per-person tree (the browser's folder
  picker) and shows the report as a table: people created or found again, photos enrolled, photos
  without a usable face and unreadable files per person; a tree that cannot be imported is a message.
- A subject's search offers weaker candidates the way the search page does: counted, then a button
  that searches again with the audited ``include_weaker`` flag.
- Clusters: a form sent before the page's lists arrive is handled by the page (never submitted
  natively), and a face's photo opened from a cluster says its collection, source, capture time
  and cluster, boxes the face and leads back to the cluster.

Screenshots go to build/screenshots.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.conftest import browser_logged_in, shot, wait_images_loaded
from tests.test_browser_pages import field, index_folder_and_grant, watch_errors

MORE = Path(__file__).parent / "fixtures" / "subjects"
GALLERY = "registry-2026"
COLLECTION = "quayside"
CAPTURED = "2025:07:01 18:05:00"


@pytest.fixture(scope="module", autouse=True)
def inbox(tmp_path_factory, lfw):
    """A folder the server may index from (set before the module's server starts): three photos of
    Powell (one with a camera capture time), one of Bush and one of Chavez, under their own names."""
    root = tmp_path_factory.mktemp("inbox")
    folder = root / "quay"
    folder.mkdir()
    with Image.open(MORE / "Colin_Powell_0003.jpg") as img:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = CAPTURED  # DateTimeOriginal
        img.save(folder / "powell_on_the_quay.jpg", exif=exif, quality=95)
    shutil.copyfile(MORE / "Colin_Powell_0004.jpg", folder / "powell_2.jpg")
    shutil.copyfile(lfw("Colin_Powell_0001"), folder / "powell_3.jpg")
    shutil.copyfile(MORE / "George_W_Bush_0003.jpg", folder / "bush.jpg")
    shutil.copyfile(lfw("Hugo_Chavez_0001"), folder / "chavez.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACESEARCH_INGEST_ROOTS", str(root))
        yield root


@pytest.fixture(scope="module")
def registry(tmp_path_factory, lfw) -> Path:
    """Two people (one relabelled by the manifest), a photo without a face and a file that is no photo."""
    root = tmp_path_factory.mktemp("upload") / "registry"
    powell, bush = root / "Colin Powell", root / "George Bush"
    powell.mkdir(parents=True)
    bush.mkdir()
    shutil.copyfile(lfw("Colin_Powell_0002"), powell / "a.jpg")
    shutil.copyfile(MORE / "Colin_Powell_0004.jpg", powell / "b.jpg")
    shutil.copyfile(lfw("George_W_Bush_0001"), bush / "1.jpg")
    shutil.copyfile(lfw("George_W_Bush_0002"), bush / "2.jpg")
    (bush / "scan-notes.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (240, 180), (40, 120, 200)).save(bush / "sky.png")
    (root / "manifest.csv").write_text("folder,label,case\nGeorge Bush,George W. Bush,MP-2026-9\n")
    return root


@pytest.fixture(scope="module")
def quayside(browser_chromium, browser_live_server, inbox) -> str:
    """The collection indexed from the inbox by the admin and granted to ivan, once per module."""
    context, ada = browser_logged_in(browser_chromium, browser_live_server.url, "ada")
    try:
        assert index_folder_and_grant(ada, inbox / "quay", COLLECTION) == 5
        return COLLECTION
    finally:
        context.close()


def import_folder(page: Page, folder: Path, gallery: str = GALLERY):
    """The import form sent with ``folder`` chosen in the folder picker; the API's response."""
    form = page.locator("#import-form")
    form.get_by_label("Gallery (created if new)").fill(gallery)
    form.get_by_label("Folder of people").set_input_files(folder)
    expect(page.locator("#import-chosen")).to_contain_text("file(s) in")
    with page.expect_response(f"**/api/galleries/{gallery}/import") as answer:
        form.get_by_role("button", name="Import").click()
    expect(page.locator("#import-button")).to_be_enabled()
    return answer.value


def test_import_a_folder_of_people_shows_a_report_per_person(browser_login, registry, tmp_path):
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)
    ivan.goto("/subjects")
    expect(ivan.locator("#gallery-filter-select option").first).to_be_attached()

    # -- the folder: two people, their report per person ---------------------------------------------------
    answer = import_folder(ivan, registry)
    assert answer.ok, answer.text()
    # (a person per folder and the manifest's label: the files' relative paths were sent, not bare names)
    result = ivan.locator("#import-result")
    expect(result).to_have_text(f"Gallery {GALLERY} (new): 2 people — 2 created, 0 already in the gallery (found by "
                                "name); 4 photo(s) enrolled; 1 without a usable face; 1 unreadable.")
    rows = ivan.locator("#import-table tbody tr")
    expect(rows).to_have_count(2)
    powell, bush = rows.filter(has_text="Colin Powell"), rows.filter(has_text="George W. Bush")
    expect(powell.locator("td.enrolled")).to_have_text("2")
    expect(powell.locator("td.no-face")).to_have_text("—")
    expect(powell.locator("td.unreadable")).to_have_text("—")
    expect(bush.locator("td").first).to_have_text("George W. Bush (folder George Bush)")
    expect(bush.locator("td.enrolled")).to_have_text("2")
    expect(bush.locator("td.no-face li")).to_have_count(1)
    expect(bush.locator("td.no-face li")).to_contain_text(re.compile(r"^sky\.png: "))
    expect(bush.locator("td.unreadable li")).to_have_count(1)
    expect(bush.locator("td.unreadable li")).to_contain_text(re.compile(r"^scan-notes\.jpg: "))
    expect(bush.locator("td.no-face, td.unreadable")).not_to_contain_text(["George Bush/", "<bytes>"])  # said once
    assert "{" not in ivan.locator("#import-section").inner_text()  # a table, not JSON
    # the people are subjects of the gallery now, with their photos
    table = ivan.locator("#subjects-table tbody")
    expect(table.locator("tr")).to_have_count(2)
    for label in ("Colin Powell", "George W. Bush"):
        expect(table.locator("tr", has_text=label).locator("td").nth(2)).to_have_text(GALLERY)
        expect(table.locator("tr", has_text=label).locator("td").nth(3)).to_have_text("2")
    shot(ivan, "subjects_import")

    # -- again, with a changed manifest: found by name, attributes updated, nothing enrolled twice --------------
    (registry / "manifest.csv").write_text("folder,label,case\nGeorge Bush,George W. Bush,MP-2026-10\n")
    again = import_folder(ivan, registry)
    assert again.ok, again.text()
    expect(result).to_contain_text("2 people — 0 created, 2 already in the gallery (found by name, 1 with attributes "
                                   "updated); 0 photo(s) enrolled, 4 enrolled before (skipped)")
    expect(powell.locator("td").nth(1)).to_contain_text("already there")
    expect(bush.locator("td").last).to_have_text("attributes updated")
    expect(ivan.locator("#subjects-table tbody tr")).to_have_count(2)

    # -- a tree that cannot be imported: a message saying what to fix ----------------------------------------
    bad = tmp_path / "bad"
    (bad / "Someone").mkdir(parents=True)
    shutil.copyfile(registry / "Colin Powell" / "a.jpg", bad / "Someone" / "a.jpg")
    (bad / "manifest.csv").write_text("folder,case\nNobody,1\n")
    refused = import_folder(ivan, bad)
    assert refused.status == 400, refused.text()
    expect(result).to_have_class("error")
    expect(result).to_have_text(re.compile(r"^Not imported: .*the manifest names folder\(s\) that are not there: "
                                           r"Nobody"))
    expect(ivan.locator("#import-table")).to_be_hidden()
    expect(ivan.locator("#subjects-table tbody tr")).to_have_count(2)
    assert [e for e in errors if "status of 400" not in e] == [], errors


def test_subject_search_offers_weaker_candidates_like_the_search_page(browser_login, quayside, registry):
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)
    ivan.goto("/subjects")
    assert import_folder(ivan, registry, "weaker-check").ok  # its own gallery: this test stands alone
    ivan.locator("#subjects-table tbody tr", has_text="Colin Powell").filter(has_text="weaker-check") \
        .get_by_role("link").click()
    expect(ivan.locator("#subject-title")).to_have_text("Colin Powell")
    assert ivan.locator("#subject-search-form input[type=checkbox][name=include_weaker]").count() == 0  # no tick-box
    ivan.get_by_label("Purpose (required)").fill("locate a person reported missing")
    ivan.get_by_label("Case reference (required)").fill("MP-2026-31")
    with ivan.expect_response("**/search") as answer:
        ivan.get_by_role("button", name="Search", exact=True).click()
    first = answer.value.json()
    assert json.loads(answer.value.request.post_data)["include_weaker"] is False
    assert first["confident_match"] and first["weaker_withheld"] == 2, first  # Bush and Chavez
    expect(ivan.locator("#subject-candidates .cand.above")).to_have_count(3)
    weaker = re.compile(r"^2 weaker candidate\(s\) below the threshold")
    expect(ivan.locator("#subject-weaker-text")).to_have_text(weaker)
    expect(ivan.locator("#subject-weaker-group")).to_be_hidden()

    with ivan.expect_response("**/search") as answer:
        ivan.get_by_role("button", name="Show weaker candidates").click()
    assert json.loads(answer.value.request.post_data)["include_weaker"] is True
    expect(ivan.locator("#subject-weaker-candidates .cand.below")).to_have_count(2)
    expect(ivan.locator("#subject-candidates .cand")).to_have_count(3)
    expect(ivan.locator("#subject-weaker-shown")).to_be_visible()
    expect(ivan.locator("#subject-weaker")).to_be_hidden()
    wait_images_loaded(ivan, "#subject-results img")
    shot(ivan, "subject_weaker_shown")
    # asked for once: the next search is minimal again
    with ivan.expect_response("**/search") as answer:
        ivan.get_by_role("button", name="Search", exact=True).click()
    assert json.loads(answer.value.request.post_data)["include_weaker"] is False
    expect(ivan.locator("#subject-weaker-group")).to_be_hidden()
    expect(ivan.locator("#subject-weaker")).to_be_visible()
    assert errors == [], errors

    audrey = browser_login("audrey")
    searches = audrey.locator("#audit-table tbody tr[data-action='subject_search']")
    expect(searches).to_have_count(3)  # the first, the one asking for weaker candidates, the minimal one again
    said_yes = ".field:has(> dt:text-is('weaker candidates asked for')) > dd:text-is('yes')"
    asked = searches.filter(has=audrey.locator(said_yes))
    expect(asked).to_have_count(1)


def test_cluster_forms_before_the_lists_and_a_photo_from_a_cluster(browser_login, quayside):
    ivan = browser_login("ivan")
    errors = watch_errors(ivan)
    # the collection list held back: "Cluster now" sent before it arrives is the page's, not the browser's
    held = []
    ivan.route("**/api/collections", lambda route: held.append(route))
    ivan.goto("/clusters")
    ivan.get_by_role("button", name="Cluster now").click()
    expect(ivan.locator("#cluster-run")).to_have_text("Wait for the list of collections, then choose one.")
    assert len(held) == 1, held
    assert ivan.url.endswith("/clusters"), ivan.url  # not submitted natively (that would add ?collection=)
    for route in held:
        route.continue_()
    ivan.unroute("**/api/collections")
    ivan.locator("#cluster-collection").select_option(COLLECTION)
    with ivan.expect_response(f"**/api/collections/{COLLECTION}/clusters/run") as ran:
        ivan.get_by_role("button", name="Cluster now").click()
    assert ran.value.ok, ran.value.text()
    card = ivan.locator(".cluster-card").first
    expect(card).to_have_attribute("data-size", "3")  # Powell's three photos
    cluster_id = int(card.get_attribute("data-cluster-id"))

    # one cluster, held back: its name form sent before the cluster arrives is still the page's
    held.clear()
    ivan.route(f"**/api/clusters/{cluster_id}", lambda route: held.append(route) if route.request.method == "GET"
               else route.continue_())
    ivan.goto(f"/clusters/{cluster_id}")
    ivan.get_by_label("Name", exact=True).fill("Quay walker")
    with ivan.expect_response(f"**/api/clusters/{cluster_id}/name") as named:
        ivan.get_by_role("button", name="Save name").click()
    assert named.value.ok, named.value.text()
    expect(ivan.locator("#name-result")).to_have_text('Named "Quay walker".')
    assert ivan.url.endswith(f"/clusters/{cluster_id}"), ivan.url
    assert len(held) == 1, held
    for route in held:
        route.continue_()
    ivan.unroute(f"**/api/clusters/{cluster_id}")
    faces = ivan.locator("#cluster-faces .cluster-face")
    expect(faces).to_have_count(3)
    wait_images_loaded(ivan, "#cluster-faces img")

    # a face's photo from the cluster: its facts, the face boxed, and back to the cluster
    title = f"Quay walker (cluster {cluster_id})"
    dated = None
    for i in range(3):
        faces.nth(i).get_by_role("link", name="photo").click()
        wait_images_loaded(ivan, "#photo")
        facts = ivan.locator("#photo-facts")
        expect(field(facts, "Collection")).to_have_text(COLLECTION)
        expect(field(facts, "Cluster")).to_have_text(f"{title}, 3 face(s)")
        expect(field(facts, "Placed")).to_have_text("by the clustering")
        expect(ivan.locator("#photo-meta")).to_contain_text(f"of {title}, in collection {COLLECTION}")
        expect(ivan.locator("#photo-wrap .box.this")).to_have_count(1)
        if field(facts, "Source").inner_text() == "powell_on_the_quay.jpg":
            dated = i
            expect(field(facts, "Captured")).to_have_text("2025-07-01 18:05:00 (camera clock, from the photo)")
            shot(ivan, "photo_from_cluster")
        else:
            expect(field(facts, "Source")).to_have_text(re.compile(r"^powell_[23]\.jpg$"))
        back = ivan.get_by_role("link", name=f"← Back to {title}")
        expect(back).to_have_attribute("href", f"/clusters/{cluster_id}")
        back.click()
        expect(ivan).to_have_url(re.compile(rf"/clusters/{cluster_id}$"))
        expect(faces).to_have_count(3)
    assert dated is not None, "the photo with a capture time was not in the cluster"
    assert errors == [], errors
