"""Backups of a live home, and restoring one into a new home.

A backup is a folder: the catalog snapshot (``catalog.db`` through SQLite's online backup
API, or ``catalog.pgdump`` from ``pg_dump`` run on an exported REPEATABLE READ snapshot), the
thumbnails, stored video frames and held uploads *that snapshot refers to*, each collection's
current FAISS index generation, every other file of the home (config.json, calibrations, audit
checkpoints and keys, whatever they are), and last ``facesearch-backup.json``: the face count
per collection, the audit head and the SHA-256 of every file. No manifest, no backup.

Why no lock: an ingest holds the home's writer lock for its whole run, so a backup that
waited for it would wait for hours. The catalog snapshot is consistent by itself; the files it
names are content-addressed and written before their rows are committed, so they are on disk
unless an erasure removed them after the snapshot. Then the snapshot is taken again (an
erased face must not come back through a backup); after a few tries, under the lock. The
index generation is copied only to save time at restore, which reconciles it with the
catalog (the source of truth) and so rebuilds whatever is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from facesearch.errors import FacesearchError
from facesearch.index.faiss_storage import copy_committed

log = logging.getLogger(__name__)
MANIFEST = "facesearch-backup.json"
FORMAT = 1
SQLITE_SNAPSHOT = "catalog.db"
PG_SNAPSHOT = "catalog.pgdump"
#: Handled on their own (or never copied: the lock, half-written temporaries, milvus-lite's live file).
_SPECIAL = {"catalog.db", "catalog.db-wal", "catalog.db-shm", "catalog.db-journal", "write.lock", "thumbs",
            "index", "uploads"}


class BackupError(FacesearchError):
    """A backup could not be taken, or a backup folder cannot be restored."""


@dataclass
class BackupReport:
    destination: str
    catalog: str  # "sqlite" | "postgresql"
    collections: dict[str, int]  # name -> faces
    faces: int
    audit_records: int
    files: int
    bytes: int
    attempts: int
    locked: bool  # the last attempt held the writer lock


@dataclass
class RestoreReport:
    home: str
    faces: int
    expected_faces: int
    collections: dict[str, int]
    audit_ok: bool
    audit_records: int
    consistent: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- the catalog snapshot ----------------------------------------------------------------------------


@dataclass
class _Snapshot:
    collections: dict[str, int]  # name -> faces
    thumbnails: set[str]  # relative to HOME/thumbs: crops and stored frames
    sources: list[str]  # every image source (uploads held by the home are among them)
    audit_records: int


_QUERIES = {
    "collections": "SELECT c.name, COUNT(f.id) FROM collections c LEFT JOIN faces f ON f.collection_id = c.id "
                   "GROUP BY c.id, c.name",
    "thumbnails": "SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL "
                  "UNION SELECT frame FROM faces WHERE frame IS NOT NULL",
    "sources": "SELECT source FROM images",
    "audit": "SELECT last_id FROM audit_head WHERE id = 1",
}


def _read_snapshot(conn: Any) -> _Snapshot:
    """What one snapshot holds, read through a DB-API or SQLAlchemy connection inside it."""
    def rows(name: str) -> list[tuple]:
        result = conn.execute(text(_QUERIES[name])) if hasattr(conn, "begin") else conn.execute(_QUERIES[name])
        return [tuple(r) for r in result.fetchall()]

    audit = rows("audit")
    return _Snapshot({name: int(n) for name, n in rows("collections")}, {r[0] for r in rows("thumbnails")},
                     [r[0] for r in rows("sources")], int(audit[0][0]) if audit else 0)


def _sqlite_snapshot(database: Path, target: Path) -> _Snapshot:
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)  # one step: a consistent copy even while other connections write
        return _read_snapshot(copy)
    finally:
        copy.close()
        source.close()


def _pg_tool(name: str, pg_bin: str | None) -> str:
    found = shutil.which(name, path=pg_bin) if pg_bin else shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found{' in ' + pg_bin if pg_bin else ' on PATH'}: install the PostgreSQL "
                          "client matching the server (or set FACESEARCH_PG_BIN)")
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy URL as a libpq connection string, its password in the environment (not argv)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return plain, env


def _postgres_snapshot(url: str, target: Path, pg_bin: str | None) -> _Snapshot:
    engine = create_engine(url, future=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
            snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
            held = _read_snapshot(conn)
            dsn, env = _libpq(url)
            # pg_dump reads exactly the snapshot the queries above saw (held open until it is done).
            done = subprocess.run([_pg_tool("pg_dump", pg_bin), "--format=custom", "--no-owner",
                                   f"--snapshot={snapshot_id}", f"--file={target}", dsn],
                                  env=env, capture_output=True, text=True)
            conn.execute(text("COMMIT"))
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done}")
        return held
    finally:
        engine.dispose()


# -- files ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_index_generations(home: Path, dest: Path) -> None:
    """Each FAISS collection's current generation (best effort: a save may replace it meanwhile)."""
    root = home / "index" / "faiss"
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            pointer = json.loads((folder / "CURRENT").read_text())
            target = dest / "index" / "faiss" / folder.name
            copy_committed(folder, target, pointer)  # either format; an mmap file only up to its count
            (target / "CURRENT").write_text(json.dumps(pointer))
        except (OSError, ValueError, KeyError):
            shutil.rmtree(dest / "index" / "faiss" / folder.name, ignore_errors=True)  # restore rebuilds it


