"""Red team: erasure without traces, opt-out on every surface, files at rest (issue 11).

Each test repeats an attack an insider could make (read the home's files byte by byte, index
the original folder again, enumerate subject faces and clusters, list the uploads folder,
read files with another account) and asserts that it now fails. Real parts throughout: the
``facesearch`` CLI in-process, the buffalo_s models, SQLite, FAISS, the FastAPI app.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from facesearch.catalog.schema import IngestEvent
from facesearch.governance import Governance, PermissionDenied, local_operator
from facesearch.governance.clusters import ClusterGovernance
from facesearch.governance.subjects import SubjectGovernance
from facesearch.services.engine import Engine

from .conftest import LFW, WHY

MORE = LFW.parent / "subjects"  # Powell 3-4, Bush 3, Chavez 3
ERASED = ("George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg")


@pytest.fixture
def photos(tmp_path) -> Path:
    """The operator's folder: the six LFW fixtures under their real names (which name the person)."""
    folder = tmp_path / "photos"
    shutil.copytree(LFW, folder)
    return folder


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _every_file(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def _traces(home: Path, needles: dict[str, bytes]) -> list[str]:
    """Every (file, needle) where the needle's bytes occur in the file's bytes or in its path."""
    found = []
    for path, data in _every_file(home).items():
        for label, needle in needles.items():
            if needle in data or needle in str(path.relative_to(home)).encode():
                found.append(f"{path.relative_to(home)}: {label}")
    return found


def _needles(photos: Path, embeddings: dict[str, np.ndarray]) -> dict[str, bytes]:
    needles = {"the person's name": b"George_W_Bush"}
    for name in ERASED:
        digest = hashlib.sha256((photos / name).read_bytes())
        needles[f"{name} sha256 hex"] = digest.hexdigest().encode()
        needles[f"{name} sha256 raw"] = digest.digest()
        needles[f"{name} file name"] = name.encode()
    for name, vector in embeddings.items():  # the biometric itself, as stored (float32 little-endian)
        needles[f"{name} embedding"] = np.asarray(vector, "<f4").tobytes()
        needles[f"{name} embedding fp16"] = np.asarray(vector, "<f2").tobytes()  # FAISS storage "mmap"
    return needles


def _bush_embeddings(home: Path) -> dict[str, np.ndarray]:
    with Engine.open(home) as engine:
        info = engine.collection("lfw")
        faces = engine.catalog.faces(engine.catalog.face_ids(info.id).tolist())
        ids = {Path(f.image_source).name: f.id for f in faces.values() if "Bush" in f.image_source}
        vectors = engine.catalog.embeddings_of(list(ids.values()))
        return {name: vectors[face_id] for name, face_id in ids.items()}


# -- erasure ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("faiss_storage", ["auto", "mmap"])
def test_after_erase_like_no_file_in_the_home_names_or_holds_the_erased_photos(cli, photos, home, analyzer,
                                                                              faiss_storage):
    home.mkdir(mode=0o700)
    (home / "config.json").write_text(json.dumps({"faiss_storage": faiss_storage}))
    (home / "config.json").chmod(0o600)
    code, out, err = cli("index", photos, "--collection", "lfw", "--home", home)
    assert code == 0, err
    embeddings = _bush_embeddings(home)
    assert sorted(embeddings) == sorted(ERASED)
    needles = _needles(photos, embeddings)
    # the attack works before the erasure: the home names the photos and holds their vectors
    before = _traces(home, needles)
    assert any("file name" in t for t in before) and any("sha256 hex" in t for t in before), before
    assert any("embedding" in t for t in before), before
    assert any("embedding fp16" in t for t in before) == (faiss_storage == "mmap"), before

    # a server stays open beside the CLI (its pooled connections, its loaded index)
    opened = Engine.open(home)
    server = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    try:
        assert server.search(LFW / "George_W_Bush_0002.jpg", top_k=3).candidates
        code, out, err = cli("erase", "--like", LFW / "George_W_Bush_0002.jpg", "--min-score", "0.3",
                             "--reason", "REQ-77 erasure request", "--home", home)
        assert code == 0, err
        assert "erased 2 face(s)" in out and "images removed: 2" in out
        # read every file as bytes, the SQLite database and its -wal included, while the server is open
        assert _traces(home, needles) == []
        result = server.search(LFW / "George_W_Bush_0002.jpg", top_k=10)
        assert not [c for c in result.candidates if "Bush" in c.image_source]
    finally:
        server.close()
    assert _traces(home, needles) == []
    with Engine.open(home) as engine:
        with engine.catalog.session() as s:  # the journal kept the others' rows, not the erased ones'
            sources = [r.source for r in s.query(IngestEvent)]
        assert len(sources) == 4 and not [s for s in sources if "Bush" in s]
        erase = Governance(engine).audit.entries(action="erase")[-1].details
        assert erase["probe_keyed_hash"] and "probe_sha256" not in erase


def test_indexing_the_original_folder_again_does_not_bring_them_back(cli, photos, home):
    assert cli("index", photos, "--collection", "lfw", "--home", home)[0] == 0
    code, out, err = cli("erase", "--like", LFW / "George_W_Bush_0002.jpg", "--min-score", "0.3", "--home", home)
    assert code == 0 and "erased 2 face(s)" in out, err
    needles = _needles(photos, {})

    code, out, err = cli("index", photos, "--collection", "lfw", "--home", home)
    assert code == 0, err
    assert "skipped 2 erased earlier" in out
    assert "4 already indexed" in out and "indexed   0 images" in out
    # another collection is no way around it
    code, out, err = cli("index", photos, "--collection", "elsewhere", "--home", home, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["erased_earlier"] == 2 and summary["images_indexed"] == 4
    # refusing did not journal them again
    assert _traces(home, needles) == []
    code, out, err = cli("search", LFW / "George_W_Bush_0001.jpg", *WHY, "--home", home, "--json")
    assert code == 0, err
    assert not [c for c in json.loads(out)["candidates"] if "Bush" in c["image_source"]]
    with Engine.open(home) as engine:
        records = [e.details for e in Governance(engine).audit.entries(action="ingest")]
        assert [r["erased_earlier"] for r in records] == [0, 2, 2]


def test_admin_override_readmits_erased_content_and_is_audited(cli, photos, home):
    assert cli("index", photos, "--collection", "lfw", "--home", home)[0] == 0
    assert cli("erase", "--like", LFW / "George_W_Bush_0002.jpg", "--min-score", "0.3", "--home", home)[0] == 0

    code, out, err = cli("index", photos, "--collection", "lfw", "--home", home, "--allow-erased")
    assert code == 0, err
    assert "readmitted 2 erased earlier" in out and "indexed   2 images" in out
    with Engine.open(home) as engine:
        gov = Governance(engine)
        record = gov.audit.entries(action="ingest")[-1]
        assert record.actor == local_operator().username
        assert record.details["allow_erased"] is True and record.details["erased_readmitted"] == 2
        assert engine.erasure.count() == 0  # readmitted content is no longer remembered as erased
    code, out, err = cli("search", LFW / "George_W_Bush_0002.jpg", *WHY, "--home", home, "--json")
    assert [c for c in json.loads(out)["candidates"] if "Bush" in c["image_source"] and c["above_threshold"]]
    code, out, err = cli("index", photos, "--collection", "lfw", "--home", home)
    assert "6 already indexed" in out and "0 erased earlier" in out


@pytest.mark.parametrize("how", ["image", "collection", "retention"])
def test_every_kind_of_erasure_forgets_the_journal_and_refuses_the_bytes_again(how, open_engine, photos, analyzer):
    from datetime import timedelta

    from facesearch.catalog.schema import utcnow

    engine = open_engine(analyzer_factory=lambda: analyzer)
    if how == "retention":
        engine.create_collection("lfw", retention_days=1)
    engine.index([photos], "lfw", progress=False)
    gov = Governance(engine)
    bush = [f for f in engine.catalog.faces(engine.catalog.face_ids(engine.collection("lfw").id).tolist()).values()
            if "Bush" in f.image_source]
    shas = {f.image_sha256 for f in bush}
    if how == "image":
        gov.erase(local_operator(), images=[f.image_id for f in bush])
    elif how == "collection":
        gov.erase(local_operator(), collection="lfw")
        shas = {_sha(p) for p in photos.iterdir()}
    else:
        gov.enforce_retention(local_operator(), apply=True, now=utcnow() + timedelta(days=2))
        shas = {_sha(p) for p in photos.iterdir()}
    with engine.catalog.session() as s:
        assert not [e for e in s.query(IngestEvent) if e.sha256 in shas]
    assert engine.erasure.count() == len(shas)
    summary = engine.index([photos], "lfw", progress=False)
    assert summary.erased_earlier == len(shas)


def test_through_the_api_erased_uploads_are_refused_and_the_override_is_audited(api_fresh_env, photos):
    env = api_fresh_env({"alpha": ["Hugo_Chavez_0001", "Colin_Powell_0001"]}, {})
    admin = env.as_user("api_admin")
    response = admin.post("/api/erase/like", data={"min_score": "0.35", "reason": "REQ-9"},
                          files={"probe": ("p.jpg", (LFW / "Hugo_Chavez_0002.jpg").read_bytes(), "image/jpeg")})
    assert response.status_code == 200 and len(response.json()["faces"]) == 1, response.text
    assert len([p for p in (env.home / "uploads").rglob("*") if p.is_file()]) == 1
    # uploading the erased photo again: refused, counted, and the copy is not kept
    job = env.upload("alpha", [LFW / "Hugo_Chavez_0001.jpg"])
    assert job["erased_earlier"] == 1 and job["images_indexed"] == 0
    assert len([p for p in (env.home / "uploads").rglob("*") if p.is_file()]) == 1
    # a folder ingest likewise, unless the admin explicitly allows it (audited)
    folder = photos.parent / "chavez"
    folder.mkdir()
    shutil.copy(photos / "Hugo_Chavez_0001.jpg", folder)
    for allow, indexed in ((False, 0), (True, 1)):
        response = admin.post("/api/collections/alpha/ingest-folder", json={"path": str(folder), "allow_erased": allow})
        assert response.status_code == 202, response.text
        job = env.wait(response.json()["id"])
        assert job["images_indexed"] == indexed and job["erased_earlier"] == (0 if allow else 1), job
    records = [r.details for r in env.gov.audit.entries(action="ingest")][-2:]
    assert records[0]["erased_earlier"] == 1 and "allow_erased" not in records[0]
    assert records[1]["allow_erased"] is True and records[1]["erased_readmitted"] == 1


def test_the_erasure_key_can_come_from_the_environment(open_engine, photos, analyzer, monkeypatch):
    monkeypatch.setenv("FACESEARCH_ERASURE_KEY", "ab" * 32)
    engine = open_engine(analyzer_factory=lambda: analyzer)
    engine.index([photos / "Hugo_Chavez_0001.jpg"], "lfw", progress=False)
    Governance(engine).erase(local_operator(), images=[1])
    assert not (engine.home / "keys" / "erasure.key").exists()
    assert engine.index([photos / "Hugo_Chavez_0001.jpg"], "lfw", progress=False).erased_earlier == 1
    # without the key, the stored hash says nothing: another key does not recognise the bytes
    monkeypatch.setenv("FACESEARCH_ERASURE_KEY", "cd" * 32)
    other = open_engine(home=engine.home, analyzer_factory=lambda: analyzer)
    assert other.index([photos / "Hugo_Chavez_0001.jpg"], "lfw", progress=False).erased_earlier == 0


# -- opt-out ------------------------------------------------------------------------------------------------------


def test_opt_out_hides_enrolled_subject_faces_and_cluster_members(open_engine, analyzer, cli):
    engine = open_engine(analyzer_factory=lambda: analyzer)
    engine.index([LFW, MORE / "Colin_Powell_0003.jpg"], "cases", progress=False)
    gov = Governance(engine)
    ada = gov.accounts.add_user("ada", "ada-password-1", "admin")
    ivy = gov.accounts.add_user("ivy", "ivy-password-1", "investigator")
    gov.accounts.grant("ivy", engine.collection("cases").id)
    clusters, subjects = ClusterGovernance(gov), SubjectGovernance(gov)
    clusters.run(ada, "cases")
    faces = engine.catalog.faces(engine.catalog.face_ids(engine.collection("cases").id).tolist())
    bush_faces = sorted(f.id for f in faces.values() if "Bush" in f.image_source)
    bush_cluster = next(c for c in clusters.overview(ivy, "cases").clusters
                        if {m.face_id for m in clusters.cluster(ivy, c.id).faces} & set(bush_faces))
    clusters.name(ivy, bush_cluster.id, "man in the red tie")
    subject, report = clusters.to_subject(ivy, bush_cluster.id, "persons of interest")
    assert len(report.added) == 2
    # the photo that will be used for the opt-out was enrolled too, under its file name
    photo = (MORE / "George_W_Bush_0003.jpg").read_bytes()
    enrolled = subjects.enroll(ivy, subject.id, [("George_W_Bush_0003.jpg", photo)])
    assert len(enrolled.added) == 1
    enrolled_ids = [f.id for f in subjects.subjects.faces(subject.id)]
    assert len(enrolled_ids) == 3
    # a view grant for the enrolled faces, as an audited subject view would issue (tied to a real record)
    record = gov.audit.append(ivy.username, "subject_view", {"subject": subject.id}, purpose="p", case_ref="c").id
    grant = gov.grant_for(ivy, record, purpose="p", case_ref="c", subject_face_ids=enrolled_ids)
    thumb = subjects.thumbnail(ivy, enrolled.added[0].id, grant)
    assert thumb.is_file()
    face_grant = gov.grant_view(ivy, bush_faces, purpose="p", case_ref="c")  # granted before the opt-out
    assert gov.thumbnail(ivy, bush_faces[0], face_grant).is_file()

    code, out, err = cli("optout", "add", MORE / "George_W_Bush_0003.jpg", "--reason", "REQ-OPT-1",
                         "--home", engine.home)
    assert code == 0, err

    # subject: no face left, not fetchable, its thumbnail and the enrolment photo's name gone
    assert subjects.subjects.faces(subject.id) == []
    for subject_face_id in enrolled_ids:
        with pytest.raises(PermissionDenied, match="no enrolled face"):
            subjects.thumbnail(ivy, subject_face_id, grant)
    assert not thumb.exists()
    assert _traces(engine.home, {"enrolment photo's name": b"George_W_Bush_0003"}) == []
    # clusters: the members are neither listed nor fetchable
    overview = clusters.overview(ivy, "cases")
    assert not {s for c in overview.clusters for s in c.samples} & set(bush_faces)
    assert clusters.cluster(ivy, bush_cluster.id).faces == []
    for face_id in bush_faces:
        with pytest.raises(PermissionDenied):
            gov.thumbnail(ivy, face_id, face_grant)
    # search and identification leave them out
    result = gov.search(ivy, (LFW / "George_W_Bush_0001.jpg").read_bytes(), purpose="p", case_ref="c")
    assert not set(c.face_id for c in result.candidates) & set(bush_faces)
    # future ingests skip them
    assert gov.ingest(ada, [MORE / "George_W_Bush_0003.jpg"], "cases", progress=False).faces_suppressed == 1

    # the CLI lists and withdraws it, audited
    code, out, err = cli("optout", "list", "--home", engine.home, "--json")
    entries = json.loads(out)
    assert [e["reference"] for e in entries] == ["REQ-OPT-1"]
    code, out, err = cli("optout", "remove", entries[0]["id"], "--reason", "withdrawn by the person",
                         "--home", engine.home)
    assert code == 0, err
    assert cli("optout", "list", "--home", engine.home, "--json")[1].strip() == "[]"
    record = gov.audit.entries(action="opt_out_withdraw")[-1]
    assert record.details == {"optout_id": entries[0]["id"]} and record.purpose == "withdrawn by the person"
    assert record.actor == local_operator().username
    assert gov.audit.entries(action="opt_out")[-1].details["subject_faces_removed"] == enrolled_ids
    gov.thumbnail(ivy, bush_faces[0], face_grant)  # collection faces were only hidden: shown again
    assert cli("optout", "remove", entries[0]["id"], "--home", engine.home)[0] == 2  # no such opt-out now


def test_uploads_of_opted_out_photos_are_not_stored_under_their_names(api_fresh_env):
    env = api_fresh_env({"alpha": []}, {})
    admin = env.as_user("api_admin")
    response = admin.post("/api/optouts", data={"reference": "REQ-OPT-2"},
                          files={"probe": ("x.jpg", (LFW / "George_W_Bush_0002.jpg").read_bytes(), "image/jpeg")})
    assert response.status_code == 201, response.text
    job = env.upload("alpha", [LFW / "George_W_Bush_0001.jpg", LFW / "Colin_Powell_0001.jpg"])
    assert job["images_indexed"] == 2 and job["faces_indexed"] == 1
    kept = [p for p in (env.home / "uploads").rglob("*") if p.is_file()]
    assert len(kept) == 1, kept  # the opted-out photo is not kept at all; Powell's is
    assert env.engine.catalog.face_counts_by_source([str(kept[0])])[str(kept[0])][1] == 1
    needles = {"Bush's name": b"George_W_Bush", "Powell's name": b"Colin_Powell"}
    assert _traces(env.home, needles) == []
    # the copy kept is named by a keyed hash: not the upload's name, not the plain SHA-256 (which anyone
    # holding the photo could compute to confirm it is here)
    assert _sha(LFW / "Colin_Powell_0001.jpg") not in kept[0].name
    assert kept[0].stem == env.engine.erasure.keyed_bytes((LFW / "Colin_Powell_0001.jpg").read_bytes())

    # list and withdraw through the API (the admin page's calls); withdrawal audited
    listed = admin.get("/api/optouts").json()
    assert [o["reference"] for o in listed] == ["REQ-OPT-2"]
    assert env.as_user("api_ivy").delete(f"/api/optouts/{listed[0]['id']}").status_code == 403
    response = admin.delete(f"/api/optouts/{listed[0]['id']}", params={"reason": "asked to be findable again"})
    assert response.status_code == 200, response.text
    assert admin.get("/api/optouts").json() == []
    record = env.gov.audit.entries(action="opt_out_withdraw")[-1]
    assert record.actor == "api_admin" and record.purpose == "asked to be findable again"
    assert admin.delete(f"/api/optouts/{listed[0]['id']}").status_code == 404


def test_admin_page_lists_and_withdraws_opt_outs_without_inline_script(api_fresh_env):
    env = api_fresh_env({"alpha": []}, {})
    page = env.login("api_admin").get("/admin").text
    assert 'id="optouts-table"' in page and '<script src="/static/optouts.js" defer></script>' in page
    assert "<script>" not in page and " on" + "click=" not in page
    script = env.anon.get("/static/optouts.js").text
    assert '"/api/optouts"' in script and 'api("DELETE"' in script


# -- files at rest --------------------------------------------------------------------------------------------------


def _modes(home: Path) -> dict[str, int]:
    paths = [home, *home.rglob("*")]
    return {str(p.relative_to(home)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


def test_home_is_private_after_index_under_a_permissive_umask_and_doctor_fixes_it(cli, photos, home):
    old = os.umask(0o000)  # the most permissive an operator's shell could have
    try:
        code, out, err = cli("index", photos, "--collection", "lfw", "--home", home)
        assert code == 0, err
        assert cli("erase", "--image", "1", "--home", home)[0] == 0  # creates the erasure key
    finally:
        os.umask(old)
    modes = _modes(home)
    for name in ("catalog.db", "keys/erasure.key", "config.json"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    assert [n for n in modes if n.startswith("thumbs/") and n.endswith(".jpg")]
    assert [n for n in modes if n.startswith("index/") and n.endswith(".npy")]
    loose = {n: oct(m) for n, m in modes.items() if m & 0o077}
    assert loose == {}
    assert modes["."] == 0o700

    # someone loosens them: doctor --check-only warns (exit 1), doctor fixes them
    os.chmod(home / "catalog.db", 0o644)
    os.chmod(home / "thumbs", 0o755)
    os.chmod(home, 0o755)
    code, out, err = cli("doctor", "--home", home, "--check-only")
    assert code == 1
    assert "path(s) looser than directories 0700 / files 0600" in out
    for line in ("0644  catalog.db", "0755  thumbs", "0755  ."):
        assert line in out, out
    code, out, err = cli("doctor", "--home", home, "--check-only", "--json")
    assert code == 1 and json.loads(out)[-1]["collection"] == "(home permissions)"
    code, out, err = cli("doctor", "--home", home)
    assert code == 0, out
    assert "FIXED" in out
    assert {n: oct(m) for n, m in _modes(home).items() if m & 0o077} == {}
    assert cli("doctor", "--home", home, "--check-only")[0] == 0


def test_a_lost_erasure_key_stops_ingest_instead_of_readmitting_silently(open_engine, photos, analyzer):
    from facesearch.catalog.erased import ErasureKeyError

    engine = open_engine(analyzer_factory=lambda: analyzer)
    engine.index([photos / "Hugo_Chavez_0001.jpg"], "lfw", progress=False)
    Governance(engine).erase(local_operator(), images=[1])
    (engine.home / "keys" / "erasure.key").unlink()
    again = open_engine(home=engine.home, analyzer_factory=lambda: analyzer)
    with pytest.raises(ErasureKeyError, match="erasure.key is missing"):
        again.index([photos / "Hugo_Chavez_0001.jpg"], "lfw", progress=False)
    assert again.collection("lfw").images == 0
