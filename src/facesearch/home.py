"""A facesearch home: where the catalog, the indexes and the thumbnails of one installation live.

``--home DIR`` > ``$FACESEARCH_HOME`` > ``~/.facesearch``. ``config.json`` in the home
records the choices made when it was created (index backend, database URL, pack), so
later commands need no flags. One writer at a time: ``write.lock`` (an OS file lock,
released by the kernel when a process dies, even by kill -9).

Files at rest: a home holds password hashes, embeddings, face crops and a subject's contact
details, so it is its owner's only: the program sets its umask to 0o077 when it starts (CLI,
server, any :class:`~facesearch.services.engine.Engine`), the home directory is made 0700, and
:func:`check_permissions` (``facesearch doctor``) finds and fixes anything looser than
directories 0700 / files 0600.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    faiss_storage: str = "auto"  # auto | ram | mmap (fp16 re-rank vectors on disk): see faiss_index


#: what a process working on a home creates: owner-only directories (0700) and files (0600)
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make this process's umask owner-only (0o077); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


@dataclass
class PermissionReport:
    """Paths under a home (relative; "." is the home) readable or writable by group or others."""

    loose: list[tuple[str, str]] = field(default_factory=list)  # (path, mode as octal)
    fixed: bool = False

    @property
    def ok(self) -> bool:
        return not self.loose


def check_permissions(home: Path, repair: bool = False) -> PermissionReport:
    """Directories must be 0700 and files 0600 (no group or other bits); ``repair`` fixes them.
    Symbolic links are reported as they are, never followed."""
    report = PermissionReport()
    home = Path(home)
    if not home.is_dir():
        return report
    paths = [home]
    for root, dirs, files in os.walk(home):
        paths += [Path(root) / name for name in dirs + files]
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # removed while we looked (a temporary file)
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
            continue
        mode = stat.S_IMODE(info.st_mode)
        report.loose.append((path.relative_to(home).as_posix() or ".", f"{mode:04o}"))
        if repair:
            os.chmod(path, 0o700 if stat.S_ISDIR(info.st_mode) else mode & 0o700)
    report.fixed = repair and bool(report.loose)
    return report


def user_cache_dir() -> Path:
    """This user's cache of things facesearch can always make again (compiled models, eval
    embeddings): ``$XDG_CACHE_HOME/facesearch``, default ``~/.cache/facesearch``. Never home data."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facesearch"


def resolve_home(home: str | os.PathLike | None) -> Path:
    chosen = home or os.environ.get("FACESEARCH_HOME") or Path.home() / ".facesearch"
    return Path(chosen).expanduser().resolve()


def load_config(home: Path, overrides: dict | None = None) -> HomeConfig:
    """Read ``config.json`` (writing it on first use), then ``FACESEARCH_*`` settings, then non-None overrides.

    Settings from the environment (or ``*_FILE`` secret files) are never written to config.json:
    a database password handed over by a secret file stays out of the home.
    """
    from facesearch.settings import environment_overrides
    if not home.exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
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
