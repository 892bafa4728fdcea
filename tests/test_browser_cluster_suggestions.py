"""Cluster suggestions in a real browser (Debian's chromium driven by Playwright against a live
``facesearch serve``; fixtures from conftest.py).

The story: an admin indexes four photos of Powell and two of Bush and grants the collection
to an investigator, who clusters it. Powell's cluster is split in two (as a hurried person
might); the Clusters page then suggests "these two clusters may be one person" with the
calibrated evidence in words, never Powell with Bush. The investigator *accepts* it (the two
clusters become one), splits again and *rejects* the new suggestion (it stays away on reload). The auditor sees both
answers, with the server's score and false-match rate, in the audit log.

Writes build/screenshots/cluster_suggestions.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import browser_index_and_grant, shot, wait_images_loaded

MORE = Path(__file__).parent / "fixtures" / "subjects"
COLLECTION = "seized-phone"


def split_off(page, cluster: int, count: int) -> int:
    """Split ``count`` faces off the cluster through the page's own API helper; the new cluster's id."""
    detail = page.evaluate("(id) => api('GET', `/api/clusters/${id}`)", cluster)
    faces = [f["face_id"] for f in detail["faces"]][-count:]
    made = page.evaluate("([id, faces]) => api('POST', `/api/clusters/${id}/split`, {face_ids: faces})",
                         [cluster, faces])
    return made["cluster_id"]


def test_suggestions_accept_and_reject_in_the_cluster_browser(browser_login, browser_live_server, lfw):
    photos = [lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002"), MORE / "Colin_Powell_0003.jpg",
              MORE / "Colin_Powell_0004.jpg", lfw("George_W_Bush_0001"), lfw("George_W_Bush_0002")]
    ada = browser_login("ada")
    browser_index_and_grant(ada, COLLECTION, "seized under warrant 17", photos, faces=6)

    ivan = browser_login("ivan")
    ivan.goto(f"/clusters?collection={COLLECTION}")
    expect(ivan.locator("#cluster-collection")).to_have_value(COLLECTION)
    expect(ivan.locator("#clusters-empty")).to_be_visible()
    with ivan.expect_response(f"**/api/collections/{COLLECTION}/clusters/run", timeout=60_000):
        ivan.get_by_role("button", name="Cluster now").click()
    cards = ivan.locator(".cluster-card")
    expect(cards).to_have_count(2)
    powell = int(cards.first.get_attribute("data-cluster-id"))
    expect(ivan.locator("#suggestions-empty")).to_be_visible()  # one cluster per person: nothing to suggest

    # -- a hurried split: the page suggests the two halves are one person, with the evidence --------------------
    half = split_off(ivan, powell, 2)
    ivan.reload()
    pair = f"[data-a='{min(powell, half)}'][data-b='{max(powell, half)}']"
    suggestion = ivan.locator(f".suggestion[data-kind='merge']{pair}")
    expect(suggestion).to_have_count(1)
    expect(ivan.locator(".suggestion")).to_have_count(1)  # never Powell with Bush
    expect(suggestion).to_contain_text("may be one person")
    expect(suggestion.locator(".evidence")).to_contain_text(
        re.compile(r"two different people score this high in about 1 in [\d,]+"))
    wait_images_loaded(ivan, ".suggestion img")
    shot(ivan, "cluster_suggestions")
    suggestion.get_by_role("button", name="Accept: merge").click()
    expect(ivan.locator("#suggestion-result")).to_have_text(re.compile(
        rf"^Merged clusters {min(powell, half)} and {max(powell, half)} into cluster \d+\.$"))
    expect(cards).to_have_count(2)
    expect(cards.first).to_have_attribute("data-size", "4")
    expect(ivan.locator(".suggestion")).to_have_count(0)

    # -- split again, and this time the person says no: it stays away ------------------------------------------
    kept = int(cards.first.get_attribute("data-cluster-id"))
    again = split_off(ivan, kept, 1)
    ivan.reload()
    expect(ivan.locator(".suggestion[data-kind='merge']")).to_have_count(1)
    ivan.locator(".suggestion[data-kind='merge']").get_by_role("button", name="Reject").click()
    expect(ivan.locator("#suggestion-result")).to_have_text(
        f"Clusters {min(kept, again)} and {max(kept, again)} will not be suggested together again.")
    expect(ivan.locator(".suggestion")).to_have_count(0)
    ivan.reload()
    expect(cards).to_have_count(3)
    expect(ivan.locator("#suggestions-empty")).to_be_visible()

    # -- the auditor reads both answers, with the evidence the server computed --------------------------------------
    audrey = browser_login("audrey")
    table = audrey.locator("#audit-table")
    rows = table.locator("tbody tr[data-action='cluster_suggestion']")
    expect(rows).to_have_count(2)
    answers = [json.loads(rows.nth(i).get_attribute("data-details")) for i in range(2)]
    decisions = sorted((a["decision"], tuple(a["clusters"])) for a in answers)
    assert decisions == [("accepted", tuple(sorted((powell, half)))), ("rejected", tuple(sorted((kept, again))))]
    assert all(a["score"] > 0.3 and 0 < a["fmr"] < 1e-4 for a in answers), answers
    assert audrey.request.get(f"/api/collections/{COLLECTION}/clusters/suggestions").status == 403
