"""The admin page's account lifecycle and the account page, in a real browser against a live
``facesearch serve`` (Debian's chromium via Playwright).

One story: the investigator issues their own API key on the account page; the admin grants a
collection and revokes the grant from the users table, changes a role and back, deactivates and
reactivates, resets a password and revokes the key. Every step lands in the audit log under
the admin's (or the investigator's own) name.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from facesearch.governance import Governance
from facesearch.services.engine import Engine
from tests.conftest import shot

COLLECTION = "account-story"


def test_admin_page_lifecycle_actions(browser_login, browser_live_server):
    server = browser_live_server
    ivan = browser_login("ivan")
    ivan.goto("/account")
    ivan.locator("#own-key").get_by_placeholder("what it is for").fill("nightly export")
    ivan.get_by_role("button", name="Issue a key").click()
    expect(ivan.locator("#key-result")).to_contain_text("Your new key (shown once): fsk_")
    expect(ivan.locator("#own-keys tbody tr")).to_have_count(1)

    ada = browser_login("ada")
    ada.evaluate("name => api('POST', '/api/collections', {name, legal_basis: 'browser test'})", COLLECTION)
    ada.goto("/admin")
    say = ada.locator("#user-result")
    row = ada.locator('#users-table tr[data-user="ivan"]')
    grant = ada.locator("#grant-form")
    grant.get_by_placeholder("username").fill("ivan")
    grant.locator("select").select_option(COLLECTION)
    grant.get_by_role("button", name="Grant collection").click()
    expect(say).to_have_text(f"Granted {COLLECTION} to ivan.")
    expect(row).to_contain_text(COLLECTION)
    expect(row).to_contain_text("nightly export")
    shot(ada, "admin-users")

    row.locator(f'button[data-revoke-grant="{COLLECTION}"]').click()
    expect(say).to_have_text(f"Revoked ivan's grant of {COLLECTION}.")
    expect(row.locator("[data-revoke-grant]")).to_have_count(0)

    row.locator('select[data-role-of="ivan"]').select_option("auditor")
    expect(say).to_have_text("ivan is now auditor.")
    ada.locator('#users-table tr[data-user="ivan"] select').select_option("investigator")
    expect(say).to_have_text("ivan is now investigator.")

    row.get_by_role("button", name="deactivate").click()
    expect(say).to_have_text("Deactivated ivan.")
    row.get_by_role("button", name="reactivate").click()
    expect(say).to_have_text("Reactivated ivan.")

    reset = ada.locator("#reset-form")
    reset.get_by_placeholder("username").fill("ivan")
    reset.get_by_placeholder(re.compile("new password")).fill("ivan-new-password-9")
    reset.get_by_role("button", name="Reset password").click()
    expect(say).to_have_text("Password of ivan reset; their sessions ended.")

    row.locator("button[data-revoke-key]").click()
    expect(say).to_have_text(re.compile(r"^Revoked API key \d+ of ivan\.$"))
    expect(row.locator("button[data-revoke-key]")).to_have_count(0)

    with Engine.open(server.home) as engine:
        records = [(r.actor, r.action) for r in Governance(engine).audit.entries()
                   if r.action not in ("login", "logout", "audit_read", "collection_create")]
    assert records == [
        ("ivan", "api_key_issue"), ("ada", "grant"), ("ada", "revoke"), ("ada", "user_role"), ("ada", "user_role"),
        ("ada", "user_deactivate"), ("ada", "user_reactivate"), ("ada", "password_reset"), ("ada", "api_key_revoke")]
