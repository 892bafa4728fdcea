"""Subjects in a real browser (Debian's chromium driven by Playwright against a live
``facesearch serve``; fixtures from conftest.py).

One story: an admin indexes three photos into a collection and grants it to an
investigator; the investigator creates a subject (a missing person, with the family's
contact as an attribute), enrols two other photos of him, searches the collection for the
subject with a purpose and a case reference, and confirms the match, which then stays
linked on the subject's page; the auditor sees the subject search and the decision in the
audit log (never the family's contact) and the chain verifies.

Writes build/screenshots/subject.png and build/screenshots/subjects_audit.png.
"""

from __future__ import annotations

import json
import re
import time
from hashlib import sha256
from pathlib import Path

from playwright.sync_api import expect

from facesearch.services.engine import Engine
from tests.conftest import browser_index_and_grant, shot, wait_images_loaded

MORE = Path(__file__).parent / "fixtures" / "subjects"
COLLECTION = "station-cctv"
GALLERY = "missing-persons"
PURPOSE = "locate a person reported missing"
CASE_REF = "MP-2026-017"
CONTACT = "+44 20 7946 0321 (sister)"



def test_subject_enrol_search_confirm_and_audit(browser_login, browser_live_server, lfw):
    started = time.monotonic()
    server = browser_live_server
    indexed = [lfw("Colin_Powell_0001"), lfw("George_W_Bush_0001"), lfw("Hugo_Chavez_0001")]

    # -- 1. the admin indexes three photos and grants the collection to the investigator --------------
    ada = browser_login("ada")
    browser_index_and_grant(ada, COLLECTION, "CCTV retained under warrant W-88", indexed, faces=3)

    # -- 2. the investigator creates a subject and enrols two photos -------------------------------------
    ivan = browser_login("ivan")
    ivan.get_by_role("link", name="Subjects", exact=True).click()
    expect(ivan).to_have_url(server.url + "/subjects")
    form = ivan.locator("#new-subject")
    form.get_by_label("Gallery (created if new)").fill(GALLERY)
    form.get_by_label("Name or number").fill("Colin Powell")
    form.locator("#new-subject-attributes").fill(f"case: {CASE_REF}\nlast seen: 2026-03-01\ncontact: {CONTACT}")
    with ivan.expect_navigation():
        form.get_by_role("button", name="Create subject").click()
    expect(ivan).to_have_url(re.compile(rf"^{re.escape(server.url)}/subjects/\d+$"))
    subject_id = int(ivan.url.rsplit("/", 1)[1])
    expect(ivan.locator("#subject-title")).to_have_text("Colin Powell")
    expect(ivan.locator("#subject-attributes")).to_contain_text(CONTACT)
    expect(ivan.locator("#links-empty")).to_be_visible()

    ivan.locator("#enrol-files").set_input_files([lfw("Colin_Powell_0002"), MORE / "Colin_Powell_0003.jpg"])
    ivan.get_by_role("button", name="Enrol photos").click()
    expect(ivan.locator("#enrol-result")).to_have_text(re.compile(r"^Enrolled 2 face\(s\)\."))
    expect(ivan.locator("#enrolled .cand")).to_have_count(2)
    wait_images_loaded(ivan, "#enrolled img")
    expect(ivan.locator("#subject-meta")).to_contain_text("2 enrolled face(s)")

    # -- 3. a search for the subject finds the indexed photo of him ---------------------------------------
    expect(ivan.locator(f"#subject-collections input[value='{COLLECTION}']")).to_be_checked()
    ivan.get_by_label("Purpose (required)").fill(PURPOSE)
    ivan.get_by_label("Case reference (required)").fill(CASE_REF)
    with ivan.expect_response(f"**/api/subjects/{subject_id}/search") as answer:
        ivan.get_by_role("button", name="Search", exact=True).click()
    assert answer.value.ok, answer.value.text()
    result = answer.value.json()
    assert result["confident_match"] and result["fusion"] == "mean", result
    expect(ivan.locator("#subject-verdict")).to_contain_text("1 candidate lead(s) above the threshold")
    # one count of the faces searched: the rule says how 2 enrolled faces make twice as many comparisons
    n = result["faces_searched"]
    meta = ivan.locator("#subject-result-meta")
    expect(meta).to_contain_text(f"Searched {n:,} faces in {COLLECTION}")
    expect(meta).to_contain_text(f"per search of {n:,} faces, each against 2 enrolled faces ({2 * n:,} comparisons)")
    assert f"per search of {2 * n:,} faces" not in meta.inner_text()
    above = ivan.locator("#subject-candidates .cand.above")
    expect(above).to_have_count(1)
    expect(ivan.locator("#subject-candidates .cand").first).to_have_class(re.compile(r"\babove\b"))
    face_id = int(above.get_attribute("data-face-id"))
    with Engine.open(server.home) as engine:
        source = Path(engine.catalog.faces([face_id])[face_id].image_source)
    # our copy of the upload (named by a keyed hash of its content): the content is the enrolled photo's
    assert sha256(source.read_bytes()).digest() == sha256(indexed[0].read_bytes()).digest(), source
    expect(above.locator(".fmr")).to_contain_text("different people score this high")
    wait_images_loaded(ivan, "#subject-candidates img")
    # its photo shows the score it had; back to the same results, not searched again
    score = f"{result['candidates'][0]['similarity']:.3f} · above the threshold · rank 1"
    above.get_by_role("link", name="photo").click()
    expect(ivan.locator("#photo-facts")).to_contain_text(score)
    wait_images_loaded(ivan, "#photo")
    searched_again: list[str] = []
    ivan.on("request", lambda r: searched_again.append(r.url) if r.url.endswith("/search") else None)
    ivan.get_by_role("link", name="← Back to the results").click()
    expect(ivan).to_have_url(re.compile(rf"/subjects/{subject_id}\?results=fv_"))
    expect(above).to_have_attribute("data-face-id", str(face_id))
    expect(ivan.get_by_label("Purpose (required)")).to_have_value(PURPOSE)
    assert searched_again == []

    # -- 4. the investigator confirms the match; it stays linked -------------------------------------------
    above.locator("input.note").fill("same scar above the left eyebrow")
    with ivan.expect_response(f"**/api/subjects/{subject_id}/decisions") as decided:
        above.get_by_role("button", name="Confirm").click()
    assert decided.value.status == 201, decided.value.text()
    expect(above.locator(".decision")).to_have_text("Confirmed by ivan")
    link = ivan.locator(f"#links .cand[data-link-face='{face_id}']")
    expect(link).to_contain_text(COLLECTION)
    expect(link).to_contain_text("confirmed by ivan")
    expect(ivan.locator("#links-empty")).to_be_hidden()
    wait_images_loaded(ivan, "#links img")
    shot(ivan, "subject")
    ivan.reload()
    expect(ivan.locator(f"#links .cand[data-link-face='{face_id}']")).to_have_count(1)  # kept, not page state

    # -- 5. the auditor sees the search and the decision, never the family's contact --------------------
    audrey = browser_login("audrey")
    expect(audrey).to_have_url(server.url + "/audit")
    decision = audrey.locator("#audit-table tbody tr[data-action='match.confirm']")
    expect(decision).to_have_count(1)
    # columns: #, when, user, action, purpose, case, details
    expect(decision.locator("td").nth(2)).to_have_text("ivan")
    expect(decision.locator("td").nth(4)).to_have_text(PURPOSE)
    expect(decision.locator("td").nth(5)).to_have_text(CASE_REF)
    details = json.loads(decision.get_attribute("data-details"))
    assert details["subject_id"] == subject_id and details["face_id"] == face_id, details
    search = audrey.locator("#audit-table tbody tr[data-action='subject_search']")
    expect(search).to_have_count(1)
    expect(search.locator("td").nth(2)).to_have_text("ivan")
    expect(search.locator("td").nth(5)).to_have_text(CASE_REF)
    expect(audrey.locator("#audit-table tbody tr[data-action='subject_enroll']")).to_have_count(1)
    assert CONTACT not in audrey.locator("#audit-table").inner_text()
    audrey.get_by_role("button", name="Verify chain").click()
    expect(audrey.locator("#chain-status")).to_have_text(re.compile(r"^Chain intact: \d+ records verified\.$"))
    shot(audrey, "subjects_audit")
    assert audrey.request.get(f"/api/subjects/{subject_id}").status == 403  # auditors do not read subjects

    print(f"subject browser story took {time.monotonic() - started:.1f} s")
