"""Embedded FAISS backend: exact while small, binary sign codes + exact re-ranking when big.

Why this design: different people's face embeddings are nearly orthogonal, which defeats
graph (HNSW) and coarse-quantiser (IVF-PQ) indexes: on such data they lost 9-30 % of
true mates (``docs/index.md``). A 512-bit sign code of a randomly rotated embedding keeps
the angular order well enough that the true mate is virtually always in a short Hamming
shortlist, and the shortlist is re-ranked with the exact float vectors. The Hamming scan
reads 64 bytes per face, 32x less than a float32 scan.

Two storages (``storage``): ``ram`` keeps every float32 vector in RAM (2 KB per face) and
rewrites the index on each save; ``mmap`` keeps only the sign codes and ids in RAM (~88 B per
face) and the re-rank vectors as fp16 in an append-only file read through a memory map
(1 KB per face on disk; the formats and their crash safety: ``faiss_storage``). ``auto`` (the
default) switches to ``mmap`` once an index reaches :data:`MMAP_THRESHOLD` faces, and keeps
an index that is already in the mmap format there.

Deletions are tombstones (the row stops being returned at once). ``ram`` compacts them on
save; ``mmap`` zeroes the removed rows in place and compacts when they pass
:data:`COMPACT_FRACTION` of the rows. Saves are atomic: ``CURRENT`` names one complete
generation at every instant, so a crash leaves the previous state intact.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import faiss
import numpy as np

from facesearch.index.base import Hits, as_queries, empty_hits
from facesearch.index.faiss_storage import (
    IdMap,
    MappedRows,
    append_at,
    mapped_paths,
    read_current,
    read_tail,
    remove_other_files,
    write_current,
    write_whole,
    writer_lock,
    zero_rows,
)

#: Below this many faces an exact scan is both fast and exact; above it, sign codes.
DEFAULT_EXACT_LIMIT = 100_000
#: Hamming shortlist re-ranked exactly per query.
DEFAULT_SHORTLIST = 256
#: ``storage="auto"``: from this many faces on, fp16 re-rank vectors memory-mapped from disk
#: (float32 in RAM would be 2 GB here; at 10M it would be 20 GB, more than this machine has).
MMAP_THRESHOLD = 1_000_000
#: ``mmap``: rows added but not yet saved wait in RAM as fp16; past this many they are written out.
PENDING_LIMIT = 262_144
#: ``mmap``: a save rewrites the files without the tombstoned rows once they are this share of all rows.
COMPACT_FRACTION = 0.25
STORAGES = ("auto", "ram", "mmap")
_ROTATION_SEED = 1234
_RERANK_CHUNK = 64
_BLOCK = 65_536


class FaissIndex:
    def __init__(self, directory: Path, dim: int = 512, exact_limit: int = DEFAULT_EXACT_LIMIT,
                 shortlist: int = DEFAULT_SHORTLIST, storage: str = "auto", mmap_threshold: int = MMAP_THRESHOLD,
                 pending_limit: int = PENDING_LIMIT) -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown FAISS storage {storage!r} (choose from {', '.join(STORAGES)})")
        self.directory = Path(directory)
        self.dim = dim
        self.exact_limit = exact_limit
        self.shortlist = shortlist
        self.storage = storage
        self.mmap_threshold = mmap_threshold
        self.pending_limit = pending_limit
        self._reset()
        self._load()

    def _reset(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._alive = np.zeros(0, bool)
        self._n = 0
        self._dead = 0
        self._map = IdMap()
        self._vectors = np.zeros((0, self.dim), np.float32)  # storage "ram"
        self._rows: MappedRows | None = None  # storage "mmap"
        self._codes: faiss.IndexBinaryFlat | None = None
        self._disk: dict | None = None  # the CURRENT this process's committed rows belong to
        self._unscrubbed: list[int] = []  # mmap rows removed since the last save, still on disk

    # -- state --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def mode(self) -> str:
        return "binary-rerank" if len(self) >= self.exact_limit else "exact"

    @property
    def storage_mode(self) -> str:
        """Where the re-rank vectors live now: ``ram`` (float32) or ``mmap`` (fp16 file)."""
        return "ram" if self._rows is None else "mmap"

    def ids(self) -> np.ndarray:
        return self._ids[:self._n][self._alive[:self._n]].copy()

    def describe(self) -> dict:
        codes = self.dim // 8 if self._codes is not None else 0
        mapped = self._rows is not None
        return {"backend": "faiss", "mode": self.mode, "storage": self.storage_mode, "faces": len(self),
                "tombstones": self._dead, "exact_limit": self.exact_limit, "shortlist": self.shortlist,
                "bytes_per_face": (0 if mapped else self.dim * 4) + 8 + codes,
                "disk_bytes_per_face": self.dim * 2 + 8 + self.dim // 8 if mapped else self.dim * 4 + 8}

    # -- writes ---------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = as_queries(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        fresh = self._map.lookup(ids) < 0
        if not fresh.all():  # re-adding an id replaces nothing: the catalog id is immutable
            ids, vectors = ids[fresh], vectors[fresh]
        if len(ids) == 0:
            return
        self._reserve(self._n + len(ids))
        start, end = self._n, self._n + len(ids)
        self._ids[start:end] = ids
        self._alive[start:end] = True
        self._map.assign(ids, np.arange(start, end))
        self._n = end
        if self._rows is not None:
            self._rows.append(vectors)
            self._codes.add(self._sign_codes(vectors))
            if self._rows.n_pending >= self.pending_limit:
                self._save_mapped()  # bounded RAM while a large gallery streams in
            return
        self._vectors[start:end] = vectors
        if self._codes is not None:
            self._codes.add(self._sign_codes(vectors))
        elif len(self) >= self.exact_limit:
            self._build_codes()
        if self.storage == "auto" and len(self) >= self.mmap_threshold:
            self._save_mapped()  # from here on the vectors live on disk

    def remove(self, ids) -> int:
        ids = np.asarray(ids, np.int64).reshape(-1)
        removed = 0
        committed = self._rows.n_committed if self._rows is not None else 0
        for face_id, pos in zip(ids.tolist(), self._map.lookup(ids).tolist()):
            if pos >= 0 and self._alive[pos]:
                self._alive[pos] = False
                self._map.discard(face_id)
                self._dead += 1
                removed += 1
                if pos < committed:
                    self._unscrubbed.append(pos)
        return removed

    def _reserve(self, capacity: int) -> None:
        if capacity <= len(self._ids):
            return
        new = max(capacity, int(len(self._ids) * 1.5) + 1024)
        for name, fill in (("_ids", 0), ("_alive", False)):
            grown = np.full(new, fill, getattr(self, name).dtype)
            grown[:self._n] = getattr(self, name)[:self._n]
            setattr(self, name, grown)
        if self._rows is None:
            vectors = np.zeros((new, self.dim), np.float32)
            vectors[:self._n] = self._vectors[:self._n]
            self._vectors = vectors

    # -- vectors, wherever they live ---------------------------------------------------------------

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        return self._vectors[positions] if self._rows is None else self._rows.gather(positions)

    def _block(self, lo: int, hi: int) -> np.ndarray:
        return self._vectors[lo:hi] if self._rows is None else self._rows.block(lo, hi)

    # -- search ----------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> Hits:
        queries = as_queries(queries, self.dim)
        nq = len(queries)
        if len(self) == 0 or k <= 0:
            return empty_hits(nq, max(k, 0))
        if self._codes is not None and len(self) >= self.exact_limit:
            return self._search_codes(queries, k)
        return self._search_exact(queries, k)

    def _search_exact(self, queries: np.ndarray, k: int) -> Hits:
        fetch = min(self._n, k + self._dead)
        if self._rows is None:
            scores, positions = faiss.knn(queries, self._vectors[:self._n], fetch, metric=faiss.METRIC_INNER_PRODUCT)
            return self._finish(positions, scores, k)
        scores = np.zeros((len(queries), 0), np.float32)
        positions = np.zeros((len(queries), 0), np.int64)
        for lo in range(0, self._n, _BLOCK):  # block by block: the fp16 rows never sit in RAM whole
            hi = min(self._n, lo + _BLOCK)
            s, p = faiss.knn(queries, self._block(lo, hi), min(fetch, hi - lo), metric=faiss.METRIC_INNER_PRODUCT)
            scores, positions = np.hstack([scores, s]), np.hstack([positions, p + lo])
            order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
            scores, positions = np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)
        return self._finish(positions, scores, k)

    def _search_codes(self, queries: np.ndarray, k: int) -> Hits:
        fetch = min(self._n, max(self.shortlist, k) + self._dead)
        _, positions = self._codes.search(self._sign_codes(queries), fetch)
        scores = np.empty(positions.shape, np.float32)
        # Re-rank in chunks: gathering every shortlist at once costs queries x shortlist x 2 KB.
        for lo in range(0, len(queries), _RERANK_CHUNK):
            part = positions[lo:lo + _RERANK_CHUNK]
            gathered = self._gather(np.where(part >= 0, part, 0))
            scores[lo:lo + _RERANK_CHUNK] = np.einsum("qrd,qd->qr", gathered, queries[lo:lo + _RERANK_CHUNK])
        scores[positions < 0] = -np.inf
        order = np.argsort(-scores, axis=1)
        return self._finish(np.take_along_axis(positions, order, 1), np.take_along_axis(scores, order, 1), k)

    def _finish(self, positions: np.ndarray, scores: np.ndarray, k: int) -> Hits:
        hits = empty_hits(len(positions), k)
        for q in range(len(positions)):
            row = positions[q]
            valid = row >= 0
            keep = np.zeros_like(valid)
            keep[valid] = self._alive[row[valid]]
            chosen = np.where(keep)[0][:k]
            hits.ids[q, :len(chosen)] = self._ids[row[chosen]]
            hits.scores[q, :len(chosen)] = scores[q, chosen]
        return hits

    # -- codes -----------------------------------------------------------------------------------

    def _sign_codes(self, vectors: np.ndarray) -> np.ndarray:
        # The rotation is made when codes are first needed (a QR of 512x512: 0.1-0.3 s of every
        # `facesearch index` start-up otherwise, for an index that stays exact below exact_limit).
        return np.packbits(vectors @ _random_rotation(self.dim) > 0, axis=1)

    def _build_codes(self) -> None:
        self._codes = faiss.IndexBinaryFlat(self.dim)
        for lo in range(0, self._n, _BLOCK):
            self._codes.add(self._sign_codes(self._block(lo, min(self._n, lo + _BLOCK))))

    def _code_rows(self, lo: int, hi: int) -> np.ndarray:
        if self._codes is None:
            self._build_codes()
        return self._codes.reconstruct_n(lo, hi - lo) if hi > lo else np.zeros((0, self.dim // 8), np.uint8)

    # -- persistence ------------------------------------------------------------------------------

    def save(self) -> None:
        """Make everything added and removed so far durable (atomic: see the module docstring)."""
        if self._rows is not None or self.storage == "mmap" or (
                self.storage == "auto" and len(self) >= self.mmap_threshold):
            self._save_mapped()
        else:
            self._save_ram()

    def _save_ram(self) -> None:
        """Compact tombstones and write a new generation of the ``ram`` format."""
        self._compact()
        with writer_lock(self.directory):
            info = read_current(self.directory)
            generation = (info["generation"] if info else 0) + 1
            stem = self.directory / f"gen-{generation:06d}"
            for suffix, array in (("ids", self._ids[:self._n]), ("vectors", self._vectors[:self._n])):
                write_whole(Path(f"{stem}.{suffix}.npy"), [array], npy=True)
            write_current(self.directory, {"generation": generation, "dim": self.dim, "count": self._n,
                                           "storage": "ram"})
            remove_other_files(self.directory, {f"{stem.name}.ids.npy", f"{stem.name}.vectors.npy"})
        if self._map.stale:
            self._map.rebuild(*self._alive_positions())

    def _compact(self) -> None:
        if self._dead == 0:
            return
        keep = self._alive[:self._n]
        ids, vectors = self._ids[:self._n][keep], self._vectors[:self._n][keep]
        self._ids, self._vectors, self._alive = ids.copy(), vectors.copy(), np.ones(len(ids), bool)
        self._n, self._dead = len(ids), 0
        self._map.rebuild(self._ids, np.arange(self._n))
        self._codes = None
        if len(self) >= self.exact_limit:
            self._build_codes()

    def _save_mapped(self) -> None:
        with writer_lock(self.directory):
            info = read_current(self.directory)
            # Append only to the very files this process loaded or last wrote. If another process has
            # appended to them since, take its rows in first; if it wrote a new generation (or the
            # format differs), write this process's view afresh.
            same = (self._rows is not None and info is not None and self._disk is not None
                    and info["storage"] == "mmap" and self._disk["storage"] == "mmap"
                    and info["generation"] == self._disk["generation"]
                    and info["count"] >= self._rows.n_committed)
            if same and (info["count"], info.get("save")) != (self._rows.n_committed, self._disk.get("save")):
                self._catch_up(info)
            if same and self._dead <= COMPACT_FRACTION * self._n:
                if self._rows.n_pending or self._unscrubbed:  # else nothing to write
                    self._append_mapped(info)
            else:
                self._rewrite_mapped(info)
        if self._map.stale:
            self._map.rebuild(*self._alive_positions())

    def _alive_positions(self) -> tuple[np.ndarray, np.ndarray]:
        keep = np.nonzero(self._alive[:self._n])[0]
        return self._ids[keep], keep

    def _catch_up(self, info: dict) -> None:
        """Another process appended rows (and maybe tombstones) to our generation: lay them after
        our committed rows and before our pending ones; a face both of us added is kept once."""
        start, end = self._rows.n_committed, int(info["count"])
        tail_ids, tail_codes, disk_dead = read_tail(self.directory, info, start)
        tail_alive = np.ones(end - start, bool)
        tail_alive[disk_dead[disk_dead >= start] - start] = False
        mine = np.arange(start, self._n)
        mine = mine[self._alive[mine] & ~np.isin(self._ids[mine], tail_ids[tail_alive])]
        alive = np.concatenate([self._alive[:start], tail_alive, np.ones(len(mine), bool)])
        alive[disk_dead[disk_dead < start]] = False  # its removals count as much as ours
        codes = np.concatenate([self._code_rows(0, start), tail_codes, self._code_rows(start, self._n)[mine - start]])
        rows = self._rows.pending_rows()[mine - start]
        self._ids = np.concatenate([self._ids[:start], tail_ids, self._ids[mine]])
        self._alive, self._n = alive, len(alive)
        self._dead = int((~alive).sum())
        self._map.rebuild(*self._alive_positions())
        self._codes = faiss.IndexBinaryFlat(self.dim)
        self._codes.add(codes)
        self._rows = MappedRows(self.dim, _map_rows(mapped_paths(self.directory, info["generation"])["rows"],
                                                    end, self.dim))
        self._rows.append(rows)
        self._disk = info

    def _append_mapped(self, info: dict) -> None:
        paths = mapped_paths(self.directory, info["generation"])
        row_bytes, code_bytes = self.dim * 2, self.dim // 8
        # 1. Zero the removed rows first: a crash before step 3 leaves zeros under a live id (never
        #    returned once the catalog is reconciled), never a removed face's vector on disk.
        unscrubbed = np.array(self._unscrubbed, np.int64)
        zero_rows(paths["rows"], unscrubbed, row_bytes)
        zero_rows(paths["codes"], unscrubbed, code_bytes)
        # 2. Append the rows added since (the removed ones among them as zeros), fsynced.
        start, end = self._rows.n_committed, self._n
        if end > start:
            dead = ~self._alive[start:end]
            rows, codes = self._rows.pending_rows().copy(), self._code_rows(start, end)
            rows[dead], codes[dead] = 0, 0
            append_at(paths["ids"], start * 8, self._ids[start:end])
            append_at(paths["codes"], start * code_bytes, codes)
            append_at(paths["rows"], start * row_bytes, rows)
        # 3. Only now the new count and the tombstones become the committed state.
        save_no = info.get("save", 0) + 1
        dead_positions = np.nonzero(~self._alive[:self._n])[0]
        dead_name = f"gen-{info['generation']:06d}.dead-{save_no:06d}.npy" if len(dead_positions) else None
        if dead_name:
            write_whole(self.directory / dead_name, [dead_positions], npy=True)
        self._commit(info["generation"], self._n, dead_name, save_no)

    def _rewrite_mapped(self, info: dict | None) -> None:
        """Write a new generation holding only the live rows: compaction, a migration from the ``ram``
        format, or this process's view after another process wrote a new generation."""
        generation = (info["generation"] if info else 0) + 1
        paths = mapped_paths(self.directory, generation)
        ids, keep = self._alive_positions()
        parts = [np.zeros((0, self.dim // 8), np.uint8)]
        for lo in range(0, self._n, _BLOCK):
            hi = min(self._n, lo + _BLOCK)
            parts.append(self._code_rows(lo, hi)[self._alive[lo:hi]])
        codes = np.concatenate(parts)
        write_whole(paths["ids"], [ids])
        write_whole(paths["codes"], [codes])
        write_whole(paths["rows"], (self._gather(keep[lo:lo + _BLOCK]).astype(np.float16)
                                    for lo in range(0, len(keep), _BLOCK)))
        self._ids, self._alive, self._n, self._dead = ids.copy(), np.ones(len(ids), bool), len(ids), 0
        self._map.rebuild(self._ids, np.arange(self._n))
        self._codes = faiss.IndexBinaryFlat(self.dim)
        self._codes.add(codes)
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._commit(generation, self._n, None, 0)

    def _commit(self, generation: int, count: int, dead_name: str | None, save_no: int) -> None:
        info = {"generation": generation, "dim": self.dim, "count": count, "storage": "mmap",
                "dead": dead_name, "save": save_no}
        write_current(self.directory, info)
        paths = mapped_paths(self.directory, generation)
        remove_other_files(self.directory, {p.name for p in paths.values()} | {dead_name})
        self._rows = MappedRows(self.dim, _map_rows(paths["rows"], count, self.dim))
        self._disk, self._unscrubbed = info, []

    def _load(self) -> None:
        info = read_current(self.directory)
        if info is None:
            if self.storage == "mmap":
                self._rows, self._codes = MappedRows(self.dim), faiss.IndexBinaryFlat(self.dim)
            return
        if info.get("dim", self.dim) != self.dim:
            raise ValueError(f"{self.directory}: stored dimension {info['dim']} != {self.dim}")
        count, dead = int(info["count"]), np.zeros(0, np.int64)
        if info["storage"] == "mmap":
            paths = mapped_paths(self.directory, info["generation"])
            ids = _read_exactly(paths["ids"], np.int64, count)
            codes = _read_exactly(paths["codes"], np.uint8, count * (self.dim // 8)).reshape(count, -1)
            rows = _map_rows(paths["rows"], count, self.dim)
            if info.get("dead"):
                dead = np.load(self.directory / info["dead"])
            mapped = self.storage != "ram"
        else:  # the original format: float32 .npy files, readable either way (no copy when mapped)
            stem = self.directory / f"gen-{info['generation']:06d}"
            ids, codes = np.load(f"{stem}.ids.npy").astype(np.int64), None
            mapped = self.storage == "mmap" or (self.storage == "auto" and len(ids) >= self.mmap_threshold)
            rows = np.load(f"{stem}.vectors.npy", mmap_mode="r" if mapped else None)
            count = len(ids)
            if rows.shape[1] != self.dim:
                raise ValueError(f"{self.directory}: stored dimension {rows.shape[1]} != {self.dim}")
        self._ids, self._alive, self._n = ids, np.ones(count, bool), count
        self._alive[dead] = False
        self._dead = int(len(dead))
        self._map.rebuild(*self._alive_positions())
        self._disk = info
        if mapped:
            self._rows = MappedRows(self.dim, rows)
            self._codes = faiss.IndexBinaryFlat(self.dim)
            if codes is not None:
                self._codes.add(codes)
            else:
                self._build_codes()
        else:
            self._vectors = np.ascontiguousarray(rows, np.float32)
            if len(self) >= self.exact_limit:
                self._build_codes()

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self._reset()
        self._load()


def _read_exactly(path: Path, dtype, count: int) -> np.ndarray:
    data = np.fromfile(path, dtype, count=count) if count else np.zeros(0, dtype)
    if len(data) != count:
        raise ValueError(f"{path}: {len(data)} entries where CURRENT commits {count}")
    return data


def _map_rows(path: Path, count: int, dim: int) -> np.ndarray:
    if count == 0:
        return np.zeros((0, dim), np.float16)
    return np.memmap(path, np.float16, "r", shape=(count, dim))


@functools.lru_cache(maxsize=4)
def _random_rotation(dim: int) -> np.ndarray:
    """A fixed random orthogonal matrix: balances the sign bits across dimensions."""
    rng = np.random.default_rng(_ROTATION_SEED)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)
