"""Many API processes, one truth: login throttling and ingest jobs shared through the catalog's
database (SQLite and PostgreSQL), ``serve --workers N``, and the short version of
``bench/multiprocess_load.py``: three ``facesearch serve`` processes on one PostgreSQL catalog under
a bounded load, with no errors, a verifying audit chain and cross-process visibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from facesearch.api.jobs import JobRunner
from facesearch.catalog import Catalog, sqlite_url
from facesearch.governance.accounts import LoginThrottle
from facesearch.governance.shared import SharedLoginThrottle

from .test_audit import APPENDER  # one script appends to the chain from a child process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_catalogs(request, tmp_path):
    """Two Catalog objects (two connection pools: two processes' views) on one database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else sqlite_url(tmp_path / "c.db")
    first, second = Catalog.open(url), Catalog.open(url)
    yield first, second
    first.close()
    second.close()


def test_a_failed_login_through_one_process_throttles_the_others(two_catalogs):
    now = [1000.0]
    a, b = (SharedLoginThrottle(c, clock=lambda: now[0]) for c in two_catalogs)
    local = LoginThrottle(clock=lambda: now[0])  # the in-memory rules, for comparison
    for throttle in (a, b, a):  # three failures spread over two processes
        throttle.failed("ivy", "10.0.0.1")
        local.failed("ivy", "10.0.0.1")
    assert b.wait_s("IVY ", "10.0.0.1") == local.wait_s("ivy", "10.0.0.1") == 2.0
    assert a.wait_s("ivy", "10.0.0.2") == 0.0  # another address is not slowed
    assert a.wait_s("ada", "10.0.0.1") == 0.0  # nor another user
    assert [a.first_refusal("ivy", "10.0.0.1"), b.first_refusal("ivy", "10.0.0.1")] == [True, False]
    now[0] += 2.5
    assert b.wait_s("ivy", "10.0.0.1") == 0.0
    b.failed("ivy", "10.0.0.1")  # the fourth failure doubles the delay, whichever process counts it
    assert a.wait_s("ivy", "10.0.0.1") == pytest.approx(4.0)
    assert b.first_refusal("ivy", "10.0.0.1")  # a new blocking period: worth a record again
    now[0] += 5
    a.succeeded("ivy", "10.0.0.1")
    b.failed("ivy", "10.0.0.1")
    assert a.wait_s("ivy", "10.0.0.1") == 0.0  # a success through one process cleared the count for all


def test_one_address_is_locked_out_across_processes(two_catalogs):
    now = [50.0]
    a, b = (SharedLoginThrottle(c, clock=lambda: now[0], max_failures_per_client=4, lockout_s=60) for c in
            two_catalogs)
    for i in range(4):
        (a if i % 2 else b).failed(f"user{i}", "10.9.9.9")  # different usernames, one address
    assert a.wait_s("admin", "10.9.9.9") == 60.0 and b.wait_s("someone", "10.9.9.9") == 60.0


def test_concurrent_failures_from_many_threads_are_all_counted(two_catalogs):
    throttles = [SharedLoginThrottle(c, free_failures=61, max_failures_per_client=1000) for c in two_catalogs]
    errors = []

    def guess(n: int) -> None:
        try:
            for _ in range(10):
                throttles[n % 2].failed("ivy", "10.1.1.1")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=guess, args=(n,)) for n in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not errors, errors
    assert throttles[0].wait_s("ivy", "10.1.1.1") == 0.0  # 60 failures: still free
    assert throttles[1].failed("ivy", "10.1.1.1") > 0  # the 61st blocks: none of the 60 was lost