def _copy_other_files(home: Path, dest: Path) -> None:
    for entry in home.iterdir():
        if entry.name in _SPECIAL or entry.name.endswith(".tmp"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=shutil.ignore_patterns("*.tmp"))
        elif entry.is_file():
            shutil.copy2(entry, dest / entry.name)


def _clear(folder: Path) -> None:
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


# -- backup ---------------------------------------------------------------------------------------------


def backup(engine, destination: str | os.PathLike, *, attempts: int = 3, pg_bin: str | None = None,
           actor: str = "local") -> BackupReport:
    """Snapshot ``engine``'s home into ``destination`` (a new or empty folder) while it stays in use."""
    from facesearch.governance.audit import AuditLog

    home = engine.home
    dest = Path(destination).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest}: exists and is not an empty folder")
    if dest.is_relative_to(home):
        raise BackupError(f"{dest}: a backup must be outside the home it copies")
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)  # every face of the home is in it: its owner only
    # Who copied every face, and when, is recorded; the record is inside the backup too.
    AuditLog(engine.catalog).append(actor, "backup", {"destination": str(dest)})
    url = engine.config.database_url
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        with engine.writing() if last else nullcontext():
            _clear(dest)
            if url:
                snap = _postgres_snapshot(url, dest / PG_SNAPSHOT, pg_bin)
            else:
                snap = _sqlite_snapshot(home / "catalog.db", dest / SQLITE_SNAPSHOT)
            vanished = _copy_referenced(home, dest, snap)
            if vanished and not last:
                log.info("backup: %d referenced file(s) were erased during the copy; taking the snapshot again",
                         vanished)
                continue
            if vanished:  # cannot happen under the lock: erasures hold it
                raise BackupError(f"{vanished} file(s) the catalog refers to are missing from the home: "
                                  "run `facesearch doctor` first")
            _copy_index_generations(home, dest)
            _copy_other_files(home, dest)
            report = _write_manifest(home, dest, snap, "postgresql" if url else "sqlite", attempt, last)
            log.info("backup written", extra={"destination": str(dest), "faces": report.faces,
                                              "files": report.files, "attempts": attempt})
            return report
    raise AssertionError("unreachable")


def _copy_referenced(home: Path, dest: Path, snap: _Snapshot) -> int:
    vanished = 0
    for relative in sorted(snap.thumbnails):
        target = dest / "thumbs" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(home / "thumbs" / relative, target)
        except FileNotFoundError:
            vanished += 1
    uploads = (home / "uploads").resolve()
    for source in snap.sources:
        path = Path(source)
        if path.is_absolute() and path.is_relative_to(uploads):
            target = dest / "uploads" / path.relative_to(uploads)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(path, target)
            except FileNotFoundError:
                vanished += 1
    return vanished


def _write_manifest(home: Path, dest: Path, snap: _Snapshot, catalog: str, attempts: int,
                    locked: bool) -> BackupReport:
    files = {p.relative_to(dest).as_posix(): _sha256(p) for p in sorted(dest.rglob("*")) if p.is_file()}
    size = sum((dest / name).stat().st_size for name in files)
    manifest = {"format": FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "source_home": str(home), "catalog": catalog, "collections": snap.collections,
                "faces": sum(snap.collections.values()), "audit_records": snap.audit_records,
                "uploads_root": str((home / "uploads").resolve()), "files": files}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, dest / MANIFEST)  # last: a folder without it is an unfinished backup
    return BackupReport(str(dest), catalog, snap.collections, manifest["faces"], snap.audit_records, len(files),
                        size, attempts, locked)


# -- restore --------------------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict:
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source}: no {MANIFEST}: not a facesearch backup, or an unfinished one")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.get('format')!r} is not {FORMAT}")
    return manifest


