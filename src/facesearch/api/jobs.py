"""Background ingest jobs: one at a time per server (ingest holds the home's writer lock),
each with progress a client can poll.

With a catalog, jobs are also written to its ``jobs`` table, so that every API process of a
home (``serve --workers N``, several servers behind a proxy) answers for every job: state
changes (queued, running, done, failed) are written when they happen, progress counts at most
``flush_every_s`` later. The process running a job answers from memory (the freshest); the others
read the table.

A process can die mid-job (SIGKILL, OOM, a lost machine) and never write "failed". So the owner
also writes a heartbeat (every ``heartbeat_every_s``, and with each progress write), and any
process reading a queued or running job whose heartbeat is older than :data:`STALE_AFTER_S`, or
whose owner is a process of this machine that no longer exists, writes it as failed with the
reason :data:`STOPPED`. Every API process sweeps the table so when it starts. An owner that was
only cut off (a database outage longer than the bound) puts the truth back with its next write. Job states are not
audited (the ingest's own work is, by governance), so neither is this.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update

from facesearch.api.workers import run_in_background_priority
from facesearch.catalog import Catalog
from facesearch.errors import FacesearchError
from facesearch.governance.schema import JobRecord
from facesearch.processes import pid_alive

log = logging.getLogger(__name__)


@dataclass
class Job:
    id: str
    collection: str
    kind: str
    state: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int = 0
    images_indexed: int = 0
    faces_indexed: int = 0
    failed: list[list[str]] = field(default_factory=list)
    skipped: list[list[str]] = field(default_factory=list)
    erased_earlier: int = 0
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


#: A queued or running job whose owner wrote no heartbeat for this long is reported failed. The
#: owner beats every HEARTBEAT_EVERY_S, so this is 12 missed beats: a loaded machine or a slow
#: database does not trip it, and a process on another machine that died is noticed within a minute.
STALE_AFTER_S = 60.0
HEARTBEAT_EVERY_S = 5.0
STOPPED = "the process running it stopped"
_ACTIVE = ("queued", "running")

#: Job fields kept in the ``progress`` JSON column (the rest have columns of their own).
_PROGRESS = ("done", "total", "images_indexed", "faces_indexed", "failed", "skipped", "erased_earlier", "error")


def _pid_space() -> str:
    """Which pids this process can see: the kernel's boot and this pid namespace (two containers
    with one host name do not share pids; an empty string where that cannot be told)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
        return f"{boot}-{os.readlink('/proc/self/ns/pid').strip('pid:[]')}"
    except OSError:
        return ""


class JobStore:
    """The ``jobs`` table: what every process knows of every job.

    ``owner`` is ``host:pid:nonce:pidspace`` (the nonce tells two runners of one process apart, and a
    restarted process that got the same pid from its predecessor). ``check_pids=False`` reads as a
    process on another machine would: only by heartbeat."""

    def __init__(self, catalog: Catalog, stale_after_s: float = STALE_AFTER_S, check_pids: bool = True) -> None:
        self.catalog, self._row = catalog, JobRecord
        self.stale_after_s = stale_after_s
        self._space = _pid_space() if check_pids else None
        self.owner = f"{socket.gethostname()[:150]}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_space()}"

    def write(self, job: Job) -> None:
        progress = json.dumps({name: getattr(job, name) for name in _PROGRESS})
        now = time.time()
        with self.catalog.session() as s:
            row = s.get(self._row, job.id)
            if row is None:
                s.add(self._row(id=job.id, collection=job.collection, kind=job.kind, state=job.state,
                                owner=self.owner, progress=progress, started=job.started, finished=job.finished,
                                heartbeat=now))
            else:
                row.state, row.progress, row.finished, row.heartbeat = job.state, progress, job.finished, now
            s.commit()

    def beat(self) -> None:
        """This process is alive: one write for all its queued and running jobs."""
        with self.catalog.session() as s:
            s.execute(update(self._row).where(self._row.owner == self.owner, self._row.state.in_(_ACTIVE))
                      .values(heartbeat=time.time()))
            s.commit()

    def _stopped(self, row, now: float) -> bool:
        if row.state not in _ACTIVE or row.owner == self.owner:
            return False
        if (row.heartbeat or row.started) < now - self.stale_after_s:
            return True
        parts = row.owner.split(":")  # this machine's pid space, and that pid is gone: dead at once
        return (len(parts) == 4 and bool(self._space) and parts[3] == self._space and parts[1].isdigit()
                and not pid_alive(int(parts[1])))

    def _settle(self, s, rows: list) -> None:
        """Write as failed the rows whose process stopped (only if no heartbeat came meanwhile)."""
        now = time.time()
        for row in [r for r in rows if self._stopped(r, now)]:
            progress = {**json.loads(row.progress or "{}"), "error": STOPPED}
            table, seen = self._row, row.heartbeat or row.started
            s.execute(update(table).where(table.id == row.id, table.state.in_(_ACTIVE),
                                          func.coalesce(table.heartbeat, table.started) == seen)
                      .values(state="failed", finished=now, progress=json.dumps(progress)))
            s.commit()
            s.refresh(row)
            if row.state == "failed":
                log.warning("job %s (%s into %s) failed: %s (owner %s)", row.id, row.kind, row.collection, STOPPED,
                            row.owner)

    @staticmethod
    def _job(row) -> Job:
        progress = json.loads(row.progress or "{}")
        return Job(row.id, row.collection, row.kind, row.state, started=row.started, finished=row.finished,
                   **{k: v for k, v in progress.items() if k in _PROGRESS})

    def get(self, job_id: str) -> Job | None:
        with self.catalog.session() as s:
            row = s.get(self._row, job_id)
            if row is None:
                return None
            self._settle(s, [row])
            return self._job(row)

    def all(self) -> list[Job]:
        with self.catalog.session() as s:
            rows = list(s.scalars(select(self._row).order_by(self._row.started.desc())))
            self._settle(s, rows)
            return [self._job(r) for r in rows]

    def sweep(self) -> int:
        """Fail every queued or running job whose process stopped. -> how many."""
        with self.catalog.session() as s:
            rows = list(s.scalars(select(self._row).where(self._row.state.in_(_ACTIVE))))
            self._settle(s, rows)
            return sum(r.state == "failed" for r in rows)


