"""The server's bounded pool for CPU work: decoding, detection, embedding, clustering.

FastAPI runs ``async`` routes on the event loop and plain ``def`` routes in a large thread
pool; neither bounds how much face analysis runs at once. Every route that looks at
pixels or runs a model hands that work to :class:`CpuPool` instead: at most ``workers``
jobs run, at most ``queue`` wait, and a request that would have to wait beyond that is
answered at once with 503 and ``Retry-After`` (:class:`ServerBusy`), so that logins,
``/health`` and light requests are never stuck behind a queue of camera-sized photos.
A job that runs longer than ``time_limit_s`` is answered with 503 too; its thread
finishes the work in the background (Python threads cannot be killed) and still holds
its slot until then, so an overloaded server sheds load instead of piling it up.

Priorities: the pool's threads, the ingest job's thread and the inference runtimes' own
threads run at a lower CPU priority (nice +10) than the event loop and the threads that
answer logins, so that on a machine whose cores are all busy with faces, ``/health`` and
a login still get the CPU when they need it (:func:`deprioritize_background_threads`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from facesearch.errors import FacesearchError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServerBusy(FacesearchError):
    """Too much work is queued (or a job ran out of time): try again after ``retry_after_s``."""

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def _malloc_trim() -> Callable[[], None]:
    """glibc keeps freed arenas mapped; trimming hands a big photo's memory back to the OS."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: trim(0)) if trim is not None else (lambda: None)


#: How much lower the threads that crunch photos run than the ones that answer requests.
BACKGROUND_NICE = 10


def run_in_background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: per thread); a no-op where unsupported."""
    _renice(threading.get_native_id())


def deprioritize_background_threads() -> int:
    """Lower every thread of this process but the main one (the event loop): the inference
    runtimes' worker threads, created when the models were loaded. Returns how many."""
    main = threading.main_thread().native_id
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return 0
    return sum(_renice(tid) for tid in tids if tid != main)


def _renice(tid: int) -> bool:
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
        return True
    except (OSError, AttributeError):
        return False


class CpuPool:
    def __init__(self, workers: int = 2, queue: int = 8, time_limit_s: float = 120.0) -> None:
        if workers < 1 or queue < 0 or time_limit_s <= 0:
            raise ValueError("workers >= 1, queue >= 0 and time_limit_s > 0 are required")
        self.workers, self.queue, self.time_limit_s = workers, queue, time_limit_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="facesearch-cpu",
                                            initializer=run_in_background_priority)
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._trim = _malloc_trim()

    @property
    def depth(self) -> int:
        """Jobs running or waiting (a gauge for metrics)."""
        return self._in_flight

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the pool; 503 (:class:`ServerBusy`) when full or too slow."""
        if not self._slots.acquire(blocking=False):
            raise ServerBusy(f"the server is busy ({self.workers + self.queue} photo jobs running or queued): "
                             "try again shortly", retry_after_s=5)
        with self._lock:
            self._in_flight += 1
        try:
            future = self._executor.submit(self._call, functools.partial(fn, *args, **kwargs))
        except RuntimeError:  # shutting down
            self._release()
            raise ServerBusy("the server is shutting down", retry_after_s=30) from None
        future.add_done_callback(lambda _f: self._release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.time_limit_s)
        except TimeoutError:
            log.warning("a CPU job ran past %.0f s: answered 503, it finishes in the background", self.time_limit_s)
            raise ServerBusy(f"this request took longer than {self.time_limit_s:.0f} s and was abandoned: "
                             "try a smaller photo or try again later", retry_after_s=30) from None

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except MemoryError:
            raise ServerBusy("not enough memory for this request right now: try again later",
                             retry_after_s=30) from None
        finally:
            self._trim()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
