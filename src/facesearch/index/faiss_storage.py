"""On-disk formats of the FAISS backend, and the fp16 memory-mapped row store used at large scale.

Two formats live in an index directory, both named by ``CURRENT`` (a small JSON file replaced
atomically, so a reader always sees one complete generation):

- ``ram`` (the original): ``gen-G.ids.npy`` + ``gen-G.vectors.npy`` (float32), rewritten whole on
  every save; the process holds every vector in RAM.
- ``mmap``: append-only raw files ``gen-G.ids.i64``, ``gen-G.codes.u8`` (512-bit sign codes) and
  ``gen-G.rows.f16`` (fp16 re-rank vectors, 1 KB per 512-d face), plus ``gen-G.dead-S.npy`` (the
  tombstoned row positions). ``CURRENT`` records how many rows are committed: rows are appended
  and fsynced *before* the count that covers them is written, so bytes past the count (a write
  that died midway) are never read and are overwritten by the next append. Only the codes and
  ids are read into RAM; the fp16 rows are read through a memory map for the shortlist only.
  Compaction writes a whole new generation (temporary names, fsync, rename) before ``CURRENT``
  points at it. Rows of removed faces are overwritten with zeros in place before the removal is
  committed, so an erased face's vector does not survive on disk until the next compaction.

Writers also take ``LOCK`` (an OS file lock in the index directory) so two processes never
append to the same files at once. Rows are never rewritten in place except to zero them, so a
process keeps reading its own (possibly older) prefix of the files safely; a writer that finds
rows or tombstones committed by another process since it loaded takes them in before appending
its own. After another process compacted into a new generation, a writer writes its own view as
the next one (the engine's reconcile with the catalog, the source of truth, makes it whole).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CURRENT = "CURRENT"


def read_current(directory: Path) -> dict | None:
    pointer = directory / CURRENT
    if not pointer.is_file():
        return None
    info = json.loads(pointer.read_text())
    info.setdefault("storage", "ram")
    return info


def write_current(directory: Path, info: dict) -> None:
    """Replace ``CURRENT`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    tmp = directory / f"{CURRENT}.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(info))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / CURRENT)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on the index directory while its files are written."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "LOCK", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_whole(path: Path, blocks: Iterator[np.ndarray] | list[np.ndarray], *, npy: bool = False) -> None:
    """Write a file under a temporary name, fsync it, then rename it into place."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as fh:
        if npy:
            (array,) = blocks
            np.save(fh, array)
        else:
            for block in blocks:
                fh.write(np.ascontiguousarray(block).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_at(path: Path, offset: int, data: np.ndarray) -> None:
    """Write ``data`` at ``offset`` (dropping whatever an interrupted append left past it), then fsync."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, offset)
        view = memoryview(np.ascontiguousarray(data)).cast("B")
        while len(view):
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    finally:
        os.close(fd)


def zero_rows(path: Path, positions: np.ndarray, row_bytes: int) -> None:
    """Overwrite the given rows with zeros in place (erasure without a rewrite), then fsync."""
    if len(positions) == 0 or not path.is_file():
        return
    zeros = bytes(row_bytes)
    fd = os.open(path, os.O_WRONLY)
    try:
        for pos in np.unique(positions).tolist():
            os.pwrite(fd, zeros, pos * row_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def mapped_paths(directory: Path, generation: int) -> dict[str, Path]:
    stem = directory / f"gen-{generation:06d}"
    return {"ids": Path(f"{stem}.ids.i64"), "codes": Path(f"{stem}.codes.u8"), "rows": Path(f"{stem}.rows.f16")}


def read_tail(directory: Path, info: dict, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids and codes of the committed rows ``start:count`` of the generation ``info`` names, and its
    tombstoned positions."""
    paths, count, code_bytes = mapped_paths(directory, info["generation"]), int(info["count"]), info["dim"] // 8
    ids = np.fromfile(paths["ids"], np.int64, count=count - start, offset=start * 8)
    codes = np.fromfile(paths["codes"], np.uint8, count=(count - start) * code_bytes, offset=start * code_bytes)
    if len(ids) != count - start or len(codes) != (count - start) * code_bytes:
        raise ValueError(f"{directory}: shorter than CURRENT's {count} rows")
    dead = np.load(directory / info["dead"]) if info.get("dead") else np.zeros(0, np.int64)
    return ids, codes.reshape(-1, code_bytes), dead


def committed_files(directory: Path, info: dict) -> dict[str, int | None]:
    """The files of the generation ``info`` (a ``CURRENT``) names -> how many of their bytes it
    commits (``None``: all of them). A copy of these prefixes is a complete index."""
    generation = int(info["generation"])
    if info.get("storage", "ram") == "ram":
        stem = f"gen-{generation:06d}"
        return {f"{stem}.ids.npy": None, f"{stem}.vectors.npy": None}
    count, dim = int(info["count"]), int(info["dim"])
    paths = mapped_paths(directory, generation)
    files: dict[str, int | None] = {paths["ids"].name: count * 8, paths["codes"].name: count * (dim // 8),
                                    paths["rows"].name: count * dim * 2}
    if info.get("dead"):
        files[info["dead"]] = None
    return files


def copy_committed(source: Path, target: Path, info: dict) -> None:
    """Copy the committed part of the generation ``info`` names from ``source`` to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name, length in committed_files(source, info).items():
        with open(source / name, "rb") as src, open(target / name, "wb") as dst:
            left = length if length is not None else float("inf")
            while left > 0 and (block := src.read(int(min(left, 1 << 20)))):
                dst.write(block)
                left -= len(block)
        if length is not None and (target / name).stat().st_size != length:
            raise OSError(f"{source / name}: shorter than its committed {length} bytes")


def remove_other_files(directory: Path, keep: set[str]) -> None:
    """Delete every generation file (and stale temporaries) not named in ``keep``."""
    for path in directory.glob("gen-*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


class MappedRows:
    """fp16 re-rank rows: a committed prefix memory-mapped from disk, then rows added since the
    last save held in RAM (fp16) until the save appends them to the file."""

    def __init__(self, dim: int, committed: np.ndarray | None = None) -> None:
        self.dim = dim
        # np.memmap of the fp16 rows file, or (an old home) of a float32 ``.npy``: read-only either way
        self.committed = committed if committed is not None else np.zeros((0, dim), np.float16)
        self.pending = np.zeros((0, dim), np.float16)
        self.n_pending = 0

    @property
    def n_committed(self) -> int:
        return len(self.committed)

    def __len__(self) -> int:
        return self.n_committed + self.n_pending

    def append(self, vectors: np.ndarray) -> None:
        need = self.n_pending + len(vectors)
        if need > len(self.pending):
            grown = np.zeros((max(need, int(len(self.pending) * 1.5) + 1024), self.dim), np.float16)
            grown[:self.n_pending] = self.pending[:self.n_pending]
            self.pending = grown
        self.pending[self.n_pending:need] = vectors
        self.n_pending = need

    def pending_rows(self) -> np.ndarray:
        return self.pending[:self.n_pending]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """float32 rows at ``positions`` (any shape); disk rows are read in file order."""
        flat = positions.reshape(-1)
        out = np.empty((len(flat), self.dim), np.float32)
        on_disk = flat < self.n_committed
        if on_disk.any():
            where = np.nonzero(on_disk)[0]
            order = np.argsort(flat[where], kind="stable")  # ascending offsets: fewer, more sequential reads
            out[where[order]] = self.committed[flat[where][order]]
        if not on_disk.all():
            out[~on_disk] = self.pending[flat[~on_disk] - self.n_committed]
        return out.reshape(*positions.shape, self.dim)

    def block(self, lo: int, hi: int) -> np.ndarray:
        """float32 rows ``lo:hi`` (for exact scans and rewrites, a block at a time)."""
        nc = self.n_committed
        parts = []
        if lo < nc:
            parts.append(np.asarray(self.committed[lo:min(hi, nc)], np.float32))
        if hi > nc:
            parts.append(self.pending[max(lo, nc) - nc:hi - nc].astype(np.float32))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class IdMap:
    """id -> row position: a sorted numpy base (16 B per face, where a dict would cost ~100 B) and a
    dict of the changes since it was last rebuilt (-1: removed)."""

    REBUILD_AFTER = 100_000

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._values = np.zeros(0, np.int64)
        self._recent: dict[int, int] = {}

    def rebuild(self, ids: np.ndarray, positions: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self._keys, self._values, self._recent = ids[order], positions[order].astype(np.int64), {}

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` (-1 where absent)."""
        out = np.full(len(ids), -1, np.int64)
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, ids), len(self._keys) - 1)
            hit = self._keys[at] == ids
            out[hit] = self._values[at[hit]]
        if self._recent:
            get = self._recent.get
            for j, face_id in enumerate(ids.tolist()):
                out[j] = get(face_id, out[j])
        return out

    def assign(self, ids: np.ndarray, positions: np.ndarray) -> None:
        self._recent.update(zip(ids.tolist(), positions.tolist()))

    def discard(self, face_id: int) -> None:
        self._recent[face_id] = -1

    @property
    def stale(self) -> bool:
        return len(self._recent) > self.REBUILD_AFTER