def restore(source: str | os.PathLike, home: str | os.PathLike, *, database_url: str | None = None,
            milvus_uri: str | None = None, pg_bin: str | None = None, actor: str = "local") -> RestoreReport:
    """Rebuild a home from a backup folder; the index is reconciled with the restored catalog."""
    from facesearch.catalog import sqlite_url
    from facesearch.governance.audit import AuditLog
    from facesearch.services.engine import Engine

    src = Path(source).expanduser().resolve()
    target = Path(home).expanduser().resolve()
    manifest = read_manifest(src)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target}: exists and is not an empty folder: restore only into a new home")
    for name, digest in manifest["files"].items():
        path = src / name
        if not path.is_file() or _sha256(path) != digest:
            raise BackupError(f"{path}: missing or changed since the backup was taken (SHA-256 differs)")
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)
    for name in manifest["files"]:
        if name in (SQLITE_SNAPSHOT, PG_SNAPSHOT):
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, target / name)
    if manifest["catalog"] == "postgresql":
        if not database_url:
            raise BackupError("this backup holds a PostgreSQL catalog: give the (empty) target database with --db")
        dsn, env = _libpq(database_url)
        done = subprocess.run([_pg_tool("pg_restore", pg_bin), "--no-owner", "--exit-on-error", f"--dbname={dsn}",
                               str(src / PG_SNAPSHOT)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupError(f"pg_restore failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done}")
    else:
        if database_url:
            raise BackupError("this backup holds a SQLite catalog: restore it without --db")
        shutil.copy2(src / SQLITE_SNAPSHOT, target / "catalog.db")
    _rewrite_config(target, database_url, milvus_uri)
    # Named explicitly, so FACESEARCH_DATABASE_URL / _MILVUS_URI of a live deployment in the
    # environment can never point the restore (and its repairing doctor run) at the live home.
    catalog_url = database_url or sqlite_url(target / "catalog.db")
    (target / "index").mkdir(exist_ok=True)  # milvus-lite's file goes there
    _move_uploads(catalog_url, target, Path(manifest["uploads_root"]))
    with Engine.open(target, database_url=catalog_url,
                     milvus_uri=milvus_uri or str(target / "index" / "milvus.db")) as engine:
        engine.doctor(repair=True)  # rebuilds every index from the restored catalog
        check = engine.doctor(repair=False)
        audit = AuditLog(engine.catalog)
        verified = audit.verify()
        counts = {info.name: info.faces for info in engine.collections()}
        report = RestoreReport(str(target), sum(counts.values()), manifest["faces"], counts, verified.ok,
                               verified.records, all(r.consistent for r in check))
        if report.faces != report.expected_faces:
            report.problems.append(f"{report.faces} faces restored, the backup holds {report.expected_faces}")
        if not report.consistent:
            report.problems.append("index, catalog and thumbnails disagree after the restore (see doctor)")
        if not verified.ok:
            report.problems.append(f"the audit chain does not verify ({len(verified.problems)} problem(s))")
        if report.ok:
            audit.append(actor, "restore", {"backup_created": manifest["created"], "faces": report.faces})
    log.info("restore finished", extra={"home": str(target), "faces": report.faces, "ok": report.ok})
    return report


def _rewrite_config(home: Path, database_url: str | None, milvus_uri: str | None) -> None:
    """The new home's own catalog and index: never the live home's Milvus collections (a doctor
    run there would remove the live faces the backup lacks). No secret is written."""
    path = home / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    # Never the password: it comes from FACESEARCH_DATABASE_URL(_FILE), PGPASSWORD or ~/.pgpass.
    config["database_url"] = make_url(database_url).set(password=None).render_as_string(hide_password=False) \
        if database_url else None
    config["milvus_uri"] = milvus_uri
    path.write_text(json.dumps(config, indent=2) + "\n")


def _move_uploads(catalog_url: str, home: Path, old_root: Path) -> None:
    """Uploads held by the old home are referenced by absolute path: point them at the new home."""
    from sqlalchemy import update

    from facesearch.catalog import Catalog
    from facesearch.catalog.schema import ImageRecord

    new_root = (home / "uploads").resolve()
    if old_root == new_root:
        return
    prefix = str(old_root) + os.sep
    catalog = Catalog.open(catalog_url)
    try:
        with catalog.session() as s:
            for image_id, source in s.execute(text("SELECT id, source FROM images")).all():
                if source.startswith(prefix):
                    s.execute(update(ImageRecord).where(ImageRecord.id == image_id)
                              .values(source=str(new_root / source[len(prefix):])))
            s.commit()
    finally:
        catalog.close()
