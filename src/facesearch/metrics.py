"""Prometheus metrics: what an operator graphs and alerts on, none of it personal.

Process metrics (request and search latency) live here, in module-level collectors that are
not registered anywhere global, so that any layer may time itself (the engine's searches);
:func:`facesearch.api.metrics.render` builds a registry per scrape from them plus the home's
state read at scrape time, so a CLI ingest beside the server is counted too and several apps
in one process (tests) never clash.

The worker-pool owner feeds the queue depth with :func:`set_queue_depth_source`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUEST_SECONDS = Histogram("facesearch_http_request_duration_seconds",
                            "HTTP request latency by route template, method and status",
                            ["route", "method", "status"], registry=None, buckets=_LATENCY_BUCKETS)
SEARCH_SECONDS = Histogram("facesearch_search_duration_seconds",
                           "One search of a probe vector over its collections (index + catalog)",
                           registry=None, buckets=_LATENCY_BUCKETS)
PROCESS_METRICS: tuple[Collector, ...] = (REQUEST_SECONDS, SEARCH_SECONDS)

_queue_depth: Callable[[], int] | None = None


def set_queue_depth_source(source: Callable[[], int] | None) -> None:
    """Who knows how many requests wait for a worker: called at each scrape (None: not reported)."""
    global _queue_depth
    _queue_depth = source


def queue_depth() -> int | None:
    if _queue_depth is None:
        return None
    try:
        return int(_queue_depth())
    except Exception:  # noqa: BLE001 - a broken callback must not break the scrape
        log.exception("worker queue depth callback failed")
        return None


def timed_search(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: observe the wrapped call's duration in ``facesearch_search_duration_seconds``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SEARCH_SECONDS.observe(time.perf_counter() - start)

    return wrapper
