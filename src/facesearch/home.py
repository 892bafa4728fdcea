"""A facesearch home: where the catalog, the indexes and the thumbnails of one installation live.

``--home DIR`` > ``$FACESEARCH_HOME`` > ``~/.facesearch``. ``config.json`` in the home
records the choices made when it was created (index backend, database URL, pack), so
later commands need no flags. One writer at a time: ``write.lock`` (an OS file lock,
released by the kernel when a process dies, even by kill -9).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from facesearch.errors import FacesearchError


class HomeBusyError(FacesearchError):
    """Another process is writing to this home."""


@dataclass(frozen=True)
class HomeConfig:
    backend: str = "faiss"
    database_url: str | None = None  # None: SQLite file in the home
    milvus_uri: str | None = None  # None: milvus-lite file in the home
    milvus_token: str | None = None  # FACESEARCH_MILVUS_TOKEN(_FILE) only: never written to config.json
    pack: str = "buffalo_s"


def resolve_home(home: str | os.PathLike | None) -> Path:
    chosen = home or os.environ.get("FACESEARCH_HOME") or Path.home() / ".facesearch"
    return Path(chosen).expanduser().resolve()


def load_config(home: Path, overrides: dict | None = None) -> HomeConfig:
    """Read ``config.json`` (writing it on first use), then ``FACESEARCH_*`` settings, then non-None overrides.

    Settings from the environment (or ``*_FILE`` secret files) are never written to config.json:
    a database password handed over by a secret file stays out of the home.
    """
    from facesearch.settings import environment_overrides
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    fields = {**asdict(HomeConfig()), **stored}
    if not path.is_file():
        fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
        tmp = path.with_suffix(".tmp")
        written = {k: v for k, v in fields.items() if k != "milvus_token"}  # secrets: by env or file only
        tmp.write_text(json.dumps(written, indent=2) + "\n")
        os.replace(tmp, path)
    fields = {**asdict(HomeConfig()), **stored}
    fields.update({k: v for k, v in environment_overrides(home).items() if k in fields})
    fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return HomeConfig(**{k: fields[k] for k in asdict(HomeConfig())})


class WriteLock:
    """Exclusive writer lock on a home. ``wait=False`` refuses at once if it is taken."""

    def __init__(self, home: Path) -> None:
        self.path = home / "write.lock"
        self._fh = None

    def acquire(self, wait: bool = True, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None) -> None:
        self._fh = open(self.path, "a+")
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder()
                if not wait or (timeout is not None and time.monotonic() - start > timeout):
                    self._fh.close()
                    self._fh = None
                    raise HomeBusyError(f"{self.path.parent}: another facesearch process ({holder}) is "
                                        "writing to this home; try again when it has finished") from None
                if on_wait and not told:
                    on_wait(f"waiting for another facesearch process ({holder}) to finish writing...")
                    told = True
                time.sleep(0.2)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}\n")
        self._fh.flush()

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "pid unknown"
        except OSError:
            return "pid unknown"

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
