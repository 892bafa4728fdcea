"""Background ingest jobs: one at a time per server (ingest holds the home's writer lock),
each with progress a client can poll."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from facesearch.api.workers import run_in_background_priority
from facesearch.errors import FacesearchError

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


class JobRunner:
    def __init__(self) -> None:
        # An ingest is background work: it yields the CPU to requests (see api.workers).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="facesearch-ingest",
                                        initializer=run_in_background_priority)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, collection: str, kind: str, work) -> Job:
        """``work(job)`` runs in the background and updates the job as it goes."""
        job = Job(uuid.uuid4().hex[:16], collection, kind)
        with self._lock:
            self._jobs[job.id] = job

        def run() -> None:
            job.state = "running"
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

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