def test_a_job_is_seen_by_every_process(two_catalogs):
    mine, other = JobRunner(two_catalogs[0], flush_every_s=0.05), JobRunner(two_catalogs[1])
    release = threading.Event()

    def work(job) -> None:
        job.done, job.total, job.faces_indexed = 1, 3, 2
        release.wait(30)
        job.done, job.images_indexed = 3, 3

    job = mine.submit("alpha", "upload", work)
    deadline = time.monotonic() + 10
    while (seen := other.get(job.id)) is None or seen.done != 1:
        assert time.monotonic() < deadline, "progress never reached the other process"
        time.sleep(0.02)
    assert (seen.state, seen.total, seen.faces_indexed, seen.collection, seen.kind) == ("running", 3, 2, "alpha",
                                                                                       "upload")
    release.set()
    mine.shutdown()
    done = other.get(job.id)
    assert (done.state, done.done, done.images_indexed) == ("done", 3, 3) and done.finished is not None
    assert [j.id for j in other.all()] == [job.id]
    other.shutdown()
    assert other.get("nope") is None


def test_a_failed_job_is_reported_to_other_processes(two_catalogs):
    mine, other = JobRunner(two_catalogs[0]), JobRunner(two_catalogs[1])

    def work(job) -> None:
        raise RuntimeError("the disk is full")

    job = mine.submit("alpha", "folder", work)
    mine.shutdown()
    seen = other.get(job.id)
    assert (seen.state, seen.error) == ("failed", "the disk is full")
    other.shutdown()


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
                OPENBLAS_NUM_THREADS="1", FACESEARCH_THREADS="1", FACESEARCH_DISK_FLOOR_MB="1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_workers_runs_several_processes_on_one_port(postgres_url, tmp_path):
    from facesearch.governance import AuditLog, Governance
    from facesearch.services.engine import Engine

    home = tmp_path / "home"
    with Engine.open(home, database_url=postgres_url) as engine:
        Governance(engine).accounts.add_user("root", "root-password-1", "admin")
    port, log = _free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "facesearch.cli.main", "serve", "--home", str(home),
                                 "--port", str(port), "--workers", "2", "--checkpoint-minutes", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=_env())
    url, logins = f"http://127.0.0.1:{port}", 0
    try:
        deadline = time.monotonic() + 180
        while logins < 6:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with httpx.Client(timeout=30) as client:  # a new connection each time
                    r = client.post(url + "/api/login", json={"username": "root", "password": "root-password-1"})
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            assert r.status_code == 200, r.text
            logins += 1
            me = httpx.get(url + "/api/me", cookies={"fs_session": r.cookies.get("fs_session")}, timeout=30)
            assert me.status_code == 200 and me.json()["username"] == "root"
        assert len(_children(proc.pid)) >= 2, "serve --workers 2 runs two worker processes"
        assert "with 2 processes" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    with Engine.open(home) as engine:
        audit = AuditLog(engine.catalog)
        check = audit.verify()
        recorded = [e for e in audit.entries() if e.action == "login"]
    assert check.ok and len(recorded) == logins


