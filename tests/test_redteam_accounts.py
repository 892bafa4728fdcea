"""Red team: login and accounts (issue 11). Each test repeats one attack and asserts it fails.

- rotating ``X-Forwarded-For`` from a client that is not a configured proxy does not get around
  the per-client limit, and the audited address is the real one;
- five bad guesses at the admin's password from one client do not lock the admin out elsewhere;
- an admin cannot mint an API key for another user and act as them unrecorded (API and CLI);
- every lifecycle action (grant revocation, key listing and revocation, password change and
  reset, reactivation, role change) is audited; the last admin cannot be removed.
"""

from __future__ import annotations

import io
import sys

import pytest
from fastapi.testclient import TestClient

from facesearch.api.app import create_app
from facesearch.api.proxies import TrustedProxies
from facesearch.governance import Governance
from facesearch.governance.accounts import LoginThrottle
from facesearch.services.engine import Engine
from tests.conftest import API_USERS

ATTACKER = ("203.0.113.66", 40000)
ADMIN_DESK = ("198.51.100.7", 40000)


def tail(env, mark: int) -> list:
    return [e for e in env.gov.audit.entries() if e.id > mark]


def mark(env) -> int:
    entries = env.gov.audit.entries(newest_first=True, limit=1)
    return entries[0].id if entries else 0


def password(username: str) -> str:
    return API_USERS[username][1]


# -- login ------------------------------------------------------------------------------------------------


