"""Embedded FAISS backend: exact while small, binary sign codes + exact re-ranking when big.

Why this design: different people's face embeddings are nearly orthogonal, which defeats
graph (HNSW) and coarse-quantiser (IVF-PQ) indexes: on such data they lost 9-30 % of
true mates (``docs/index.md``). A 512-bit sign code of a randomly rotated embedding keeps
the angular order well enough that the true mate is virtually always in a short Hamming
shortlist, and the shortlist is re-ranked with the exact float vectors. The Hamming scan
reads 64 bytes per face, 32x less than a float32 scan.

Deletions are tombstones (the row stops being returned at once) and are compacted on
save. Saves are atomic: a new generation of files is written, then ``CURRENT`` is
replaced, so a crash leaves the previous generation intact.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import faiss
import numpy as np

from facesearch.index.base import Hits, as_queries, empty_hits

#: Below this many faces an exact scan is both fast and exact; above it, sign codes.
DEFAULT_EXACT_LIMIT = 100_000
#: Hamming shortlist re-ranked exactly per query.
DEFAULT_SHORTLIST = 256
_ROTATION_SEED = 1234
_RERANK_CHUNK = 64


class FaissIndex:
    def __init__(self, directory: Path, dim: int = 512, exact_limit: int = DEFAULT_EXACT_LIMIT,
                 shortlist: int = DEFAULT_SHORTLIST) -> None:
        self.directory = Path(directory)
        self.dim = dim
        self.exact_limit = exact_limit
        self.shortlist = shortlist
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, dim), np.float32)
        self._alive = np.zeros(0, bool)
        self._n = 0
        self._position: dict[int, int] = {}
        self._dead = 0
        self._codes: faiss.IndexBinaryFlat | None = None
        self._load()

    # -- state --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def mode(self) -> str:
        return "binary-rerank" if len(self) >= self.exact_limit else "exact"

    def ids(self) -> np.ndarray:
        return self._ids[:self._n][self._alive[:self._n]].copy()

    def describe(self) -> dict:
        return {"backend": "faiss", "mode": self.mode, "faces": len(self), "tombstones": self._dead,
                "exact_limit": self.exact_limit, "shortlist": self.shortlist,
                "bytes_per_face": self.dim * 4 + 8 + (self.dim // 8 if self._codes is not None else 0)}

    # -- writes ---------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = as_queries(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        fresh = np.array([int(i) not in self._position for i in ids], bool)
        if not fresh.all():  # re-adding an id replaces nothing: the catalog id is immutable
            ids, vectors = ids[fresh], vectors[fresh]
        if len(ids) == 0:
            return
        self._reserve(self._n + len(ids))
        start, end = self._n, self._n + len(ids)
        self._ids[start:end] = ids
        self._vectors[start:end] = vectors
        self._alive[start:end] = True
        for offset, face_id in enumerate(ids.tolist()):
            self._position[face_id] = start + offset
        self._n = end
        if self._codes is not None:
            self._codes.add(self._sign_codes(vectors))
        elif len(self) >= self.exact_limit:
            self._build_codes()

    def remove(self, ids) -> int:
        removed = 0
        for face_id in np.asarray(ids, np.int64).reshape(-1).tolist():
            pos = self._position.pop(face_id, None)
            if pos is not None and self._alive[pos]:
                self._alive[pos] = False
                self._dead += 1
                removed += 1
        return removed

    def _reserve(self, capacity: int) -> None:
        if capacity <= len(self._ids):
            return
        new = max(capacity, int(len(self._ids) * 1.5) + 1024)
        for name, fill in (("_ids", 0), ("_alive", False)):
            grown = np.full(new, fill, getattr(self, name).dtype)
            grown[:self._n] = getattr(self, name)[:self._n]
            setattr(self, name, grown)
        vectors = np.zeros((new, self.dim), np.float32)
        vectors[:self._n] = self._vectors[:self._n]
        self._vectors = vectors

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
        scores, positions = faiss.knn(queries, self._vectors[:self._n], fetch, metric=faiss.METRIC_INNER_PRODUCT)
        return self._finish(positions, scores, k)

    def _search_codes(self, queries: np.ndarray, k: int) -> Hits:
        fetch = min(self._n, max(self.shortlist, k) + self._dead)
        _, positions = self._codes.search(self._sign_codes(queries), fetch)
        scores = np.empty(positions.shape, np.float32)
        # Re-rank in chunks: gathering every shortlist at once costs queries x shortlist x 2 KB.
        for lo in range(0, len(queries), _RERANK_CHUNK):
            part = positions[lo:lo + _RERANK_CHUNK]
            gathered = self._vectors[np.where(part >= 0, part, 0)]
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
        for lo in range(0, self._n, 100_000):
            self._codes.add(self._sign_codes(self._vectors[lo:min(self._n, lo + 100_000)]))

    # -- persistence ------------------------------------------------------------------------------

    def save(self) -> None:
        """Compact tombstones and write a new generation atomically."""
        self._compact()
        self.directory.mkdir(parents=True, exist_ok=True)
        generation = self._current_generation() + 1
        stem = self.directory / f"gen-{generation:06d}"
        for suffix, array in (("ids", self._ids[:self._n]), ("vectors", self._vectors[:self._n])):
            tmp = Path(f"{stem}.{suffix}.npy.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, array)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, f"{stem}.{suffix}.npy")
        pointer = self.directory / "CURRENT.tmp"
        pointer.write_text(json.dumps({"generation": generation, "dim": self.dim, "count": self._n}))
        with open(pointer, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(pointer, self.directory / "CURRENT")
        for old in self.directory.glob("gen-*.npy*"):
            if not old.name.startswith(stem.name):
                old.unlink(missing_ok=True)

    def _compact(self) -> None:
        if self._dead == 0:
            return
        keep = self._alive[:self._n]
        ids, vectors = self._ids[:self._n][keep], self._vectors[:self._n][keep]
        self._ids, self._vectors, self._alive = ids.copy(), vectors.copy(), np.ones(len(ids), bool)
        self._n, self._dead = len(ids), 0
        self._position = {int(face_id): pos for pos, face_id in enumerate(ids.tolist())}
        self._codes = None
        if len(self) >= self.exact_limit:
            self._build_codes()

    def _current_generation(self) -> int:
        pointer = self.directory / "CURRENT"
        if not pointer.is_file():
            return 0
        return int(json.loads(pointer.read_text())["generation"])

    def _load(self) -> None:
        generation = self._current_generation()
        if generation == 0:
            return
        stem = self.directory / f"gen-{generation:06d}"
        ids = np.load(f"{stem}.ids.npy")
        vectors = np.load(f"{stem}.vectors.npy")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"{self.directory}: stored dimension {vectors.shape[1]} != {self.dim}")
        self._ids, self._vectors = ids.astype(np.int64), np.ascontiguousarray(vectors, np.float32)
        self._alive = np.ones(len(ids), bool)
        self._n = len(ids)
        self._position = {int(face_id): pos for pos, face_id in enumerate(ids.tolist())}
        if len(self) >= self.exact_limit:
            self._build_codes()

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.__init__(self.directory, self.dim, self.exact_limit, self.shortlist)


@functools.lru_cache(maxsize=4)
def _random_rotation(dim: int) -> np.ndarray:
    """A fixed random orthogonal matrix: balances the sign bits across dimensions."""
    rng = np.random.default_rng(_ROTATION_SEED)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)
