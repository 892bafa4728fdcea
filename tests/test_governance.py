"""Governance through the API and the CLI: erasure, opt-out, the audit trail of every action, and
the ``user add`` / ``serve`` commands. Each API test gets a served home of its own
(``api_fresh_env``): these tests change what is indexed."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from facesearch.governance import Governance
from facesearch.services.engine import Engine
from tests.conftest import API_USERS, INDEX_BACKENDS, LFW, YALE_GIF, ApiEnv, api_sha256

PURPOSE = "identify the person in the CCTV still"


def lfw_bytes(name: str) -> bytes:
    return (LFW / f"{name}.jpg").read_bytes()


def mirrored(name: str, folder: Path) -> Path:
    """Another photo of the same person: the LFW photo flipped left-right (different pixels and bytes)."""
    path = folder / f"{name}_mirrored.jpg"
    with Image.open(LFW / f"{name}.jpg") as img:
        ImageOps.mirror(img.convert("RGB")).save(path, quality=95)
    return path


def found(env: ApiEnv, username: str, probe: Path | bytes, **form) -> list[int]:
    response = env.search(username, probe, **form)
    assert response.status_code == 200, response.text
    return [c["face_id"] for c in response.json()["candidates"]]


def audit_tail(env: ApiEnv, after_id: int, **filters) -> list[dict]:
    """Audit records newer than ``after_id``, oldest first, read by the auditor through the API."""
    response = env.as_user("api_audrey").get("/api/audit", params={"limit": 10_000, **filters})
    assert response.status_code == 200, response.text
    return sorted((r for r in response.json() if r["id"] > after_id), key=lambda r: r["id"])


def last_audit_id(env: ApiEnv) -> int:
    entries = env.gov.audit.entries(newest_first=True, limit=1)
    return entries[0].id if entries else 0


# -- erasure ----------------------------------------------------------------------------------------

ERASE_LAYOUT = {"alpha": ["Colin_Powell_0001", "George_W_Bush_0001"], "beta": ["Hugo_Chavez_0001"]}


def _erase_request(env: ApiEnv, mode: str):
    admin = env.as_user("api_admin")
    if mode == "image":
        return "Colin_Powell", admin.post("/api/erase", json={"images": [env.images["Colin_Powell_0001"]],
                                                              "reason": "REQ-1 subject access"})
    if mode == "face":
        return "George_W_Bush", admin.post("/api/erase", json={"faces": env.faces["George_W_Bush_0001"],
                                                               "reason": "REQ-2"})
    if mode == "like":
        return "Hugo_Chavez", admin.post("/api/erase/like", data={"min_score": "0.35", "reason": "REQ-3"},
                                         files={"probe": ("p.jpg", lfw_bytes("Hugo_Chavez_0002"), "image/jpeg")})
    assert mode == "collection"
    return "Hugo_Chavez", admin.post("/api/erase", json={"collection": "beta", "reason": "REQ-4"})


@pytest.mark.parametrize("mode", ["image", "face", "like", "collection"])
def test_erasure_removes_everything_of_the_erased_faces(api_fresh_env, mode):
    env = api_fresh_env(ERASE_LAYOUT, {"alpha": ["api_ivy"], "beta": ["api_ivy"]})
    catalog = env.engine.catalog
    everyone = {photo: ids[0] for photo, ids in env.faces.items()}
    rows = catalog.faces(list(everyone.values()))
    thumbs = {photo: env.engine.thumbnails.path(rows[i].thumbnail) for photo, i in everyone.items()}
    copies = {photo: Path(rows[i].image_source) for photo, i in everyone.items()}
    uploads = env.home / "uploads"
    assert all(p.is_file() for p in thumbs.values())
    assert all(p.is_file() and p.resolve().is_relative_to(uploads.resolve()) for p in copies.values())
    beta_id = env.engine.collection("beta").id
    # view grants taken before the erasure (as a search would have issued them) open nothing after it
    tokens = {username: env.gov.grant_view(env.gov.accounts.user(username), list(everyone.values()),
                                           purpose="review", case_ref="CASE-ERASE")
              for username in ("api_admin", "api_ivy")}

    person, response = _erase_request(env, mode)
    assert response.status_code == 200, response.text
    report = response.json()
    gone = f"{person}_0001"
    kept = [photo for photo in everyone if photo != gone]
    assert report["faces"] == [everyone[gone]]
    assert report["images"] == [env.images[gone]]
    assert report["thumbnails_deleted"] == 1
    assert report["collections"] == (["beta"] if mode == "collection" else [])

    # searches by anyone never return the erased face, and still find everyone else
    for username in ("api_admin", "api_ivy"):
        assert everyone[gone] not in found(env, username, LFW / f"{person}_0002.jpg")
        for photo in kept:
            assert found(env, username, LFW / f"{photo[:-1]}2.jpg")[0] == everyone[photo]
    # nothing of it can be opened
    for suffix in ("", "/thumbnail", "/photo"):
        for username in ("api_admin", "api_ivy"):
            status = env.as_user(username).get(f"/api/faces/{everyone[gone]}{suffix}",
                                               params={"view": tokens[username]}).status_code
            assert status in (403, 404), f"{suffix or 'face'} of an erased face: {status}"
    # catalog rows, vector, thumbnail and the uploaded copy are gone; the others' are not
    assert catalog.faces([everyone[gone]]) == {} and catalog.embeddings_of([everyone[gone]]) == {}
    assert catalog.image_faces(env.images[gone]) == []
    assert not thumbs[gone].exists(), "the thumbnail survived the erasure"
    assert not copies[gone].exists(), "the uploaded copy of the photo survived the erasure"
    for photo in kept:
        assert thumbs[photo].is_file() and copies[photo].is_file()
        assert catalog.faces([everyone[photo]])
    for info in env.engine.collections():
        assert everyone[gone] not in env.engine.index_of(info).ids()
    listed = {c["name"]: c for c in env.as_user("api_admin").get("/api/collections").json()}
    if mode == "collection":
        assert "beta" not in listed
        assert not list((uploads / f"c{beta_id}").glob("*")), "uploaded copies of the collection survived"
        # a new collection of the same name does not inherit the old one's grants
        env.create_collection("beta")
        assert "beta" not in env.gov.accounts.granted_collections(env.gov.accounts.user("api_ivy"))
        assert env.search("api_ivy", LFW / "Hugo_Chavez_0002.jpg", collections=["beta"]).status_code == 403
    else:
        home_of = "alpha" if person != "Hugo_Chavez" else "beta"
        assert listed[home_of]["faces"] == len([p for p in kept if p in ERASE_LAYOUT[home_of]])
    # and the erasure is in the audit log
    (record,) = [e for e in env.gov.audit.entries(action="erase")]
    assert record.actor == "api_admin" and record.details["faces"] == [everyone[gone]]
    assert record.purpose.startswith("REQ-")
    if mode == "like":
        # the probe is usually a photo of the erased person: named by its keyed hash only
        assert record.details["probe_keyed_hash"] == env.engine.erasure.keyed_bytes(lfw_bytes("Hugo_Chavez_0002"))
        assert api_sha256(lfw_bytes("Hugo_Chavez_0002")) not in json.dumps(record.details)


def test_erasing_a_collection_leaves_none_of_its_uploads(api_fresh_env):
    env = api_fresh_env({"alpha": ["Colin_Powell_0001"], "beta": ["Hugo_Chavez_0001"]})
    beta_uploads = env.home / "uploads" / f"c{env.engine.collection('beta').id}"
    # an upload that cannot be indexed (a truncated JPEG, a file that is no image) is not kept at all
    truncated = lfw_bytes("George_W_Bush_0001")[:2000]
    files = [("files", ("bush.jpg", truncated, "image/jpeg")), ("files", ("notes.jpg", b"not a photo", "image/jpeg"))]
    response = env.as_user("api_admin").post("/api/collections/beta/photos", files=files)
    assert response.status_code == 202, response.text
    job = env.wait(response.json()["id"])
    assert job["state"] == "done" and len(job["failed"]) + len(job["skipped"]) == 2, job
    assert len(list(beta_uploads.iterdir())) == 1, "copies of uploads that failed to index must not be held"
    erased = env.as_user("api_admin").post("/api/erase", json={"collection": "beta", "reason": "REQ-5"})
    assert erased.status_code == 200, erased.text
    left = sorted(p.name for p in beta_uploads.glob("*")) if beta_uploads.exists() else []
    assert left == [], f"uploads of the erased collection are still held under {beta_uploads}: {left}"
    assert list((env.home / "uploads").rglob("*.jpg")), "the other collection's upload must stay"


def test_erase_like_takes_only_faces_above_the_score(api_fresh_env):
    env = api_fresh_env(ERASE_LAYOUT)
    response = env.as_user("api_admin").post(
        "/api/erase/like", data={"min_score": "0.99"},
        files={"probe": ("p.jpg", lfw_bytes("Hugo_Chavez_0002"), "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == []  # Chavez_0001 scores about 0.6 against Chavez_0002
    assert env.engine.catalog.faces(env.faces["Hugo_Chavez_0001"])
    bad = env.as_user("api_admin").post("/api/erase/like", data={"min_score": "0"},
                                        files={"probe": ("p.jpg", lfw_bytes("Hugo_Chavez_0002"), "image/jpeg")})
    assert bad.status_code == 422
    nothing = env.as_user("api_admin").post("/api/erase", json={"reason": "no target"})
    assert nothing.status_code == 400, nothing.text


# -- opt-out ----------------------------------------------------------------------------------------

OPTOUT_LAYOUT = {"alpha": ["Colin_Powell_0001", "George_W_Bush_0001", "Hugo_Chavez_0001"]}


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_opt_out_hides_the_person_from_searches_and_ingests(backend, api_fresh_env, tmp_path):
    env = api_fresh_env(OPTOUT_LAYOUT, backend=backend)
    chavez = env.faces["Hugo_Chavez_0001"][0]
    probe = mirrored("Hugo_Chavez_0001", tmp_path)  # another photo of P than the opt-out's
    assert found(env, "api_ivy", probe)[0] == chavez  # the control: before the opt-out P is found

    # P asks not to be found; the admin registers it with a photo of P
    optout_photo = lfw_bytes("Hugo_Chavez_0002")
    response = env.as_user("api_admin").post("/api/optouts", data={"reference": "OPT-2024-007"},
                                             files={"probe": ("p.jpg", optout_photo, "image/jpeg")})
    assert response.status_code == 201, response.text
    assert 0.0 < response.json()["threshold"] < 0.6

    mark = last_audit_id(env)
    for username in ("api_ivy", "api_admin"):
        for search_probe in (probe, LFW / "Hugo_Chavez_0001.jpg", LFW / "Hugo_Chavez_0002.jpg"):
            assert chavez not in found(env, username, search_probe), f"{username} found an opted-out person"
    search = env.search("api_ivy", probe, case_ref="CASE-OPT").json()
    assert chavez not in [c["face_id"] for c in search["candidates"]]
    assert [c["rank"] for c in search["candidates"]] == list(range(1, len(search["candidates"]) + 1))
    (record,) = audit_tail(env, mark, case_ref="CASE-OPT")
    assert record["details"]["suppressed"] >= 1
    assert chavez not in [face_id for face_id, _ in record["details"]["results"]]
    # everyone else is still found
    assert found(env, "api_ivy", LFW / "Colin_Powell_0002.jpg")[0] == env.faces["Colin_Powell_0001"][0]
    assert found(env, "api_ivy", LFW / "George_W_Bush_0002.jpg")[0] == env.faces["George_W_Bush_0001"][0]

    # a later upload of another photo of P indexes no face of P; one of someone else still indexes
    before = set(env.engine.catalog.face_ids(env.engine.collection("alpha").id).tolist())
    job = env.upload("alpha", [probe])
    assert job["faces_indexed"] == 0, job
    assert set(env.engine.catalog.face_ids(env.engine.collection("alpha").id).tolist()) == before
    listed = {c["name"]: c for c in env.as_user("api_admin").get("/api/collections").json()}
    assert listed["alpha"]["faces"] == len(before)
    (ingest,) = [e for e in env.gov.audit.entries(action="ingest") if e.id > mark]
    assert ingest.details["suppressed"] == 1 and ingest.details["faces"] == 0
    control = env.upload("alpha", [LFW / "Colin_Powell_0002.jpg"])
    assert control["faces_indexed"] == 1

    # the list shows the reference, never a face or an embedding
    listing = env.as_user("api_admin").get("/api/optouts")
    assert listing.status_code == 200
    (entry,) = listing.json()
    assert entry["reference"] == "OPT-2024-007" and entry["created_by"] == "api_admin"
    assert set(entry) == {"id", "reference", "created_by", "created_at"}
    assert "embedding" not in listing.text and len(listing.text) < 500
    (optout_record,) = env.gov.audit.entries(action="opt_out")
    assert optout_record.case_ref == "OPT-2024-007"
    assert optout_record.details["probe_sha256"] == api_sha256(optout_photo)


def test_opt_out_needs_a_face_and_a_reference(api_fresh_env, no_face_path):
    env = api_fresh_env({"alpha": []})
    admin = env.as_user("api_admin")
    faceless = admin.post("/api/optouts", data={"reference": "OPT-1"},
                          files={"probe": ("p.png", no_face_path.read_bytes(), "image/png")})
    assert faceless.status_code == 422, faceless.text
    unnamed = admin.post("/api/optouts", data={"reference": ""},
                         files={"probe": ("p.jpg", lfw_bytes("Hugo_Chavez_0002"), "image/jpeg")})
    assert unnamed.status_code == 422, unnamed.text
    assert admin.get("/api/optouts").json() == []


# -- the audit trail of every action ---------------------------------------------------------------


def test_every_action_leaves_one_audit_record(api_fresh_env):
    env = api_fresh_env({"alpha": ["Colin_Powell_0001", "George_W_Bush_0001"]})
    started = datetime.now(UTC).isoformat(timespec="microseconds")
    mark = last_audit_id(env)
    ivy = env.login("api_ivy")  # login
    csrf = {"X-CSRF-Token": ivy.csrf}
    probe = lfw_bytes("Colin_Powell_0002")
    search = ivy.post("/api/search", headers=csrf, files={"probe": ("p.jpg", probe, "image/jpeg")},
                      data={"purpose": PURPOSE, "case_ref": "CASE-AUD-1"})
    assert search.status_code == 200, search.text
    a, b = lfw_bytes("Colin_Powell_0001"), lfw_bytes("George_W_Bush_0002")
    verify = ivy.post("/api/verify", headers=csrf, files={"a": ("a.jpg", a, "image/jpeg"),
                                                          "b": ("b.jpg", b, "image/jpeg")},
                      data={"purpose": "compare two stills", "case_ref": "CASE-AUD-2"})
    assert verify.status_code == 200, verify.text
    powell = env.faces["Colin_Powell_0001"][0]
    view = ivy.get(search.json()["candidates"][0]["photo_url"])  # under the search's view grant
    assert view.status_code == 200
    env.upload("alpha", [LFW / "Hugo_Chavez_0001.jpg"])  # ingest, by the admin
    bush = env.faces["George_W_Bush_0001"][0]
    admin = env.as_user("api_admin")
    assert admin.post("/api/erase", json={"faces": [bush], "reason": "REQ-9"}).status_code == 200
    assert admin.post("/api/optouts", data={"reference": "OPT-9"},
                      files={"probe": ("p.gif", YALE_GIF.read_bytes(), "image/gif")}).status_code == 201
    assert admin.post("/api/users", json={"username": "api_newbie", "password": "newbie-password-1",
                                          "role": "auditor"}).status_code == 201

    records = audit_tail(env, mark)
    assert [r["action"] for r in records] == ["login", "search", "verify", "view_photo", "ingest", "erase",
                                              "opt_out", "user_add"]
    login, searched, verified, viewed, ingested, erased, opted, added = records
    assert [r["actor"] for r in records] == ["api_ivy"] * 4 + ["api_admin"] * 4
    for record in records:
        assert started <= record["at"] <= datetime.now(UTC).isoformat(timespec="microseconds")
        assert len(record["hash"]) == 64 and len(record["prev_hash"]) == 64
    for older, newer in zip(records, records[1:]):
        assert newer["prev_hash"] == older["hash"]
    assert login["details"] == {"ok": True, "client": "testclient"}

    assert searched["purpose"] == PURPOSE and searched["case_ref"] == "CASE-AUD-1"
    assert searched["details"]["probe_sha256"] == api_sha256(probe)
    candidates = search.json()["candidates"]
    assert candidates and searched["details"]["results"] == [
        [c["face_id"], pytest.approx(c["similarity"], abs=1e-4)] for c in candidates]
    assert searched["details"]["results"][0][0] == powell
    assert searched["details"]["suppressed"] == 0 and searched["details"]["collections"] == ["alpha"]

    assert verified["case_ref"] == "CASE-AUD-2" and verified["purpose"] == "compare two stills"
    assert verified["details"]["probe_sha256"] == [api_sha256(a), api_sha256(b)]
    assert verified["details"]["similarity"] == pytest.approx(verify.json()["similarity"])
    assert verified["details"]["same_person"] is False

    assert viewed["details"]["face_id"] == powell and viewed["case_ref"] == "CASE-AUD-1"
    assert viewed["purpose"] == PURPOSE and viewed["details"]["context_record"] == searched["id"]
    assert viewed["details"]["image_id"] == env.images["Colin_Powell_0001"]
    assert ingested["details"]["collection"] == "alpha"
    assert (ingested["details"]["images"], ingested["details"]["faces"]) == (1, 1)
    assert erased["details"]["faces"] == [bush] and erased["purpose"] == "REQ-9"
    assert opted["case_ref"] == "OPT-9" and opted["details"]["probe_sha256"] == api_sha256(YALE_GIF.read_bytes())
    assert added["details"] == {"username": "api_newbie", "role": "auditor"}

    # reading the log is itself recorded
    reads = [e for e in env.gov.audit.entries(action="audit_read") if e.id > mark]
    assert reads and reads[-1].actor == "api_audrey"

    # filters
    mine = audit_tail(env, mark, actor="api_ivy")
    assert [r["action"] for r in mine] == ["login", "search", "verify", "view_photo"]
    assert [r["id"] for r in audit_tail(env, 0, action="search")] == [searched["id"]]
    assert {r["id"] for r in audit_tail(env, 0, case_ref="CASE-AUD-1")} == {searched["id"], viewed["id"]}
    assert audit_tail(env, 0, actor="api_admin", action="search") == []
    assert [r["id"] for r in audit_tail(env, 0, since=searched["at"], until=verified["at"])] == [
        searched["id"], verified["id"]]
    limited = env.as_user("api_audrey").get("/api/audit", params={"limit": 2}).json()
    assert len(limited) == 2 and limited[0]["id"] > limited[1]["id"]  # newest first

    # export: JSON lines, oldest first, the whole chain; filtered exports too
    export = env.as_user("api_audrey").get("/api/audit/export")
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [r["id"] for r in lines] == list(range(1, len(lines) + 1))
    exported = {r["id"]: r for r in lines}
    for record in records:
        assert exported[record["id"]] == record
    only_searches = env.as_user("api_audrey").get("/api/audit/export", params={"action": "search"})
    assert [json.loads(line)["id"] for line in only_searches.text.splitlines()] == [searched["id"]]

    check = env.as_user("api_audrey").get("/api/audit/verify")
    assert check.status_code == 200
    assert check.json()["ok"] is True and check.json()["problems"] == []
    assert check.json()["records"] >= lines[-1]["id"]

    for username in ("api_ivy", "api_admin"):
        for path in ("/api/audit", "/api/audit/export", "/api/audit/verify"):
            assert env.as_user(username).get(path).status_code == 403


def test_failed_logins_and_user_changes_are_audited(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    mark = last_audit_id(env)
    assert env.anon.post("/api/login", json={"username": "api_ivy", "password": "wrong-password"}).status_code == 401
    admin = env.as_user("api_admin")
    assert admin.post("/api/users", json={"username": "api_x", "password": "x-password-123",
                                          "role": "investigator"}).status_code == 201
    assert admin.post("/api/collections/alpha/grants", json={"username": "api_x"}).status_code == 200
    assert admin.post("/api/users/api_x/api-keys").status_code == 403  # a key for someone else: refused
    assert admin.delete("/api/collections/alpha/grants/api_x").status_code == 200
    assert admin.post("/api/users/api_x/deactivate").status_code == 200
    records = audit_tail(env, mark)
    assert [(r["actor"], r["action"]) for r in records] == [
        ("api_ivy", "login"), ("api_admin", "user_add"), ("api_admin", "grant"), ("api_admin", "api_key_refused"),
        ("api_admin", "revoke"), ("api_admin", "user_deactivate")]
    assert records[0]["details"] == {"ok": False, "client": "testclient"}
    assert all(r["details"].get("username") == "api_x" for r in records[1:])
    short = admin.post("/api/users", json={"username": "api_y", "password": "short", "role": "investigator"})
    assert short.status_code == 400 and "too short" in short.text


# -- the user and serve commands -----------------------------------------------------------------


def _feed_stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


@pytest.fixture
def api_cli_home(tmp_path) -> Path:
    return tmp_path / "cli_home"


def test_user_add_reads_the_password_from_stdin(cli, monkeypatch, api_cli_home):
    _feed_stdin(monkeypatch, "correct horse battery\n")
    code, out, err = cli("user", "add", "root", "--role", "admin", "--password-stdin", "--home", api_cli_home)
    assert code == 0, err
    assert "root" in out and "admin" in out
    with Engine.open(api_cli_home) as engine:
        gov = Governance(engine)
        user = gov.accounts.check_password("root", "correct horse battery")
        assert user is not None and user.role == "admin"
        assert gov.accounts.check_password("root", "correct horse battery\n") is None
        (record,) = gov.audit.entries(action="user_add")
        assert record.details == {"username": "root", "role": "admin"}
        assert record.actor.startswith("local:")
    _feed_stdin(monkeypatch, "another long password\n")
    code, _, err = cli("user", "add", "root", "--role", "auditor", "--password-stdin", "--home", api_cli_home)
    assert code == 2 and "already exists" in err


def test_user_add_refuses_a_short_password(cli, monkeypatch, api_cli_home):
    _feed_stdin(monkeypatch, "short\n")
    code, out, err = cli("user", "add", "root", "--role", "admin", "--password-stdin", "--home", api_cli_home)
    assert code == 2
    assert "password too short" in err and "10" in err
    assert "Traceback" not in err + out
    with Engine.open(api_cli_home) as engine:
        assert Governance(engine).accounts.users() == []


@pytest.fixture
def no_uvicorn(monkeypatch):
    """Replace ``uvicorn.run`` so a server that starts returns at once (recorded) instead of serving."""
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append((app, kwargs)))
    return started


def test_serve_refuses_to_start_without_an_admin(cli, monkeypatch, api_cli_home, no_uvicorn):
    code, _, err = cli("serve", "--home", api_cli_home)
    assert code == 2
    assert "no admin" in err and "facesearch user add" in err
    assert no_uvicorn == []
    # an investigator is not enough, nor a deactivated admin
    _feed_stdin(monkeypatch, "investigator-pass\n")
    assert cli("user", "add", "ivy", "--role", "investigator", "--password-stdin", "--home", api_cli_home)[0] == 0
    _feed_stdin(monkeypatch, "admin-password-1\n")
    assert cli("user", "add", "root", "--role", "admin", "--password-stdin", "--home", api_cli_home)[0] == 0
    with Engine.open(api_cli_home) as engine:
        Governance(engine).accounts.set_active("root", False)
    assert cli("serve", "--home", api_cli_home)[0] == 2
    assert no_uvicorn == []
    # the control: with an active admin it gets as far as starting the server
    with Engine.open(api_cli_home) as engine:
        Governance(engine).accounts.set_active("root", True)
    code, out, err = cli("serve", "--home", api_cli_home, "--port", "8765")
    assert code == 0, err
    ((app, options),) = no_uvicorn
    assert options["port"] == 8765 and options["host"] == "127.0.0.1"
    assert any(getattr(route, "path", None) == "/api/search" for route in app.routes)


def test_password_guessing_is_throttled_and_audited(api_fresh_env):
    from fastapi.testclient import TestClient

    from facesearch.api.app import create_app
    from facesearch.governance.accounts import LoginThrottle

    env = api_fresh_env({"alpha": []})
    now = [1000.0]
    client = TestClient(create_app(env.engine, login_throttle=LoginThrottle(clock=lambda: now[0])))
    right = {"username": "api_ivy", "password": API_USERS["api_ivy"][1]}
    for _ in range(3):  # the first few guesses are free; after them this username waits, from this client
        assert client.post("/api/login", json={**right, "password": "guess"}).status_code == 401
    locked = client.post("/api/login", json=right)  # the right password, during the delay
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert client.post("/api/login", json={"username": "API_IVY ", "password": "guess"}).status_code == 429
    other = {"username": "api_admin", "password": API_USERS["api_admin"][1]}
    assert client.post("/api/login", json=other).status_code == 200  # another user is not locked out
    actions = [r["action"] for r in env.as_user("api_audrey").get("/api/audit").json()]
    assert actions.count("login_throttled") == 1  # one record per blocking period, not one per attempt
    now[0] += 3
    assert client.post("/api/login", json={**right, "password": "guess"}).status_code == 401
    again = client.post("/api/login", json=right)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > int(locked.headers["Retry-After"])
    now[0] += 5
    assert client.post("/api/login", json=right).status_code == 200


def test_retention_erases_only_what_is_past_its_period(api_fresh_env):
    from datetime import timedelta

    from facesearch.catalog.schema import ImageRecord, utcnow

    env = api_fresh_env({"alpha": []})
    env.create_collection("short", retention_days=30)
    env.upload("short", [LFW / "Colin_Powell_0001.jpg", LFW / "George_W_Bush_0001.jpg"])
    env.upload("alpha", [LFW / "Hugo_Chavez_0001.jpg"])  # no retention period: kept forever
    old, fresh = env.images["Colin_Powell_0001"], env.images["George_W_Bush_0001"]
    with env.engine.catalog.session() as s:
        s.get(ImageRecord, old).ingested_at = utcnow() - timedelta(days=31)
        s.get(ImageRecord, env.images["Hugo_Chavez_0001"]).ingested_at = utcnow() - timedelta(days=3650)
        s.commit()
    thumbs = [env.engine.thumbnails.path(f.thumbnail) for f in env.engine.catalog.faces(
        env.faces["Colin_Powell_0001"]).values()]
    admin = env.as_user("api_admin")
    dry = admin.post("/api/retention", json={"apply": False}).json()
    assert dry == {"expired": {"short": 1}, "applied": False, "images_erased": 0, "faces_erased": 0}
    assert all(p.is_file() for p in thumbs)
    assert env.as_user("api_ivy").post("/api/retention", json={"apply": True}).status_code == 403
    done = admin.post("/api/retention", json={"apply": True}).json()
    assert done["applied"] and done["images_erased"] == 1 and done["faces_erased"] == 1
    assert not any(p.exists() for p in thumbs)
    remaining = {f.image_id for f in env.engine.catalog.faces(
        [int(i) for c in env.engine.collections() for i in env.engine.catalog.face_ids(c.id)]).values()}
    assert old not in remaining and fresh in remaining and env.images["Hugo_Chavez_0001"] in remaining
    record = env.as_user("api_audrey").get("/api/audit", params={"action": "retention"}).json()[-1]
    assert record["actor"] == "api_admin" and record["details"]["images"] == [old]
    assert admin.post("/api/retention", json={"apply": True}).json()["expired"] == {}


def test_the_server_sweeps_retention_at_start_and_the_cli_lists_it(api_fresh_env, cli):
    import time
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from facesearch.api.app import create_app
    from facesearch.catalog.schema import ImageRecord, utcnow

    env = api_fresh_env({"alpha": []})
    env.create_collection("short", retention_days=7)
    env.upload("short", [LFW / "Colin_Powell_0001.jpg"])
    image = env.images["Colin_Powell_0001"]
    with env.engine.catalog.session() as s:
        s.get(ImageRecord, image).ingested_at = utcnow() - timedelta(days=8)
        s.commit()
    code, out, err = cli("retention", "--home", env.home)
    assert code == 0 and "short: 1 image(s) past the retention period" in out and "dry run" in out
    assert env.engine.catalog.faces(env.faces["Colin_Powell_0001"])  # a dry run erases nothing
    with TestClient(create_app(env.engine, retention_every_s=3600)):
        deadline = time.monotonic() + 30
        while env.engine.catalog.faces(env.faces["Colin_Powell_0001"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not env.engine.catalog.faces(env.faces["Colin_Powell_0001"])
    actors = [r.actor for r in Governance(env.engine).audit.entries(action="retention")]
    assert actors == ["system:retention"]
