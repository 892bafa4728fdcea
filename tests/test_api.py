"""The REST API over HTTP (FastAPI TestClient, in-process): authentication, roles, CSRF, purpose
and case on searches, collection grants and what a search returns.

Every route under /api is in ``ROUTES`` with the roles that may call it and a valid request;
``test_every_api_route_has_a_table_entry`` fails when a route is added without an entry.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image

from tests.cluster_api_routes import cluster_routes
from tests.conftest import LFW, YALE_GIF, ApiEnv
from tests.subject_api_routes import subject_routes

ADMIN, INVESTIGATOR, AUDITOR = "admin", "investigator", "auditor"
ROLES = (ADMIN, INVESTIGATOR, AUDITOR)
#: one user per role: api_ivy is granted alpha only
USER_OF = {ADMIN: "api_admin", INVESTIGATOR: "api_ivy", AUDITOR: "api_audrey"}
PUBLIC = ()  # no credentials needed

_serial = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_serial)}"


def photo(name: str) -> bytes:
    return (LFW / f"{name}.jpg").read_bytes()


def gradient_png() -> bytes:
    """A valid photo with no face: uploads of it index quickly and change no search."""
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128), -1).astype(np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Call:
    """A request to one route: ``effect()`` says whether it took effect (None: nothing to look at)."""

    path: str
    kwargs: dict = field(default_factory=dict)
    effect: Callable[[], bool] | None = None
    as_user: Callable[[str], Call] | None = None  # the call as this user makes it (e.g. with their view grant)

    def by(self, username: str | None) -> Call:
        return self.as_user(username) if self.as_user and username else self


@dataclass(frozen=True)
class Route:
    roles: tuple[str, ...]  # roles allowed; PUBLIC: anyone, even without credentials
    call: Callable[[ApiEnv, Path], Call]
    status: int = 200


def _search_form(**extra) -> dict:
    return {"purpose": "find the person in the CCTV still", "case_ref": "CASE-API-1", **extra}


def _new_user(env: ApiEnv, role: str = "investigator") -> str:
    name = unique("api_tmp_")
    env.gov.accounts.add_user(name, "temp-password-1", role)
    return name


def _login_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call("/api/login", {"json": {"username": "api_ivy", "password": "ivy-password-1"}})


def _add_user_call(env: ApiEnv, _tmp: Path) -> Call:
    name = unique("api_new_")
    return Call("/api/users", {"json": {"username": name, "password": "new-password-1", "role": "investigator"}},
                lambda: name in {u.username for u in env.gov.accounts.users()})


def _deactivate_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    return Call(f"/api/users/{name}/deactivate", {}, lambda: not env.gov.accounts.user(name).active)


def _api_key_call(env: ApiEnv, _tmp: Path) -> Call:
    # only for oneself: an admin minting a key for another user is refused (tests/test_redteam_accounts.py)
    return Call(f"/api/users/{USER_OF[ADMIN]}/api-keys")


def _reactivate_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    env.gov.accounts.set_active(name, False)
    return Call(f"/api/users/{name}/reactivate", {}, lambda: env.gov.accounts.user(name).active)


def _role_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    return Call(f"/api/users/{name}/role", {"json": {"role": "auditor"}},
                lambda: env.gov.accounts.user(name).role == "auditor")


def _reset_password_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    return Call(f"/api/users/{name}/password", {"json": {"password": "reset-password-1"}},
                lambda: env.gov.accounts.check_password(name, "reset-password-1") is not None)


def _user_keys_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call(f"/api/users/{_new_user(env)}/api-keys")


def _revoke_key_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    key_id, secret = env.gov.accounts.issue_api_key(name)
    return Call(f"/api/users/{name}/api-keys/{key_id}", {},
                lambda: env.gov.accounts.user_for_api_key(secret) is None)


def _own_password_call(env: ApiEnv, _tmp: Path) -> Call:
    # one request for every role: the current password is wrong for all of them, so nothing changes
    # and the answer is 400, not 403 (a successful change: tests/test_redteam_accounts.py)
    return Call("/api/me/password", {"json": {"current_password": "not-the-password",
                                              "new_password": "never-set-password"}})


def _create_collection_call(env: ApiEnv, _tmp: Path) -> Call:
    name = unique("api_col_")
    return Call("/api/collections", {"json": {"name": name, "legal_basis": "consent"}},
                lambda: name in {c.name for c in env.engine.collections()})


def _grant_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    user = env.gov.accounts.user(name)
    return Call("/api/collections/beta/grants", {"json": {"username": name}},
                lambda: "beta" in env.gov.accounts.granted_collections(user))


def _revoke_call(env: ApiEnv, _tmp: Path) -> Call:
    name = _new_user(env)
    user = env.gov.accounts.user(name)
    env.gov.accounts.grant(name, env.engine.collection("beta").id)
    return Call(f"/api/collections/beta/grants/{name}", {},
                lambda: "beta" not in env.gov.accounts.granted_collections(user))


def _upload_call(env: ApiEnv, _tmp: Path) -> Call:
    name = unique("api_up_")
    env.engine.create_collection(name, "consent")
    return Call(f"/api/collections/{name}/photos",
                {"files": [("files", ("gradient.png", gradient_png(), "image/png"))]},
                lambda: env.engine.collection(name).images == 1)


def _folder_call(env: ApiEnv, tmp: Path) -> Call:
    name = unique("api_folder_")
    env.engine.create_collection(name, "consent")
    folder = tmp / name
    folder.mkdir()
    (folder / "gradient.png").write_bytes(gradient_png())
    return Call(f"/api/collections/{name}/ingest-folder", {"json": {"path": str(folder)}},
                lambda: env.engine.collection(name).images == 1)


def _job_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call(f"/api/jobs/{env.jobs[0]['id']}")


def _search_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call("/api/search", {"files": {"probe": ("p.jpg", photo("Colin_Powell_0002"), "image/jpeg")},
                                "data": _search_form()})


def _verify_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call("/api/verify", {"files": {"a": ("a.jpg", photo("Colin_Powell_0001"), "image/jpeg"),
                                          "b": ("b.jpg", photo("Colin_Powell_0002"), "image/jpeg")},
                                "data": _search_form()})


def _face_call(suffix: str) -> Callable[[ApiEnv, Path], Call]:
    """A face route: refused without a view grant; the allowed roles use one issued to them."""
    def make(env: ApiEnv, _tmp: Path) -> Call:
        path = f"/api/faces/{env.faces['Colin_Powell_0001'][0]}{suffix}"

        def with_grant(username: str) -> Call:
            token = env.gov.grant_view(env.gov.accounts.user(username), [env.faces["Colin_Powell_0001"][0]],
                                       purpose="route table", case_ref="CASE-API-1")
            return Call(f"{path}?view={token}")

        return Call(path, as_user=with_grant)

    return make


def _views_call(env: ApiEnv, _tmp: Path) -> Call:
    return Call("/api/views", {"json": {"face_ids": [env.faces["Colin_Powell_0001"][0]], **_search_form()}})


def _erase_call(env: ApiEnv, _tmp: Path) -> Call:
    name = unique("api_gone_")
    env.engine.create_collection(name, "consent")
    return Call("/api/erase", {"json": {"collection": name, "reason": "test"}},
                lambda: name not in {c.name for c in env.engine.collections()})


def _erase_like_call(env: ApiEnv, _tmp: Path) -> Call:
    # the Yale subject is in no collection: nothing is erased, the call still succeeds
    return Call("/api/erase/like", {"files": {"probe": ("p.gif", YALE_GIF.read_bytes(), "image/gif")},
                                    "data": {"min_score": "0.99", "reason": "test"}})


def _optout_call(env: ApiEnv, _tmp: Path) -> Call:
    # the Yale subject scores < 0.11 against every LFW fixture: this opt-out hides nobody else
    reference = unique("REQ-")
    return Call("/api/optouts", {"files": {"probe": ("p.gif", YALE_GIF.read_bytes(), "image/gif")},
                                 "data": {"reference": reference}},
                lambda: reference in {e["reference"] for e in env.gov.optouts.entries()})


def _withdraw_optout_call(env: ApiEnv, _tmp: Path) -> Call:
    optout_id = env.gov.opt_out(env.gov.accounts.user("api_admin"), YALE_GIF.read_bytes(), unique("REQ-"))
    return Call(f"/api/optouts/{optout_id}", {"params": {"reason": "withdrawn"}},
                lambda: optout_id not in {e["id"] for e in env.gov.optouts.entries()})


def _get(path: str) -> Callable[[ApiEnv, Path], Call]:
    return lambda _env, _tmp: Call(path)


ANY = ROLES
SEARCHERS = (ADMIN, INVESTIGATOR)
ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/api/login"): Route(PUBLIC, _login_call),
    ("POST", "/api/logout"): Route(ANY, _get("/api/logout")),
    ("GET", "/api/me"): Route(ANY, _get("/api/me")),
    ("GET", "/api/users"): Route((ADMIN,), _get("/api/users")),
    ("POST", "/api/users"): Route((ADMIN,), _add_user_call, 201),
    ("POST", "/api/users/{username}/deactivate"): Route((ADMIN,), _deactivate_call),
    ("POST", "/api/users/{username}/api-keys"): Route((ADMIN,), _api_key_call, 201),
    ("GET", "/api/users/{username}/api-keys"): Route((ADMIN,), _user_keys_call),
    ("DELETE", "/api/users/{username}/api-keys/{key_id}"): Route((ADMIN,), _revoke_key_call),
    ("POST", "/api/users/{username}/reactivate"): Route((ADMIN,), _reactivate_call),
    ("POST", "/api/users/{username}/role"): Route((ADMIN,), _role_call),
    ("POST", "/api/users/{username}/password"): Route((ADMIN,), _reset_password_call),
    ("POST", "/api/me/password"): Route(ANY, _own_password_call, 400),
    ("GET", "/api/me/api-keys"): Route(ANY, _get("/api/me/api-keys")),
    ("POST", "/api/me/api-keys"): Route(ANY, _get("/api/me/api-keys"), 201),
    ("GET", "/api/collections"): Route(SEARCHERS, _get("/api/collections")),
    ("POST", "/api/collections"): Route((ADMIN,), _create_collection_call, 201),
    ("POST", "/api/collections/{name}/grants"): Route((ADMIN,), _grant_call),
    ("DELETE", "/api/collections/{name}/grants/{username}"): Route((ADMIN,), _revoke_call),
    ("POST", "/api/collections/{name}/photos"): Route((ADMIN,), _upload_call, 202),
    ("POST", "/api/collections/{name}/ingest-folder"): Route((ADMIN,), _folder_call, 202),
    ("GET", "/api/jobs/{job_id}"): Route((ADMIN,), _job_call),
    ("GET", "/api/jobs"): Route((ADMIN,), _get("/api/jobs")),
    ("POST", "/api/search"): Route(SEARCHERS, _search_call),
    ("POST", "/api/verify"): Route(SEARCHERS, _verify_call),
    ("GET", "/api/faces/{face_id}"): Route(SEARCHERS, _face_call("")),
    ("GET", "/api/faces/{face_id}/thumbnail"): Route(SEARCHERS, _face_call("/thumbnail")),
    ("GET", "/api/faces/{face_id}/photo"): Route(SEARCHERS, _face_call("/photo")),
    ("POST", "/api/views"): Route(SEARCHERS, _views_call, 201),
    ("POST", "/api/erase"): Route((ADMIN,), _erase_call),
    ("POST", "/api/erase/like"): Route((ADMIN,), _erase_like_call),
    ("POST", "/api/optouts"): Route((ADMIN,), _optout_call, 201),
    ("GET", "/api/optouts"): Route((ADMIN,), _get("/api/optouts")),
    ("DELETE", "/api/optouts/{optout_id}"): Route((ADMIN,), _withdraw_optout_call),
    ("POST", "/api/retention"): Route((ADMIN,), lambda _env, _tmp: Call("/api/retention", {"json": {"apply": False}})),
    ("GET", "/api/audit"): Route((AUDITOR,), _get("/api/audit")),
    ("GET", "/api/audit/export"): Route((AUDITOR,), _get("/api/audit/export")),
    ("GET", "/api/audit/verify"): Route((AUDITOR,), _get("/api/audit/verify")),
}
ROUTES.update(subject_routes(Call, Route))  # galleries, subjects, matching, decisions
ROUTES.update(cluster_routes(Call, Route))  # clusters of unknown faces
PROTECTED = [key for key, route in ROUTES.items() if route.roles != PUBLIC]
FORBIDDEN = [(key, role) for key, route in ROUTES.items() if route.roles != PUBLIC
             for role in ROLES if role not in route.roles]
ALLOWED = [(key, role) for key, route in ROUTES.items() for role in (route.roles or (None,))]


def _id(value) -> str:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return f"{value[0]} {value[1]}"
    return str(value)


def _request(env: ApiEnv, method: str, call: Call, headers: dict | None = None, client=None):
    return (client or env.anon).request(method, call.path, headers=headers or {}, **call.kwargs)


def _wait_if_job(env: ApiEnv, response) -> None:
    if response.headers.get("content-type") != "application/json":
        return
    body = response.json()
    if isinstance(body, dict) and {"id", "state", "faces_indexed"} <= body.keys():
        job = env.wait(body["id"])
        assert job["state"] == "done", job


# -- the route table --------------------------------------------------------------------------------


def test_every_api_route_has_a_table_entry(api_env):
    served = {(method, route.path) for route in api_env.app.routes if isinstance(route, APIRoute)
              and route.path.startswith("/api") for method in route.methods}
    assert served - ROUTES.keys() == set(), "routes without a test entry: add them to ROUTES"
    assert ROUTES.keys() - served == set(), "ROUTES names routes the app does not serve"


@pytest.mark.parametrize("key", PROTECTED, ids=_id)
def test_no_credentials_is_401(api_env, tmp_path, key):
    method, _ = key
    call = ROUTES[key].call(api_env, tmp_path)
    response = _request(api_env, method, call)  # a complete, valid request, but nobody signed in
    assert response.status_code == 401, response.text
    assert _request(api_env, method, Call(call.path)).status_code == 401  # nor with no body at all
    bad_key = _request(api_env, method, call, {"Authorization": "Bearer fsk_not-a-real-key"})
    assert bad_key.status_code == 401, bad_key.text
    assert _request(api_env, method, call, {"X-API-Key": "fsk_not-a-real-key"}).status_code == 401
    if call.effect is not None:
        assert not call.effect(), "an unauthenticated request took effect"


@pytest.mark.parametrize(("key", "role"), FORBIDDEN, ids=_id)
def test_wrong_role_is_403(api_env, tmp_path, key, role):
    method, _ = key
    call = ROUTES[key].call(api_env, tmp_path)
    headers = api_env.headers(USER_OF[role])
    response = _request(api_env, method, call, headers)
    assert response.status_code == 403, response.text
    # the role is checked before the body: an empty request is refused the same way, not with 422
    assert _request(api_env, method, Call(call.path), headers).status_code == 403
    # and through a browser session (cookie + CSRF token) too
    session = api_env.login(USER_OF[role])
    assert _request(api_env, method, call, {"X-CSRF-Token": session.csrf}, session).status_code == 403
    if call.effect is not None:
        assert not call.effect(), f"a request by the {role} was refused but took effect"


@pytest.mark.parametrize(("key", "role"), ALLOWED, ids=_id)
def test_allowed_role_succeeds(api_env, tmp_path, key, role):
    method, _ = key
    route = ROUTES[key]
    call = route.call(api_env, tmp_path).by(USER_OF.get(role))
    headers = api_env.headers(USER_OF[role]) if role else {}
    # a fresh client: a login's session cookie must not stick to the shared anonymous client
    response = _request(api_env, method, call, headers, TestClient(api_env.app))
    assert response.status_code == route.status, response.text
    _wait_if_job(api_env, response)
    if call.effect is not None:
        assert call.effect(), "the request succeeded but took no effect"


@pytest.mark.parametrize(("key", "role"), [(k, r) for k, r in ALLOWED if r is not None], ids=_id)
def test_allowed_role_succeeds_with_a_session(api_env, tmp_path, key, role):
    method, _ = key
    route = ROUTES[key]
    call = route.call(api_env, tmp_path).by(USER_OF[role])
    session = api_env.login(USER_OF[role])
    response = _request(api_env, method, call, {"X-CSRF-Token": session.csrf}, session)
    assert response.status_code == route.status, response.text
    _wait_if_job(api_env, response)


def test_login(api_env):
    client = TestClient(api_env.app)
    good = client.post("/api/login", json={"username": "api_audrey", "password": "audrey-password-1"})
    assert good.status_code == 200
    assert good.json()["role"] == "auditor" and good.json()["csrf_token"]
    assert "fs_session" in good.cookies
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    client.cookies.clear()
    wrong = client.post("/api/login", json={"username": "api_audrey", "password": "not-the-password"})
    assert wrong.status_code == 401 and "fs_session" not in wrong.cookies
    nobody = api_env.anon.post("/api/login", json={"username": "api_nobody", "password": "whatever-pass"})
    assert nobody.status_code == 401
    assert api_env.anon.post("/api/login", json={"username": "api_audrey"}).status_code == 422


def test_logout_ends_the_session(api_env):
    session = api_env.login("api_ivy")
    assert session.get("/api/me").json()["username"] == "api_ivy"
    token = session.cookies.get("fs_session")
    assert session.post("/api/logout", headers={"X-CSRF-Token": session.csrf}).status_code == 200
    session.cookies.set("fs_session", token)  # a stolen copy of the cookie no longer works either
    assert session.get("/api/me").status_code == 401


def test_deactivated_user_loses_key_and_session(api_env):
    name = _new_user(api_env)
    key = api_env.gov.accounts.create_api_key(name)
    headers = {"X-API-Key": key}
    assert api_env.anon.get("/api/me", headers=headers).status_code == 200
    session = TestClient(api_env.app)
    credentials = {"username": name, "password": "temp-password-1"}
    assert session.post("/api/login", json=credentials).status_code == 200
    assert session.get("/api/me").status_code == 200
    admin = api_env.headers("api_admin")
    assert api_env.anon.post(f"/api/users/{name}/deactivate", headers=admin).status_code == 200
    assert api_env.anon.get("/api/me", headers=headers).status_code == 401
    assert session.get("/api/me").status_code == 401
    assert TestClient(api_env.app).post("/api/login", json=credentials).status_code == 401


@pytest.mark.parametrize("route", ["/api/search", "/api/verify"])
@pytest.mark.parametrize("fault", ["purpose missing", "case_ref missing", "purpose blank", "case_ref blank"])
def test_search_and_verify_need_purpose_and_case(api_env, tmp_path, route, fault):
    call = ROUTES[("POST", route)].call(api_env, tmp_path)
    field_name, how = fault.split()
    data = dict(call.kwargs["data"])
    if how == "missing":
        del data[field_name]
    else:
        data[field_name] = "   "
    before = len(api_env.gov.audit.entries(action=route.rsplit("/", 1)[1]))
    response = api_env.anon.post(route, files=call.kwargs["files"], data=data, headers=api_env.headers("api_ivy"))
    assert response.status_code == 422, response.text
    assert field_name in response.text or "purpose and a case reference" in response.text
    assert len(api_env.gov.audit.entries(action=route.rsplit("/", 1)[1])) == before, "a refused search was run"


# -- web pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/collections", "/admin", "/audit", "/photo/1"])
def test_pages_redirect_to_login_without_a_session(api_env, path):
    assert not api_env.anon.cookies, "the shared anonymous client must hold no session"
    response = api_env.anon.get(path, follow_redirects=False)
    assert response.status_code in (302, 303, 307), response.text
    assert response.headers["location"].endswith("/login")
    # an API key is not a browser session: the page still sends you to log in
    keyed = api_env.anon.get(path, headers=api_env.headers("api_admin"), follow_redirects=False)
    assert keyed.status_code in (302, 303, 307)


def test_public_pages(api_env):
    assert api_env.anon.get("/health").json() == {"status": "ok"}
    login = api_env.anon.get("/login")
    assert login.status_code == 200 and "text/html" in login.headers["content-type"]


@pytest.mark.parametrize(("username", "path", "status"), [
    ("api_ivy", "/", 200), ("api_ivy", "/collections", 200), ("api_ivy", "/admin", 403), ("api_ivy", "/audit", 403),
    ("api_admin", "/admin", 200), ("api_audrey", "/audit", 200), ("api_audrey", "/admin", 403),
    ("api_audrey", "/collections", 403),
])
def test_pages_by_role(api_env, username, path, status):
    session = api_env.login(username)
    assert session.get(path, follow_redirects=False).status_code == status


def test_auditor_home_page_is_the_audit_log(api_env):
    response = api_env.login("api_audrey").get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].endswith("/audit")


# -- CSRF -------------------------------------------------------------------------------------------


def test_session_post_needs_the_csrf_token(api_env):
    session = api_env.login("api_admin")
    names = [unique("api_csrf_") for _ in range(4)]

    def create(name: str, headers: dict):
        return session.post("/api/collections", json={"name": name, "legal_basis": "consent"}, headers=headers)

    assert create(names[0], {}).status_code == 403
    assert create(names[1], {"X-CSRF-Token": "wrong" + session.csrf}).status_code == 403
    other = api_env.login("api_admin")  # another session's token is not this session's
    assert create(names[2], {"X-CSRF-Token": other.csrf}).status_code == 403
    existing = {c.name for c in api_env.engine.collections()}
    assert not set(names[:3]) & existing, "a request refused for CSRF still created a collection"
    assert create(names[3], {"X-CSRF-Token": session.csrf}).status_code == 201
    # reading needs no token
    assert session.get("/api/users").status_code == 200


def test_a_non_ascii_csrf_token_is_refused_not_a_server_error(api_env):
    session = TestClient(api_env.app, raise_server_exceptions=False)
    login = session.post("/api/login", json={"username": "api_admin", "password": "admin-password-1"})
    assert login.status_code == 200
    name = unique("api_csrf_")
    response = session.post("/api/collections", json={"name": name, "legal_basis": "consent"},
                            headers={"X-CSRF-Token": "caf\xe9".encode("latin-1")})
    assert response.status_code == 403, f"{response.status_code}: {response.text[:200]}"
    assert name not in {c.name for c in api_env.engine.collections()}


def test_session_search_needs_the_csrf_token(api_env):
    session = api_env.login("api_ivy")
    files = {"probe": ("p.jpg", photo("Colin_Powell_0002"), "image/jpeg")}
    assert session.post("/api/search", files=files, data=_search_form()).status_code == 403
    ok = session.post("/api/search", files=files, data=_search_form(), headers={"X-CSRF-Token": session.csrf})
    assert ok.status_code == 200, ok.text


def test_api_key_post_needs_no_csrf_token(api_env):
    name = unique("api_keyed_")
    for headers in ({"Authorization": f"Bearer {api_env.keys['api_admin']}"},
                    {"X-API-Key": api_env.keys["api_admin"]}):
        response = api_env.anon.post("/api/collections", json={"name": name + str(len(headers)),
                                                               "legal_basis": "consent"}, headers=headers)
        assert response.status_code == 201, response.text
        name += "x"


# -- grants -----------------------------------------------------------------------------------------


def _face_ids(response) -> set[int]:
    assert response.status_code == 200, response.text
    return {c["face_id"] for c in response.json()["candidates"]}


def test_search_never_returns_faces_of_an_ungranted_collection(api_env):
    beta_faces = set(api_env.faces["Hugo_Chavez_0001"])
    probe = LFW / "Hugo_Chavez_0002.jpg"
    # the control: with the grant (admins have all), the probe finds Chavez in beta
    assert beta_faces <= _face_ids(api_env.search("api_admin", probe))

    for username in ("api_ivy", "api_gina"):  # granted alpha only / granted nothing
        response = api_env.search(username, probe)
        assert not _face_ids(response) & beta_faces, f"{username} saw faces of beta"
        assert "beta" not in response.json()["collections"]
        for collections in (["beta"], ["alpha", "beta"]):
            named = api_env.search(username, probe, collections=collections)
            assert named.status_code == 403, named.text
            assert "candidates" not in named.text
    gina = api_env.search("api_gina", probe).json()
    assert gina["candidates"] == [] and gina["collections"] == []
    assert [c["name"] for c in api_env.as_user("api_ivy").get("/api/collections").json()] == ["alpha"]


def test_face_endpoints_of_an_ungranted_collection_are_403(api_env):
    beta_face = api_env.faces["Hugo_Chavez_0001"][0]
    alpha_face = api_env.faces["Colin_Powell_0001"][0]
    ivy = api_env.as_user("api_ivy")
    views_before = len(api_env.gov.audit.entries(action="view_photo"))
    # a view grant for a face of beta is refused (no grant for beta), and so is one naming a face that
    # does not exist: the same answer as for a face you may not see
    for face_id in (beta_face, 987654):
        asked = ivy.post("/api/views", json={"face_ids": [face_id], "purpose": "look", "case_ref": "CASE-API-1"})
        assert asked.status_code == 403, asked.text
    token = ivy.post("/api/views", json={"face_ids": [alpha_face], "purpose": "look",
                                         "case_ref": "CASE-API-1"}).json()["view_token"]
    for suffix in ("", "/thumbnail", "/photo"):
        # ivy's valid grant for an alpha face does not stretch to a beta face, nor to one that does not exist
        assert ivy.get(f"/api/faces/{beta_face}{suffix}", params={"view": token}).status_code == 403
        assert ivy.get(f"/api/faces/{alpha_face}{suffix}", params={"view": token}).status_code == 200  # control
        assert ivy.get(f"/api/faces/987654{suffix}", params={"view": token}).status_code == 403
    assert len(api_env.gov.audit.entries(action="view_photo")) == views_before + 1


def test_granting_a_collection_lets_the_same_search_find_it(api_env):
    # api_gina is used by no other test that needs her without grants after this one
    beta_face = api_env.faces["Hugo_Chavez_0001"][0]
    probe = LFW / "Hugo_Chavez_0002.jpg"
    gina = api_env.as_user("api_gina")
    assert beta_face not in _face_ids(api_env.search("api_gina", probe))
    assert gina.get(f"/api/faces/{beta_face}/thumbnail").status_code == 403
    api_env.grant("beta", "api_gina")
    try:
        response = api_env.search("api_gina", probe)
        assert beta_face in _face_ids(response)
        assert response.json()["candidates"][0]["face_id"] == beta_face
        assert response.json()["confident_match"] is True
        assert api_env.search("api_gina", probe, collections=["beta"]).status_code == 200
        thumbnail_url = response.json()["candidates"][0]["thumbnail_url"]  # under the search's view grant
        assert gina.get(thumbnail_url).status_code == 200
        # alpha is still not hers
        assert api_env.search("api_gina", probe, collections=["alpha"]).status_code == 403
    finally:
        revoke = api_env.anon.delete("/api/collections/beta/grants/api_gina", headers=api_env.headers("api_admin"))
        assert revoke.status_code == 200
    assert beta_face not in _face_ids(api_env.search("api_gina", probe))
    assert gina.get(thumbnail_url).status_code == 403  # the revoked grant stops the earlier view grant too


# -- what a search returns ---------------------------------------------------------------------------


def _jpeg(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    image = Image.open(BytesIO(response.content))
    image.load()
    assert image.format == "JPEG"
    return image


def test_search_candidates_carry_scores_and_links(api_env):
    response = api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["confident_match"] is True
    assert body["verdict"] != "no confident match"
    assert body["collections"] == ["alpha"]
    assert body["faces_searched"] == 2
    assert body["review_notice"]
    assert 0.0 < body["threshold"] < 1.0 and body["threshold_rule"]
    assert body["probe"]["faces_in_image"] == 1 and body["probe"]["usable"] is True
    top = body["candidates"][0]
    assert top["face_id"] == api_env.faces["Colin_Powell_0001"][0]
    assert top["rank"] == 1 and top["collection"] == "alpha"
    assert top["image_id"] == api_env.images["Colin_Powell_0001"]
    assert top["similarity"] >= body["threshold"] and top["above_threshold"] is True
    assert 0.0 <= top["false_match_rate"] < 1e-3
    assert isinstance(top["false_match_words"], str) and "different people" in top["false_match_words"]
    # data minimisation: Bush (alpha's other face) scores below the threshold and is withheld
    assert body["candidates"] == [top] and body["weaker_withheld"] == 1 and body["include_weaker"] is False
    weaker = api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg", include_weaker="true").json()
    others = weaker["candidates"][1:]
    assert weaker["include_weaker"] is True and weaker["weaker_withheld"] == 0
    assert others and all(c["similarity"] < body["threshold"] and not c["above_threshold"] for c in others)
    assert [c["similarity"] for c in weaker["candidates"]] == sorted(
        (c["similarity"] for c in weaker["candidates"]), reverse=True)
    ivy = api_env.as_user("api_ivy")
    assert top["thumbnail_url"].startswith(f"/api/faces/{top['face_id']}/thumbnail?view=fv_")
    thumb = _jpeg(ivy.get(top["thumbnail_url"]))
    assert 16 <= min(thumb.size)
    full = _jpeg(ivy.get(top["photo_url"]))
    assert full.size == (150, 150)  # the LFW original's size
    face = ivy.get(top["photo_url"].replace("/photo?", "?")).json()
    assert face["image_id"] == top["image_id"] and face["thumbnail_url"] == top["thumbnail_url"]


def test_unknown_person_gives_no_confident_match(api_env):
    # Chavez is only in beta, which api_ivy may not search
    body = api_env.search("api_ivy", LFW / "Hugo_Chavez_0002.jpg").json()
    assert body["confident_match"] is False
    assert body["verdict"] == "no confident match"
    assert body["candidates"] == [] and body["weaker_withheld"] == 2  # strangers are not shown by default
    body = api_env.search("api_ivy", LFW / "Hugo_Chavez_0002.jpg", include_weaker="true").json()
    assert body["candidates"], "asked for: the best-scoring faces are listed, below the threshold"
    assert not any(c["above_threshold"] for c in body["candidates"])
    assert all(c["false_match_rate"] > 1e-3 for c in body["candidates"])


def test_search_with_face_picks_that_face_of_a_group_probe(api_env, two_people):
    default = api_env.search("api_ivy", two_people).json()
    assert default["probe"]["faces_in_image"] == 2 and len(default["probe_faces"]) == 2
    assert default["candidates"][0]["face_id"] == api_env.faces["Colin_Powell_0001"][0]  # the big central face
    other = 1 - default["probe"]["chosen"]
    picked = api_env.search("api_ivy", two_people, face=str(other)).json()
    assert picked["probe"]["chosen"] == other
    assert picked["probe"]["box"] == pytest.approx(picked["probe_faces"][other])
    assert picked["candidates"][0]["face_id"] == api_env.faces["George_W_Bush_0001"][0]
    assert picked["candidates"][0]["above_threshold"] is True
    out_of_range = api_env.search("api_ivy", two_people, face="7")
    assert out_of_range.status_code in (400, 422), out_of_range.text


def test_search_top_k_and_bad_probes(api_env):
    one = api_env.search("api_admin", LFW / "Colin_Powell_0002.jpg", top_k="1").json()
    assert len(one["candidates"]) == 1
    assert api_env.search("api_admin", LFW / "Colin_Powell_0002.jpg", top_k="0").status_code == 422
    not_image = api_env.search("api_ivy", b"this is not a photo")
    assert not_image.status_code == 400, not_image.text
    faceless = api_env.search("api_ivy", gradient_png())
    assert faceless.status_code == 422, faceless.text


def test_verify_result(api_env):
    same = api_env.as_user("api_ivy").post("/api/verify", **_verify_call(api_env, Path()).kwargs)
    assert same.status_code == 200, same.text
    assert same.json()["same_person"] is True and same.json()["similarity"] > same.json()["threshold"]
    files = {"a": ("a.jpg", photo("Colin_Powell_0001"), "image/jpeg"),
             "b": ("b.jpg", photo("Hugo_Chavez_0001"), "image/jpeg")}
    different = api_env.as_user("api_ivy").post("/api/verify", files=files, data=_search_form())
    assert different.json()["same_person"] is False
    assert len(different.json()["faces"]) == 2


def test_audit_export_is_jsonl(api_env):
    auditor = api_env.as_user("api_audrey")
    response = auditor.get("/api/audit/export")
    assert response.status_code == 200
    records = [json.loads(line) for line in response.text.splitlines()]
    assert records and [r["id"] for r in records] == list(range(1, len(records) + 1))


def test_naming_a_collection_twice_searches_it_once(api_env):
    once = api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg", collections=["alpha"]).json()
    twice = api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg", collections=["alpha", "alpha"])
    assert twice.status_code == 200, twice.text
    ids = [c["face_id"] for c in twice.json()["candidates"]]
    assert len(ids) == len(set(ids)), f"the same face listed more than once: {ids}"
    assert twice.json()["faces_searched"] == once["faces_searched"] == 2  # it drives the false-match estimate
    def unviewed(candidates: list[dict]) -> list[dict]:  # each search issues its own view grant
        return [{k: v for k, v in c.items() if not k.endswith("_url")} for c in candidates]

    assert unviewed(twice.json()["candidates"]) == unviewed(once["candidates"])
