"""Clusters in a real browser (Debian's chromium driven by Playwright against a live
``facesearch serve``; fixtures from conftest.py).

One story: an admin indexes eight photos (four of Powell, three of Bush, one of Chavez) into a
collection and grants it to an investigator; the investigator clusters it from the Clusters
page and sees Powell's cluster first (the largest), Bush's next and Chavez left unassigned;
splits two of Powell's faces off into a new cluster and merges the two back; names the
cluster and makes it a subject, whose page then shows the four enrolled faces; the auditor
sees every step in the audit log (never the name typed) and the chain verifies.

Writes build/screenshots/clusters.png and build/screenshots/cluster.png.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import browser_index_and_grant, shot, wait_images_loaded

MORE = Path(__file__).parent / "fixtures" / "subjects"
COLLECTION = "event-photos"
NAME = "Colin Powell"



def test_cluster_split_merge_name_subject_and_audit(browser_login, browser_live_server, lfw):
    started = time.monotonic()
    server = browser_live_server
    photos = [lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002"), MORE / "Colin_Powell_0003.jpg",
              MORE / "Colin_Powell_0004.jpg", lfw("George_W_Bush_0001"), lfw("George_W_Bush_0002"),
              MORE / "George_W_Bush_0003.jpg", lfw("Hugo_Chavez_0001")]

    # -- 1. the admin indexes the photos and grants the collection to the investigator -------------------
    ada = browser_login("ada")
    browser_index_and_grant(ada, COLLECTION, "event photos, consent forms on file", photos, faces=8)

    # -- 2. the investigator clusters the collection: the largest cluster first -----------------------------
    ivan = browser_login("ivan")
    ivan.get_by_role("link", name="Clusters", exact=True).click()
    expect(ivan).to_have_url(re.compile(rf"^{re.escape(server.url)}/clusters(\?.*)?$"))
    expect(ivan.locator("#cluster-collection")).to_have_value(COLLECTION)
    expect(ivan.locator("#clusters-empty")).to_be_visible()
    with ivan.expect_response(f"**/api/collections/{COLLECTION}/clusters/run") as answer:
        ivan.get_by_role("button", name="Cluster now").click()
    assert answer.value.ok, answer.value.text()
    assert answer.value.json()["mode"] == "full", answer.value.json()
    expect(ivan.locator("#cluster-run")).to_contain_text(
        "Full run: 8 face(s) clustered")
    expect(ivan.locator("#cluster-run")).to_contain_text("2 cluster(s), 7 face(s) in clusters, 1 unassigned.")
    cards = ivan.locator(".cluster-card")
    expect(cards).to_have_count(2)
    expect(cards.first).to_have_attribute("data-size", "4")
    expect(cards.nth(1)).to_have_attribute("data-size", "3")
    expect(cards.first.locator(".samples img")).to_have_count(4)
    wait_images_loaded(ivan, ".cluster-card img")
    shot(ivan, "clusters")
    powell = int(cards.first.get_attribute("data-cluster-id"))

    # -- 3. two of Powell's faces split off into a new cluster ... -----------------------------------------
    cards.first.locator("a.title").click()
    expect(ivan).to_have_url(f"{server.url}/clusters/{powell}")
    faces = ivan.locator("#cluster-faces .cluster-face")
    expect(faces).to_have_count(4)
    wait_images_loaded(ivan, "#cluster-faces img")
    faces.nth(2).locator("input[type=checkbox]").check()
    faces.nth(3).locator("input[type=checkbox]").check()
    expect(ivan.locator("#selected-count")).to_have_text("2 face(s) selected")
    ivan.get_by_role("button", name="Split into new cluster").click()
    expect(ivan.locator("#edit-result")).to_have_text(re.compile(r"^Split 2 face\(s\) into new cluster \d+\."))
    split = int(re.search(r"new cluster (\d+)", ivan.locator("#edit-result").inner_text()).group(1))
    expect(faces).to_have_count(2)

    # -- ... and merged back from the clusters page ------------------------------------------------------------
    ivan.locator("#back-link").click()
    expect(ivan.locator(".cluster-card")).to_have_count(3)
    expect(ivan.locator(".cluster-card").first).to_have_attribute("data-size", "3")  # Bush's is the largest now
    ivan.locator(f".cluster-card[data-cluster-id='{powell}'] input[data-select]").check()
    expect(ivan.get_by_role("button", name="Merge selected clusters")).to_be_disabled()
    ivan.locator(f".cluster-card[data-cluster-id='{split}'] input[data-select]").check()
    ivan.get_by_role("button", name="Merge selected clusters").click()
    expect(ivan.locator("#merge-result")).to_have_text(
        f"Merged cluster(s) {split} into cluster {powell} (2 face(s) moved).")
    expect(ivan.locator(".cluster-card")).to_have_count(2)
    expect(ivan.locator(".cluster-card").first).to_have_attribute("data-cluster-id", str(powell))
    expect(ivan.locator(".cluster-card").first).to_have_attribute("data-size", "4")

    # -- 4. named, the cluster becomes a subject ------------------------------------------------------------------
    ivan.locator(f".cluster-card[data-cluster-id='{powell}'] a.title").click()
    expect(ivan.locator("#cluster-faces .cluster-face")).to_have_count(4)
    expect(ivan.locator("#cluster-meta")).to_contain_text("2 placed by a person")
    ivan.get_by_label("Name", exact=True).fill(NAME)
    ivan.get_by_role("button", name="Save name").click()
    expect(ivan.locator("#name-result")).to_have_text(f'Named "{NAME}".')
    expect(ivan.locator("#cluster-title")).to_have_text(f"{NAME} (cluster {powell})")
    ivan.get_by_label("Gallery (created if new)").fill("identified")
    with ivan.expect_response(f"**/api/clusters/{powell}/subject") as made:
        ivan.get_by_role("button", name="Make subject").click()
    assert made.value.status == 201, made.value.text()
    subject_id = made.value.json()["subject_id"]
    expect(ivan.locator("#subject-result")).to_have_text(
        f"Subject {NAME} in gallery identified: 4 face(s) enrolled.")
    expect(ivan.locator("#cluster-meta")).to_contain_text(f"subject {subject_id}")
    wait_images_loaded(ivan, "#cluster-faces img")
    shot(ivan, "cluster")
    ivan.locator("#new-subject-link").click()
    expect(ivan).to_have_url(f"{server.url}/subjects/{subject_id}")
    expect(ivan.locator("#subject-title")).to_have_text(NAME)
    expect(ivan.locator("#enrolled .cand")).to_have_count(4)
    ivan.reload()  # kept, not page state
    expect(ivan.locator("#enrolled .cand")).to_have_count(4)

    # -- 5. the auditor sees every step, never the name typed -----------------------------------------------------
    audrey = browser_login("audrey")
    expect(audrey).to_have_url(server.url + "/audit")
    table = audrey.locator("#audit-table")
    for action in ("cluster_run", "cluster_split", "cluster_merge", "cluster_name", "cluster_to_subject"):
        row = table.locator(f"tbody tr[data-action='{action}']")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(2)).to_have_text("ivan")
    merge = json.loads(table.locator("tbody tr[data-action='cluster_merge']").get_attribute("data-details"))
    assert merge == {"cluster_id": powell, "merged": [split], "faces_moved": 2}, merge
    made_subject = json.loads(table.locator("tbody tr[data-action='cluster_to_subject']").get_attribute("data-details"))
    assert made_subject["subject_id"] == subject_id and made_subject["cluster_id"] == powell, made_subject
    assert NAME not in table.inner_text()
    audrey.get_by_role("button", name="Verify chain").click()
    expect(audrey.locator("#chain-status")).to_have_text(re.compile(r"^Chain intact: \d+ records verified\.$"))
    assert audrey.request.get(f"/api/clusters/{powell}").status == 403  # auditors do not read clusters

    print(f"cluster browser story took {time.monotonic() - started:.1f} s")
