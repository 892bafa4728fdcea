"""The ``/metrics`` scrape: the process collectors of :mod:`facesearch.metrics` plus the home's
state read from the catalog at each scrape (faces per collection, ingest outcomes from the
catalog's journal, audit records, the age of the newest audit checkpoint). None of it personal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from facesearch.metrics import PROCESS_METRICS, queue_depth
from facesearch.services.engine import Engine

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
