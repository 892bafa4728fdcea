"""Is this server ready to answer searches? The checks behind ``/ready``.

``/health`` says only that the process is alive (a restart fixes nothing else); ``/ready``
says whether traffic should come here: the catalog answers, every collection's index is
loaded and holds as many faces as the catalog, the model files match their pinned SHA-256,
and the home's disk has room above a floor. Reasons are short and name no collection or
person: the endpoint is public so that load balancers and container runtimes can use it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from facesearch.errors import FacesearchError

if TYPE_CHECKING:
    from facesearch.services.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or the reason it failed

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {state}" for name, state in self.checks.items() if state != "ok")

    def to_dict(self) -> dict:
        body = {"status": "ready" if self.ready else "not ready", "checks": self.checks}
        if not self.ready:
            body["reason"] = self.reason
        return body


class ModelCheck:
    """Hash the pack's model files once per change of their size/mtime (hashing costs ~0.1 s per file)."""

    def __init__(self) -> None:
        self._seen: tuple | None = None
        self._state = "not checked"
        self._lock = threading.Lock()

    def __call__(self, pack_name: str) -> str:
        from facesearch.models import load_pack

        with self._lock:
            try:
                pack = load_pack(pack_name, verify=False)
                stamp = (pack_name, *((f.path, f.path.stat().st_size, f.path.stat().st_mtime_ns) for f in pack.files()))
                if stamp != self._seen:
                    pack.verify()
                    self._seen, self._state = stamp, "ok"
            except (FacesearchError, OSError) as exc:
                self._seen, self._state = None, f"model files do not verify ({type(exc).__name__})"
                log.warning("readiness: model pack %s does not verify: %s", pack_name, exc)
            return self._state


def disk_check(home: Path, floor_bytes: int) -> str:
    free = shutil.disk_usage(home).free
    if free < floor_bytes:
        return f"{free // (1024 * 1024)} MiB free, below the floor of {floor_bytes // (1024 * 1024)} MiB"
    return "ok"


def check(engine: Engine, *, models: ModelCheck, disk_floor_bytes: int) -> Readiness:
    result = Readiness()
    try:
        collections = engine.collections()
        result.checks["catalog"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
        log.warning("readiness: catalog unreachable: %s", exc)
        result.checks["catalog"] = f"unreachable ({type(exc).__name__})"
        collections = []
    if result.checks["catalog"] == "ok":
        result.checks["index"] = _index_check(engine, collections)
    result.checks["models"] = models(engine.config.pack)
    try:
        result.checks["disk"] = disk_check(engine.home, disk_floor_bytes)
    except OSError as exc:
        result.checks["disk"] = f"cannot stat the home ({exc.strerror})"
    return result


def _index_check(engine: Engine, collections) -> str:
    disagree = 0
    for info in collections:
        try:
            index = engine.index_of(info)  # loads it, reconciled with the catalog if it changed
            with engine.mutex:
                held = len(index)
            if held != engine.catalog.faces_stamp(info.id)[0]:
                disagree += 1
        except Exception as exc:  # noqa: BLE001 - a failing backend (Milvus down) is "not ready"
            log.warning("readiness: index of collection %d failed to load: %s", info.id, exc)
            return f"an index failed to load ({type(exc).__name__})"
    if disagree:
        return f"{disagree} collection(s) whose index and catalog disagree"
    return "ok"
