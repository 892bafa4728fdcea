"""Prometheus metrics: what an operator graphs and alerts on, none of it personal.

Process metrics (request and search latency) live in module-level collectors that are not
registered anywhere global; :func:`render` builds a registry per scrape from them plus the
home's state read at scrape time (faces per collection, ingest outcomes from the catalog's
journal, audit records), so a CLI ingest beside the server is counted too and several apps
in one process (tests) never clash.

The worker-pool owner feeds the queue depth with :func:`set_queue_depth_source`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from facesearch.engine import Engine

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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


class HomeCollector(Collector):
    """The home's state, read from the catalog at each scrape (cheap aggregate queries)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        depth = queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("facesearch_worker_queue_depth", "Requests waiting for a CPU worker",
                                    value=depth)
        try:
            yield from self._catalog_metrics()
            up = 1
        except Exception:  # noqa: BLE001 - an unreachable catalog is reported as a metric, not a 500
            log.exception("metrics: catalog unreachable")
            up = 0
        yield GaugeMetricFamily("facesearch_catalog_up", "1 when the catalog answered this scrape", value=up)

    def _catalog_metrics(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from facesearch.catalog.schema import IngestEvent
        from facesearch.governance.schema import AuditHead

        faces = GaugeMetricFamily("facesearch_faces", "Faces indexed per collection", labels=["collection"])
        images = GaugeMetricFamily("facesearch_images", "Images indexed per collection", labels=["collection"])
        for info in self.engine.collections():
            faces.add_metric([info.name], info.faces)
            images.add_metric([info.name], info.images)
        yield faces
        yield images
        with self.engine.catalog.session() as s:
            outcomes = s.execute(select(IngestEvent.outcome, func.count()).group_by(IngestEvent.outcome)).all()
            head = s.get(AuditHead, 1)
        ingest = CounterMetricFamily("facesearch_ingest_files", "Files looked at by ingest runs, by outcome "
                                     "(rate() gives photos/s; outcome=failed are failures)", labels=["outcome"])
        for outcome in ("indexed", "duplicate", "skipped", "failed"):
            ingest.add_metric([outcome], dict(outcomes).get(outcome, 0))
        yield ingest
        yield GaugeMetricFamily("facesearch_audit_records", "Records in the hash-chained audit log",
                                value=head.last_id if head is not None else 0)
        age = _checkpoint_age_s(self.engine)
        if age is not None:
            yield GaugeMetricFamily("facesearch_audit_checkpoint_age_seconds",
                                    "Seconds since the newest audit checkpoint was written", value=age)


def _checkpoint_age_s(engine: Engine) -> float | None:
    """Age of the newest file under ``HOME/audit-checkpoints`` (where the audit module keeps them), if any."""
    folder = engine.home / "audit-checkpoints"
    if not folder.is_dir():
        return None
    newest = max((p.stat().st_mtime for p in folder.iterdir() if p.is_file()), default=None)
    return None if newest is None else max(0.0, time.time() - newest)


def render(engine: Engine | None) -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in PROCESS_METRICS:
        registry.register(collector)
    if engine is not None:
        registry.register(HomeCollector(engine))
    return generate_latest(registry)