def test_three_processes_under_load_one_truth(postgres_url, tmp_path):
    """The short version of bench/multiprocess_load.py (the 60 s run is in docs/scale.md)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "multiprocess_load.py"), "--seconds", "12",
                           "--processes", "3", "--db", postgres_url, "--json"],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0, report["error_samples"]
    assert report["catalog"] == "postgresql"
    assert report["audit_chain"]["ok"] and report["audit_chain"]["records"] > 10
    assert report["throttle_shared"]["ok"], report["throttle_shared"]
    assert report["visibility"]["probes"] >= 1 and report["visibility"]["max_searches_until_visible"] == 1
    assert report["by_kind"]["me_via_other_process"]["n"] >= 1 and report["by_kind"]["search"]["n"] >= 3
    assert report["ok"] and done.returncode == 0


def test_redteam_an_edit_hidden_among_concurrent_appends_is_caught(postgres_url, tmp_path):
    """Red team: an insider with database access rewrites a record while three API processes append
    to the chain at full speed, hoping the edit is lost in the noise (or "healed" by later appends).
    The appends stay serialized and complete; verification names exactly the edited record."""
    from sqlalchemy import create_engine, text

    from facesearch.governance import AuditLog
    from facesearch.services.engine import Engine

    home = tmp_path / "home"
    with Engine.open(home, database_url=postgres_url) as engine:
        AuditLog(engine.catalog).append("ada", "search", {"i": -1}, purpose="the one to hide", case_ref="X-1")
    processes, each = 3, 40
    running = [subprocess.Popen([sys.executable, "-c", APPENDER, str(home), f"proc{n}", str(each)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
               for n in range(processes)]
    insider = create_engine(postgres_url)
    try:
        deadline = time.monotonic() + 120
        while True:  # strike while the others are appending
            with insider.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM audit_log")).scalar() >= 20:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with insider.begin() as conn:
            conn.execute(text("UPDATE audit_log SET purpose = 'routine check' WHERE id = 1"))
    finally:
        insider.dispose()
    for proc in running:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    with Engine.open(home) as engine:
        log = AuditLog(engine.catalog)
        check = log.verify()
        entries = log.entries()
    assert check.records == 1 + processes * each  # no append lost or forked under contention
    assert [e.id for e in entries] == list(range(1, 2 + processes * each))
    assert [record_id for record_id, _ in check.problems] == [1] and "edited" in check.problems[0][1]
    for n in range(processes):
        assert [e.details["i"] for e in entries if e.actor == f"proc{n}"] == list(range(each))


def test_two_api_processes_on_postgresql_share_sessions_jobs_throttling_and_faces(postgres_url, tmp_path,
                                                                                analyzer, lfw):
    """Two apps, each on its own Engine (own connection pool and index) over one home and one
    PostgreSQL catalog, as two ``serve`` processes are: what one does, the other knows."""
    import contextlib

    from fastapi.testclient import TestClient

    from facesearch.api.app import create_app
    from facesearch.governance import AuditLog
    from facesearch.services.engine import Engine

    from .conftest import API_USERS, api_build_env

    with contextlib.contextmanager(api_build_env)(tmp_path / "home", analyzer, {"alpha": ["Colin_Powell_0001"]},
                                                  {"alpha": ["api_ivy"]}, postgres_url) as env:
        assert env.engine.catalog.engine.dialect.name == "postgresql"
        opened = Engine.open(env.home)  # the home remembers its PostgreSQL catalog
        second = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
        try:
            with TestClient(create_app(second)) as other:
                # a session made through the first process is honoured by the second
                first = env.login("api_ivy")
                me = other.get("/api/me", cookies={"fs_session": first.cookies.get("fs_session")})
                assert me.status_code == 200 and me.json()["username"] == "api_ivy"
                # logging out through the second ends it for the first
                out = other.post("/api/logout", cookies={"fs_session": first.cookies.get("fs_session")},
                                 headers={"X-CSRF-Token": first.csrf})
                assert out.status_code in (200, 204), out.text
                assert first.get("/api/me").status_code == 401

                # a face indexed through the first process is searchable through the second at once
                def searched() -> int:
                    response = other.post("/api/search", headers=env.headers("api_ivy"),
                                          data={"purpose": "p", "case_ref": "C-1"},
                                          files={"probe": ("p.jpg", lfw("Colin_Powell_0002").read_bytes(),
                                                           "image/jpeg")})
                    assert response.status_code == 200, response.text
                    return response.json()["faces_searched"]

                assert searched() == 1
                job = env.upload("alpha", [lfw("George_W_Bush_0001")])
                seen = other.get(f"/api/jobs/{job['id']}", headers=env.headers("api_admin"))  # its job too
                assert seen.status_code == 200 and seen.json()["state"] == "done"
                assert seen.json()["faces_indexed"] == 1
                assert searched() == 2

                # guesses spread over both processes are counted together
                for client in (env.anon, other, env.anon):
                    wrong = client.post("/api/login", json={"username": "api_gina", "password": "guess"})
                    assert wrong.status_code == 401
                right = other.post("/api/login", json={"username": "api_gina",
                                                       "password": API_USERS["api_gina"][1]})
                assert right.status_code == 429
        finally:
            second.close()
        check = AuditLog(env.engine.catalog).verify()
        assert check.ok, check.problems
