"""Background ingest jobs: one at a time per server (ingest holds the home's writer lock),
each with progress a client can poll.

With a catalog, jobs are also written to its ``jobs`` table, so that every API process of a
home (``serve --workers N``, several servers behind a proxy) answers for every job: state
changes (queued, running, done, failed) are written when they happen, progress counts at most
``flush_every_s`` later. The process running a job answers from memory (the freshest); the others
read the table.
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

from sqlalchemy import select

from facesearch.api.workers import run_in_background_priority
from facesearch.catalog import Catalog
from facesearch.errors import FacesearchError
from facesearch.governance.schema import JobRecord

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


#: Job fields kept in the ``progress`` JSON column (the rest have columns of their own).
_PROGRESS = ("done", "total", "images_indexed", "faces_indexed", "failed", "skipped", "erased_earlier", "error")


class JobStore:
    """The ``jobs`` table: what every process knows of every job."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog, self._row = catalog, JobRecord
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:200]

    def write(self, job: Job) -> None:
        progress = json.dumps({name: getattr(job, name) for name in _PROGRESS})
        with self.catalog.session() as s:
            row = s.get(self._row, job.id)
            if row is None:
                s.add(self._row(id=job.id, collection=job.collection, kind=job.kind, state=job.state,
                                owner=self.owner, progress=progress, started=job.started, finished=job.finished))
            else:
                row.state, row.progress, row.finished = job.state, progress, job.finished
            s.commit()

    @staticmethod
    def _job(row) -> Job:
        progress = json.loads(row.progress or "{}")
        return Job(row.id, row.collection, row.kind, row.state, started=row.started, finished=row.finished,
                   **{k: v for k, v in progress.items() if k in _PROGRESS})

    def get(self, job_id: str) -> Job | None:
        with self.catalog.session() as s:
            row = s.get(self._row, job_id)
            return self._job(row) if row is not None else None

    def all(self) -> list[Job]:
        with self.catalog.session() as s:
            return [self._job(r) for r in s.scalars(select(self._row).order_by(self._row.started.desc()))]


class JobRunner:
    def __init__(self, catalog: Catalog | None = None, flush_every_s: float = 0.5) -> None:
        # An ingest is background work: it yields the CPU to requests (see api.workers).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="facesearch-ingest",
                                        initializer=run_in_background_priority)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._store = JobStore(catalog) if catalog is not None else None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        if self._store is not None:  # progress counts reach the other processes within flush_every_s
            threading.Thread(target=self._flush_loop, args=(flush_every_s,), daemon=True,
                             name="facesearch-job-flush").start()

    def _save(self, job: Job) -> None:
        if self._store is not None:
            with self._write_lock:  # the flusher never overwrites a newer state with an older snapshot
                self._store.write(job)

    def _flush_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for job in [j for j in list(self._jobs.values()) if j.state == "running"]:
                try:
                    self._save(job)
                except Exception:  # noqa: BLE001 - a missed progress write is retried next tick
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
