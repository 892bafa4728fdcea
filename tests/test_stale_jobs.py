"""A job whose process dies does not stay ``running``: a real child process runs an ingest job
(and has a second one queued), is SIGKILLed, and another process reports and writes both as
failed ("the process running it stopped") -- by heartbeat age, as a process on another machine
sees it, and at once on this machine, where the owner's pid is gone. On SQLite and PostgreSQL,
with the 0011 migration from a 0010 database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from facesearch.api.jobs import STOPPED, JobRunner, JobStore
from facesearch.catalog import Catalog, sqlite_url
from facesearch.governance.schema import JobRecord

ROOT = Path(__file__).resolve().parents[1]

#: Runs two jobs (one running, one queued behind it) that never finish, beating every 0.2 s.
_CHILD = """
import sys, threading, time
from facesearch.api.jobs import JobRunner
from facesearch.catalog import Catalog

runner = JobRunner(Catalog.open(sys.argv[1]), flush_every_s=0.1, heartbeat_every_s=0.2)
running = threading.Event()

def work(job):
    job.done, job.total = 1, 10
    running.set()
    time.sleep(3600)

first = runner.submit("alpha", "folder", work)
second = runner.submit("alpha", "upload", work)
running.wait(120)
time.sleep(0.3)  # the first progress write is in the table
print(first.id, second.id, flush=True)
time.sleep(3600)
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return sqlite_url(tmp_path / "c.db")


def _child(url: str) -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, url], stdout=subprocess.PIPE, env=env)
    ids = proc.stdout.readline().decode().split()
    assert len(ids) == 2, "the child did not start its jobs"
    return proc, ids


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # no cleanup code runs in the child
    proc.wait(10)


def _written_state(url: str, job_id: str) -> tuple[str, str]:
    """The row as it is in the table, read without judging it (a bound of an hour, no pid check)."""
    catalog = Catalog.open(url)
    try:
        job = JobStore(catalog, stale_after_s=3600, check_pids=False).get(job_id)
        return job.state, job.error
    finally:
        catalog.close()


def test_a_killed_process_s_jobs_fail_by_heartbeat_age(catalog_url):
    """As another machine sees it (no pid to look at): live jobs stay running past the bound,
    and once the owner is killed they are failed within the bound."""
    bound = 1.5
    catalog = Catalog.open(catalog_url)
    reader = JobRunner(catalog, stale_after_s=bound, check_pids=False)
    proc, (first, second) = _child(catalog_url)
    try:
        watch_until = time.monotonic() + 2 * bound  # the owner beats: never judged stopped
        while time.monotonic() < watch_until:
            assert [reader.get(first).state, reader.get(second).state] == ["running", "queued"]
            time.sleep(0.1)
        assert reader.get(first).done == 1
        _kill(proc)
        killed = time.monotonic()
        while (job := reader.get(first)).state != "failed":
            assert time.monotonic() - killed < bound + 5, "a dead process's job stayed running"
            time.sleep(0.05)
        assert time.monotonic() - killed >= bound - 0.5  # by the heartbeat's age, not by the pid
        assert job.error == STOPPED and job.finished is not None and job.done == 1  # its progress is kept
        assert {j.id: (j.state, j.error) for j in reader.all()} == {first: ("failed", STOPPED),
                                                                    second: ("failed", STOPPED)}
        assert _written_state(catalog_url, first) == _written_state(catalog_url, second) == ("failed", STOPPED)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.shutdown()
        catalog.close()


def test_a_starting_server_fails_at_once_the_jobs_of_this_machine_s_dead_processes(catalog_url):
    proc, (first, second) = _child(catalog_url)
    _kill(proc)
    assert _written_state(catalog_url, first) == ("running", "")  # nothing wrote it yet
    catalog = Catalog.open(catalog_url)
    try:
        started = time.monotonic()
        runner = JobRunner(catalog)  # the default bound of 60 s: it is the dead pid that tells
        assert time.monotonic() - started < 10
        assert _written_state(catalog_url, first) == _written_state(catalog_url, second) == ("failed", STOPPED)
        runner.shutdown()
    finally:
        catalog.close()


def _row(owner: str, heartbeat: float | None, started: float, state: str = "running") -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex[:16], collection="alpha", kind="folder", state=state, owner=owner,
                     progress=json.dumps({"done": 2, "total": 5}), started=started, finished=None,
                     heartbeat=heartbeat)


def test_only_stopped_owners_are_judged(tmp_path):
    catalog = Catalog.open(sqlite_url(tmp_path / "c.db"))
    store = JobStore(catalog, stale_after_s=60)
    me = store.owner.split(":")
    now = time.time()
    rows = {
        "elsewhere": _row(f"other-host:{os.getpid() + 7_000_000}:ab12cd34:1234-999", now, now),  # not our pids
        "alive_here": _row(f"{me[0]}:{os.getppid()}:ab12cd34:{me[3]}", now, now),  # a live process
        "legacy_fresh": _row("old-host:42", None, now - 10),  # before 0011: its start stands in
        "legacy_old": _row("old-host:42", None, now - 600),
        "beat_long_ago": _row("other-host:1:ab12cd34:x", now - 61, now - 3600),
        "done_long_ago": _row("other-host:1:ab12cd34:x", now - 3600, now - 3600, state="done"),
    }
    with catalog.session() as s:
        s.add_all(rows.values())
        s.commit()
    states = {name: store.get(row.id).state for name, row in rows.items()}
    assert states == {"elsewhere": "running", "alive_here": "running", "legacy_fresh": "running",
                      "legacy_old": "failed", "beat_long_ago": "failed", "done_long_ago": "done"}
    assert store.sweep() == 0  # nothing more to fail
    catalog.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0011_adds_the_heartbeat_to_existing_jobs(dialect, request, tmp_path):
    from importlib.resources import files

    url = request.getfixturevalue("postgres_url") if dialect == "postgresql" else sqlite_url(tmp_path / "c.db")
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(files("facesearch.catalog") / "migrations"))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0010_photo_rotation")
        conn.exec_driver_sql("INSERT INTO jobs (id, collection, kind, state, owner, progress, started) "
                             f"VALUES ('j1', 'alpha', 'folder', 'running', 'gone:1', '{{}}', {time.time() - 600})")
    assert "heartbeat" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()
    catalog = Catalog.open(url)  # migrates to the head
    try:
        assert "heartbeat" in {c["name"] for c in inspect(catalog.engine).get_columns("jobs")}
        assert JobStore(catalog).get("j1").state == "failed"  # a job left running before the upgrade
    finally:
        catalog.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # and back down
        config.attributes["connection"] = conn
        command.downgrade(config, "0010_photo_rotation")
    assert "heartbeat" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    engine.dispose()
