"""The admin page's opt-out list in a real browser (Debian's chromium through Playwright, a live
``facesearch serve``): register an opt-out, see it listed, withdraw it with a reason; the
withdrawal is in the audit log under the admin's name."""

from __future__ import annotations

from playwright.sync_api import expect

from facesearch.governance import Governance
from facesearch.services.engine import Engine


def test_admin_registers_lists_and_withdraws_an_opt_out(browser_login, browser_live_server, lfw):
    page = browser_login("ada")
    page.goto("/admin")
    expect(page.locator("#optouts-table tbody")).to_contain_text("No opt-outs.")
    form = page.locator("#optout-form")
    form.locator("input[name=probe]").set_input_files(lfw("Hugo_Chavez_0001"))
    form.locator("input[name=reference]").fill("REQ-BROWSER-1")
    form.get_by_role("button", name="Register opt-out").click()
    expect(page.locator("#optout-result")).to_contain_text("registered")
    row = page.locator("#optouts-table tbody tr", has_text="REQ-BROWSER-1")
    expect(row).to_contain_text("ada")  # the list refreshed itself

    page.once("dialog", lambda dialog: dialog.accept("the person withdrew the request"))
    row.get_by_role("button", name="withdraw").click()
    expect(page.locator("#optouts-status")).to_contain_text("withdrawn")
    expect(page.locator("#optouts-table tbody")).to_contain_text("No opt-outs.")

    with Engine.open(browser_live_server.home) as engine:
        record = Governance(engine).audit.entries(action="opt_out_withdraw")[-1]
    assert record.actor == "ada" and record.purpose == "the person withdrew the request"
    assert record.case_ref == "REQ-BROWSER-1"