def test_rotating_forwarded_for_does_not_bypass_the_per_client_limit(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    app = create_app(env.engine, login_throttle=LoginThrottle(max_failures_per_client=5))
    attacker = TestClient(app, client=("127.0.0.1", 40000))  # on the same host, but not a configured proxy
    start = mark(env)
    codes = []
    for i in range(8):  # a new username and a new forged address every time: no (user, client) pair repeats
        codes.append(attacker.post("/api/login", json={"username": f"guess{i}", "password": "guess"},
                                   headers={"X-Forwarded-For": f"10.9.{i}.{i}"}).status_code)
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
    records = tail(env, start)
    assert {r.details["client"] for r in records} == {"127.0.0.1"}  # the real peer, never the forged header
    assert not any("10.9." in str(r.details) for r in records)


def test_forwarded_for_is_believed_only_from_a_configured_proxy(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    app = create_app(env.engine, trusted_proxies=TrustedProxies(["10.0.0.2"]))
    proxy = TestClient(app, client=("10.0.0.2", 40000))
    start = mark(env)
    # the client forged the left part; our proxy appended the address it really saw
    forged = {"X-Forwarded-For": "1.2.3.4, 192.0.2.77"}
    assert proxy.post("/api/login", json={"username": "api_ivy", "password": "x" * 12},
                      headers=forged).status_code == 401
    (record,) = tail(env, start)
    assert record.details["client"] == "192.0.2.77" and record.details["proxy"] == "10.0.0.2"
    assert TrustedProxies(["10.0.0.0/8"]).client("10.0.0.2", "1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert TrustedProxies().client("10.0.0.2", "1.2.3.4") == "10.0.0.2"  # default: no proxy trusted


def test_five_bad_guesses_do_not_lock_the_admin_out_from_another_client(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    app = create_app(env.engine)
    attacker, desk = TestClient(app, client=ATTACKER), TestClient(app, client=ADMIN_DESK)
    for _ in range(5):
        assert attacker.post("/api/login", json={"username": "api_admin", "password": "guess"}).status_code in (401,
                                                                                                              429)
    slowed = attacker.post("/api/login", json={"username": "api_admin", "password": password("api_admin")})
    assert slowed.status_code == 429  # the guesser waits, even with the right password
    response = desk.post("/api/login", json={"username": "api_admin", "password": password("api_admin")})
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"


# -- acting as someone else ----------------------------------------------------------------------------


def test_admin_cannot_mint_an_api_key_for_another_user(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    admin = env.as_user("api_admin")
    keys_before = env.gov.accounts.api_keys("api_ivy")
    start = mark(env)
    refused = admin.post("/api/users/api_ivy/api-keys")
    assert refused.status_code == 403 and "acts as its owner" in refused.text
    assert env.gov.accounts.api_keys("api_ivy") == keys_before  # no key was made
    (record,) = tail(env, start)
    assert (record.actor, record.action, record.details["username"]) == ("api_admin", "api_key_refused", "api_ivy")
    # the user issues their own, recorded under their own name
    own = env.as_user("api_ivy").post("/api/me/api-keys", json={"label": "nightly script"})
    assert own.status_code == 201
    assert TestClient(env.app, headers={"X-API-Key": own.json()["api_key"]}).get("/api/me").json()["username"] \
        == "api_ivy"
    issued = tail(env, start)[-1]
    assert (issued.actor, issued.action, issued.details["username"]) == ("api_ivy", "api_key_issue", "api_ivy")


def test_the_cli_issues_a_key_only_with_the_users_own_password(cli, monkeypatch, tmp_path):
    home = tmp_path / "home"
    with Engine.open(home) as engine:
        Governance(engine).accounts.add_user("ivy", "ivy-password-1", "investigator")
    monkeypatch.setattr(sys, "stdin", io.StringIO("not-her-password\n"))
    code, out, err = cli("user", "api-key", "ivy", "--password-stdin", "--home", home)
    assert code == 2 and "fsk_" not in out and "only the user" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("ivy-password-1\n"))
    code, out, err = cli("user", "api-key", "ivy", "--password-stdin", "--home", home)
    assert code == 0 and out.startswith("fsk_"), err
    with Engine.open(home) as engine:
        records = Governance(engine).audit.entries()
    assert [(r.action, r.actor) for r in records][-2:] == [("api_key_refused", records[-2].actor),
                                                          ("api_key_issue", "ivy")]
    assert records[-2].actor.startswith("local:")


def test_a_password_reset_is_recorded_and_ends_the_users_sessions(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    ivy = env.login("api_ivy")
    start = mark(env)
    admin = env.as_user("api_admin")
    assert admin.post("/api/users/api_ivy/password", json={"password": "admin-chosen-1"}).status_code == 200
    assert ivy.get("/api/me").status_code == 401  # her session ended
    (record,) = tail(env, start)
    assert (record.actor, record.action, record.details) == ("api_admin", "password_reset", {"username": "api_ivy"})


# -- lifecycle, every action audited --------------------------------------------------------------------


def test_every_lifecycle_action_is_audited(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    admin = env.as_user("api_admin")
    start = mark(env)
    steps = [
        (admin.post("/api/users", json={"username": "api_tom", "password": "tom-password-1",
                                        "role": "investigator"}), 201),
        (admin.post("/api/collections/alpha/grants", json={"username": "api_tom"}), 200),
        (admin.delete("/api/collections/alpha/grants/api_tom"), 200),
        (admin.post("/api/users/api_tom/deactivate"), 200),
        (admin.post("/api/users/api_tom/reactivate"), 200),
        (admin.post("/api/users/api_tom/role", json={"role": "auditor"}), 200),
        (admin.post("/api/users/api_tom/password", json={"password": "tom-password-2"}), 200),
    ]
    tom = TestClient(env.app)
    logged = tom.post("/api/login", json={"username": "api_tom", "password": "tom-password-2"})
    assert logged.status_code == 200
    headers = {"X-CSRF-Token": logged.json()["csrf_token"]}
    steps += [
        (tom.post("/api/me/password", json={"current_password": "tom-password-2", "new_password": "tom-password-3"},
                  headers=headers), 200),
        (tom.post("/api/me/api-keys", json={"label": "mine"}, headers=headers), 201),
    ]
    (key,) = admin.get("/api/users/api_tom/api-keys").json()
    steps.append((admin.delete(f"/api/users/api_tom/api-keys/{key['id']}"), 200))
    for response, status in steps:
        assert response.status_code == status, response.text
    assert admin.get("/api/users/api_tom/api-keys").json()[0]["revoked"] is True
    assert env.gov.accounts.check_password("api_tom", "tom-password-3") is not None
    actions = [(r.actor, r.action) for r in tail(env, start) if r.action != "login"]
    assert actions == [("api_admin", "user_add"), ("api_admin", "grant"), ("api_admin", "revoke"),
                       ("api_admin", "user_deactivate"), ("api_admin", "user_reactivate"),
                       ("api_admin", "user_role"), ("api_admin", "password_reset"),
                       ("api_tom", "password_change"), ("api_tom", "api_key_issue"), ("api_admin", "api_key_revoke")]
    assert all(r.details.get("username") in (None, "api_tom") for r in tail(env, start) if r.action != "login")


def test_lifecycle_commands_of_the_cli_are_audited(cli, monkeypatch, tmp_path):
    home = tmp_path / "home"
    with Engine.open(home) as engine:
        gov = Governance(engine)
        gov.accounts.add_user("root", "root-password-1", "admin")
        gov.accounts.add_user("ivy", "ivy-password-1", "investigator")
        engine.create_collection("alpha", "test")
        key_id, _ = gov.accounts.issue_api_key("ivy", "test")
    monkeypatch.setattr(sys, "stdin", io.StringIO("reset-password-1\n"))
    commands = [("user", "grant", "ivy", "alpha"), ("user", "revoke", "ivy", "alpha"),
                ("user", "deactivate", "ivy"), ("user", "reactivate", "ivy"), ("user", "role", "ivy", "auditor"),
                ("user", "password", "ivy", "--password-stdin"), ("user", "revoke-key", str(key_id))]
    for command in commands:
        code, _, err = cli(*command, "--home", home)
        assert code == 0, (command, err)
    code, out, _ = cli("user", "keys", "ivy", "--home", home)
    assert code == 0 and "revoked" in out
    with Engine.open(home) as engine:
        gov = Governance(engine)
        records = gov.audit.entries()
        assert gov.accounts.check_password("ivy", "reset-password-1") is not None
    assert [r.action for r in records] == ["grant", "revoke", "user_deactivate", "user_reactivate", "user_role",
                                           "password_reset", "api_key_revoke"]
    assert all(r.actor.startswith("local:") for r in records)


@pytest.mark.parametrize("change", ["deactivate", "demote"])
def test_the_last_admin_cannot_be_removed(api_fresh_env, change):
    env = api_fresh_env({"alpha": []})
    admin = env.as_user("api_admin")
    response = (admin.post("/api/users/api_admin/deactivate") if change == "deactivate" else
                admin.post("/api/users/api_admin/role", json={"role": "auditor"}))
    assert response.status_code == 400 and "last active admin" in response.text
    user = env.gov.accounts.user("api_admin")
    assert user.active and user.role == "admin"


def test_a_wrong_current_password_changes_nothing_and_is_recorded(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    start = mark(env)
    ivy = env.as_user("api_ivy")
    refused = ivy.post("/api/me/password", json={"current_password": "wrong-one", "new_password": "new-password-9"})
    assert refused.status_code == 400
    assert env.gov.accounts.check_password("api_ivy", password("api_ivy")) is not None
    (record,) = tail(env, start)
    assert (record.actor, record.action) == ("api_ivy", "password_change_refused")


def test_a_live_server_ignores_forwarded_for_from_localhost(browser_live_server):
    """The attack as reported, against ``facesearch serve`` itself (uvicorn believed X-Forwarded-For
    from 127.0.0.1 by default): 35 guesses, each with a new forged address and a new username."""
    import json
    import urllib.error
    import urllib.request

    codes = []
    for i in range(35):
        request = urllib.request.Request(
            browser_live_server.url + "/api/login", method="POST",
            data=json.dumps({"username": f"nobody{i}", "password": "guess"}).encode(),
            headers={"Content-Type": "application/json", "X-Forwarded-For": f"10.77.{i}.1"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    assert codes[:30] == [401] * 30 and set(codes[30:]) == {429}, codes  # the per-client limit held
    with Engine.open(browser_live_server.home) as engine:
        records = [r for r in Governance(engine).audit.entries() if r.actor.startswith("nobody")]
    assert records and {r.details["client"] for r in records} == {"127.0.0.1"}
