"""Real processes: one writer at a time per home, and ``kill -9`` in the middle of an ingest.

The ingest runs as ``python -m facesearch.cli.main index ...`` in a child process; the
other commands run in-process (the killed or running child is another process all the same).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import WHY

N_PHOTOS = 30  # the distinct_photos fixture


def _start_index(folder: Path, home: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "FACESEARCH_HOME"}
    return subprocess.Popen(
        [sys.executable, "-m", "facesearch.cli.main", "index", str(folder), "--collection", "crowd",
         "--home", str(home), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _committed_images(home: Path) -> int:
    db = home / "catalog.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def _doctor(cli, home: Path, *extra: str) -> tuple[int, list[dict]]:
    code, out, err = cli("doctor", "--home", home, "--json", *extra)
    assert code in (0, 1), err
    return code, json.loads(out)


def _catalog_invariants(home: Path) -> None:
    """What a crash may never leave: a face row without its image, an image whose face_count
    disagrees with its face rows, a face row whose thumbnail file is missing."""
    with sqlite3.connect(home / "catalog.db") as conn:
        assert conn.execute("SELECT count(*) FROM faces f LEFT JOIN images i ON f.image_id = i.id "
                            "WHERE i.id IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM images i WHERE i.face_count != "
                            "(SELECT count(*) FROM faces f WHERE f.image_id = i.id)").fetchone()[0] == 0
        thumbs = [row[0] for row in conn.execute("SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL")]
        dupes = conn.execute("SELECT count(*) FROM (SELECT sha256 FROM images GROUP BY collection_id, sha256 "
                             "HAVING count(*) > 1)").fetchone()[0]
    assert dupes == 0
    for relative in thumbs:
        assert (home / "thumbs" / relative).is_file(), relative


def test_two_writers_one_home(distinct_photos, tmp_path, cli):
    home = tmp_path / "home"
    first = _start_index(distinct_photos, home)
    try:
        lock = home / "write.lock"
        _wait_for(lambda: lock.is_file() and lock.read_text().strip() == f"pid {first.pid}", 60,
                  "the first writer to take the lock", first)
        _wait_for(lambda: _committed_images(home) >= 1, 60, "the first writer to commit an image", first)

        # a second writer that may not wait is refused at once, naming the reason
        started = time.monotonic()
        code, out, err = cli("index", distinct_photos, "--collection", "crowd", "--home", home, "--no-wait")
        assert code != 0
        assert "another facesearch process" in err
        assert f"pid {first.pid}" in err
        assert time.monotonic() - started < 15
        assert first.poll() is None, "the first writer finished too early for the test to mean anything"

        # one that may wait says so, waits for the first to finish, then finds nothing left to do
        code, out, err = cli("index", distinct_photos, "--collection", "crowd", "--home", home, "--json")
        assert code == 0, err
        assert "waiting for another facesearch process" in err
        second = json.loads(out)  # it ran after the first had committed everything
        assert second["already_indexed"] == N_PHOTOS
        assert second["images_indexed"] == 0
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert f"indexed   {N_PHOTOS} images, {N_PHOTOS} faces" in out
    assert "indexing into crowd" in err  # the progress bar

    code, reports = _doctor(cli, home, "--check-only")
    assert code == 0, reports
    [report] = reports
    assert report["consistent"]
    assert report["catalog_faces"] == report["index_faces"] == N_PHOTOS
    _catalog_invariants(home)


def test_kill_9_mid_ingest_then_resume(distinct_photos, tmp_path, cli):
    home = tmp_path / "home"
    child = _start_index(distinct_photos, home)
    try:
        _wait_for(lambda: _committed_images(home) >= 8, 90, "8 committed images", child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    committed = _committed_images(home)
    assert 8 <= committed < N_PHOTOS, "the child was not killed mid-ingest"

    # right after the crash: the catalog is whole; the index may lag behind it, never ahead
    _catalog_invariants(home)
    code, [report] = _doctor(cli, home, "--check-only")
    assert report["catalog_faces"] == committed
    assert report["orphans_in_index"] == 0
    assert report["missing_from_index"] == report["catalog_faces"] - report["index_faces"]
    assert report["missing_thumbnails"] == 0

    # a rerun (without waiting: the dead writer's lock died with it) resumes where it stopped
    code, out, err = cli("index", distinct_photos, "--collection", "crowd", "--home", home, "--json",
                         "--no-wait")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["already_indexed"] == committed
    assert summary["images_indexed"] == N_PHOTOS - committed
    assert summary["already_indexed"] + summary["images_indexed"] == N_PHOTOS
    assert summary["duplicates_in_run"] == 0 and summary["failed"] == []

    code, [report] = _doctor(cli, home, "--check-only")
    assert code == 0, report
    assert report["consistent"]
    assert report["missing_from_index"] == 0 and report["orphans_in_index"] == 0
    assert report["catalog_faces"] == report["index_faces"] == N_PHOTOS
    _catalog_invariants(home)


# -- doctor: damage injected on disk, found, repaired from the catalog ----------------------------------


@pytest.fixture
def small_home(tmp_path, lfw) -> Path:
    from facesearch.services.engine import Engine

    home = tmp_path / "home"
    with Engine.open(home) as engine:
        names = ("Colin_Powell_0001", "George_W_Bush_0001", "George_W_Bush_0002", "Hugo_Chavez_0001")
        summary = engine.index([lfw(n) for n in names], "c", progress=False)
    assert summary.faces_indexed == 4
    return home


def test_doctor_rebuilds_a_lost_index_and_removes_stray_thumbnails(small_home, cli, lfw):
    index_dir = small_home / "index" / "faiss" / "c1"
    assert (index_dir / "CURRENT").is_file()
    shutil.rmtree(index_dir)  # the index is lost (disk trouble, a bad backup...)
    stray = small_home / "thumbs" / "c1" / "ff" / ("f" * 64 + "_0.jpg")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\xff\xd8 left over by a crash")

    code, [report] = _doctor(cli, small_home, "--check-only")
    assert code == 1
    assert (report["catalog_faces"], report["index_faces"], report["missing_from_index"]) == (4, 0, 4)
    assert report["orphan_thumbnails"] == 1 and not report["consistent"] and not report["repaired"]
    assert not index_dir.exists() and stray.exists(), "--check-only changed something"

    code, out, err = cli("doctor", "--home", small_home)
    assert code == 0, err
    assert "REPAIRED" in out
    assert not stray.exists()
    assert (index_dir / "CURRENT").is_file()
    code, [report] = _doctor(cli, small_home, "--check-only")
    assert code == 0 and report["consistent"] and report["index_faces"] == 4
    code, out, err = cli("search", lfw("George_W_Bush_0002"), *WHY, "--home", small_home, "--json")
    assert json.loads(out)["candidates"][0]["similarity"] > 0.99


def test_doctor_drops_vectors_the_catalog_does_not_know(small_home, cli):
    from facesearch.index import FaissIndex

    from .conftest import unit_vectors

    index = FaissIndex(small_home / "index" / "faiss" / "c1")
    index.add(np.array([9001, 9002]), unit_vectors(np.random.default_rng(0), 2))
    index.save()
    code, [report] = _doctor(cli, small_home, "--check-only")
    assert code == 1 and report["orphans_in_index"] == 2
    code, [report] = _doctor(cli, small_home)
    assert report["repaired"]
    assert sorted(FaissIndex(small_home / "index" / "faiss" / "c1").ids().tolist()) == [1, 2, 3, 4]
    code, [report] = _doctor(cli, small_home, "--check-only")
    assert code == 0 and report["consistent"]


def test_doctor_does_not_claim_to_have_repaired_what_it_could_not(small_home, cli):
    from facesearch.services.engine import Engine

    with Engine.open(small_home) as engine:
        face = engine.catalog.faces([1])[1]
    engine.thumbnails.path(face.thumbnail).unlink()  # a thumbnail the catalog points at is gone
    code, [report] = _doctor(cli, small_home, "--check-only")
    assert code == 1 and report["missing_thumbnails"] == 1
    code, out, err = cli("doctor", "--home", small_home)
    code_after, [after] = _doctor(cli, small_home, "--check-only")
    # either the repair really fixed it, or the repair run said it could not (non-zero exit)
    assert after["consistent"] or code != 0, (out, after)