class JobRunner:
    def __init__(self, catalog: Catalog | None = None, flush_every_s: float = 0.5,
                 heartbeat_every_s: float = HEARTBEAT_EVERY_S, stale_after_s: float = STALE_AFTER_S,
                 check_pids: bool = True) -> None:
        # An ingest is background work: it yields the CPU to requests (see api.workers).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="facesearch-ingest",
                                        initializer=run_in_background_priority)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._store = JobStore(catalog, stale_after_s, check_pids) if catalog is not None else None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        if self._store is not None:  # progress counts reach the other processes within flush_every_s
            self._store.sweep()  # jobs of processes that died before this one started
            threading.Thread(target=self._flush_loop, args=(flush_every_s, heartbeat_every_s), daemon=True,
                             name="facesearch-job-flush").start()

    def _save(self, job: Job) -> None:
        if self._store is not None:
            with self._write_lock:  # the flusher never overwrites a newer state with an older snapshot
                self._store.write(job)

    def _flush_loop(self, every_s: float, heartbeat_every_s: float) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(min(every_s, heartbeat_every_s)):
            try:
                for job in [j for j in list(self._jobs.values()) if j.state == "running"]:
                    self._save(job)  # progress, and a heartbeat with it
                queued = any(j.state == "queued" for j in list(self._jobs.values()))
                if queued and time.monotonic() - last_beat >= heartbeat_every_s:
                    self._store.beat()  # queued jobs too (running ones beat with their progress)
                    last_beat = time.monotonic()
            except Exception:  # noqa: BLE001 - a missed write is retried next tick
                pass

    def submit(self, collection: str, kind: str, work) -> Job:
        """``work(job)`` runs in the background and updates the job as it goes."""
        job = Job(uuid.uuid4().hex[:16], collection, kind)
        with self._lock:
            self._jobs[job.id] = job
        self._save(job)

        def run() -> None:
            job.state = "running"
            self._save(job)
            log.info("job %s (%s into %s) started", job.id, kind, collection)
            try:
                work(job)
                job.state = "done"
                log.info("job %s done: %d image(s), %d face(s) indexed", job.id, job.images_indexed,
                         job.faces_indexed)
            except Exception as exc:  # noqa: BLE001 - a job reports its failure instead of dying silently
                job.state, job.error = "failed", str(exc)
                log.error("job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, FacesearchError))
            finally:
                job.finished = time.time()
                self._save(job)

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        mine = self._jobs.get(job_id)
        if mine is not None or self._store is None:
            return mine
        return self._store.get(job_id)

    def all(self) -> list[Job]:
        jobs = {j.id: j for j in self._store.all()} if self._store is not None else {}
        jobs.update(self._jobs)
        return sorted(jobs.values(), key=lambda j: j.started, reverse=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._stop.set()
