"""k-nearest-neighbour search and graphs over unit-length face embeddings (cosine = inner product).

Two regimes, chosen by size (``exact_limit``):

- **exact**: blocked brute force through FAISS (``faiss.knn``: BLAS in tiles, a heap per
  query, never an n x n matrix). Memory O(n k), time O(n^2 d): about 2 s for LFW's 13k faces
  on 2 cores, but about 20 minutes at 200k -- quadratic, so it stops at the limit.
- **buckets** (an IVF self-join): spherical k-means cells trained on a sample; every face is
  filed in its ``assign`` nearest cells, and two faces are compared only when they share a
  cell. The batch graph is one matrix product per cell (BLAS, so it runs near the machine's
  peak, about 10x faster than a per-query IVF scan here) and cost falls from n^2 to about
  n^2 assign^2 / nlist; a new face is compared with the members of its own cells only.
  This is approximate, and face embeddings are a bad case for coarse cells (different
  people are nearly orthogonal; ``docs/index.md``): filing each face in several cells on both
  sides is what keeps recall usable, and recall still falls as the number of cells grows.
  ``bench/cluster_lfw.py --synthetic`` measures it against exact search and prints it next to
  every result. Measured (``docs/cluster_lfw_output.txt``): on LFW (64 cells) clustering lost
  nothing measurable; at 1M synthetic faces (4,096 cells, 6 per face) 93-94 % of the faces
  that have an above-threshold mate keep at least one, and clustering BCubed F fell to 0.954
  from 0.981 on the exact graph. That graph took about 450 s of CPU (about 10 min wall on
  the 2 shared, loaded cores here; 153 s on 16 cores).

Both return only neighbours at or above ``min_sim`` when given (the clustering never uses
weaker edges), padded with ``-1`` / ``-inf``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

#: Up to this many faces the graph is exact.
DEFAULT_EXACT_LIMIT = 100_000
#: Cells each face is filed in beyond the exact limit (cost grows with its square).
DEFAULT_ASSIGN = 6
#: Faces per cell, on average, before multiple assignment: nlist = n / this.
DEFAULT_CELL_SIZE = 256
_QUERY_BATCH = 16_384
_SEED = 1234


def _rows(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"embedding dimension {vectors.shape[1]} != {dim}")
    return vectors


def default_nlist(n: int, cell_size: int = DEFAULT_CELL_SIZE) -> int:
    """A power of two near ``n / cell_size`` (1M faces -> 4096 cells)."""
    return int(2 ** max(4, round(np.log2(max(n, 1) / cell_size))))


def directed_top_k(n: int, src: np.ndarray, dst: np.ndarray, sim: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` strongest distinct partners from directed candidates ``src -> dst``."""
    # Sort by row, then similarity (descending; one int64 key at 2^-22 resolution), then partner.
    level = np.round((1.0 - np.clip(sim.astype(np.float64), -1, 1)) * 2 ** 22).astype(np.int64)
    order = np.lexsort((dst, src.astype(np.int64) << 24 | level))
    src, dst, sim = src[order], dst[order], sim[order]
    # A pair met in several cells repeats with the same similarity: adjacent after the sort.
    fresh = np.ones(len(src), bool)
    fresh[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    src, dst, sim = src[fresh], dst[fresh], sim[fresh]
    rank = np.arange(len(src)) - np.searchsorted(src, np.arange(n))[src]
    keep = rank < k
    ids = np.full((n, k), -1, np.int64)
    sims = np.full((n, k), -np.inf, np.float32)
    ids[src[keep], rank[keep]] = dst[keep]
    sims[src[keep], rank[keep]] = sim[keep]
    return sims, ids


def strongest_in_block(block: np.ndarray, min_sim: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each row's entries at or above ``min_sim``, at most its ``k`` strongest."""
    hits = block >= min_sim
    many = np.nonzero(hits.sum(axis=1) > k)[0]
    if len(many) == 0:
        return np.nonzero(hits)
    hits[many] = False
    r, c = np.nonzero(hits)
    top = np.argpartition(-block[many], k - 1, axis=1)[:, :k]
    strong = block[many[:, None], top] >= min_sim
    return (np.concatenate([r, np.repeat(many, k)[strong.ravel()]]),
            np.concatenate([c, top.ravel()[strong.ravel()]]))


class NeighbourIndex:
    """A growable k-NN index over unit vectors; positions (0..n-1) are the ids it returns.

    Exact while ``len(self) <= exact_limit``; the first ``add`` that takes it past the limit
    trains the cells on a sample of everything stored so far and moves to buckets.
    """

    def __init__(self, dim: int = 512, exact_limit: int = DEFAULT_EXACT_LIMIT, assign: int = DEFAULT_ASSIGN,
                 nlist: int | None = None) -> None:
        self.dim = dim
        self.exact_limit = exact_limit
        self.assign = assign
        self.nlist = nlist
        self._x = np.zeros((0, dim), np.float32)
        self._n = 0
        self._centroids: np.ndarray | None = None
        self._cells: np.ndarray = np.zeros((0, assign), np.int32)  # each face's cells
        self._members: list[np.ndarray] = []  # cell -> member positions (sorted)

    def __len__(self) -> int:
        return self._n

    @property
    def mode(self) -> str:
        return "buckets" if self._centroids is not None else "exact"

    def describe(self) -> str:
        self._ready()
        if self._centroids is None:
            return f"exact (FAISS blocked brute force, {self._n:,} faces)"
        return (f"buckets (IVF self-join: {len(self._centroids):,} spherical k-means cells, each face in "
                f"{self.assign}, {self._n:,} faces; approximate)")

    @property
    def vectors(self) -> np.ndarray:
        return self._x[:self._n]

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Store ``vectors``; returns their positions.

        The first add into an empty index keeps a float32 C-contiguous array as it is, without
        a copy (a million faces are 2 GB): do not modify it afterwards.
        """
        vectors = _rows(vectors, self.dim)
        start, m = self._n, len(vectors)
        if start == 0:
            self._x = vectors
        else:
            if start + m > len(self._x):
                grown = np.zeros((max(start + m, int(len(self._x) * 1.25) + 1024), self.dim), np.float32)
                grown[:start] = self._x[:start]
                self._x = grown
            self._x[start:start + m] = vectors
        self._n += m
        if self._centroids is not None:
            self._file(np.arange(start, self._n))
        return np.arange(start, self._n)

    def _ready(self) -> None:
        """Move to buckets once past the limit (lazily: a graph given from outside needs no cells)."""
        if self._centroids is None and self._n > self.exact_limit:
            self._train()

    # -- buckets ------------------------------------------------------------------------------

    def _train(self) -> None:
        nlist = self.nlist or default_nlist(self._n)
        rng = np.random.default_rng(_SEED)
        sample = self._x[np.sort(rng.choice(self._n, min(self._n, 40 * nlist), replace=False))]
        kmeans = faiss.Kmeans(self.dim, nlist, niter=6, spherical=True, seed=_SEED, max_points_per_centroid=40,
                              verbose=False)
        kmeans.train(sample)
        self._centroids = np.ascontiguousarray(kmeans.centroids, np.float32)
        self._cells = np.zeros((0, self.assign), np.int32)
        self._members = [np.zeros(0, np.int64) for _ in range(nlist)]
        self._file(np.arange(self._n))

    def _cells_of(self, vectors: np.ndarray) -> np.ndarray:
        _, cells = faiss.knn(vectors, self._centroids, self.assign, metric=faiss.METRIC_INNER_PRODUCT)
        return cells.astype(np.int32)

    def _file(self, positions: np.ndarray, cells: np.ndarray | None = None) -> None:
        if len(positions) == 0:
            return
        if cells is None:
            cells = np.concatenate([self._cells_of(self._x[lo:hi])
                                    for lo, hi in _chunks(positions[0], positions[-1] + 1, 100_000)])
        self._cells = np.concatenate([self._cells, cells])
        flat = cells.ravel()
        order = np.argsort(flat, kind="stable")
        owners = positions[order // self.assign]
        bounds = np.searchsorted(flat[order], np.arange(len(self._centroids) + 1))
        for cell in np.nonzero(np.diff(bounds))[0].tolist():
            self._members[cell] = np.concatenate([self._members[cell], owners[bounds[cell]:bounds[cell + 1]]])

    def state(self) -> dict[str, np.ndarray]:
        """The cells (not the vectors): enough, with the same vectors, to :meth:`restore` this index."""
        if self._centroids is None:
            return {}
        return {"centroids": self._centroids, "cells": self._cells}

    def restore(self, vectors: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Reload into an empty index: ``vectors`` in their original order plus :meth:`state`'s cells."""
        if self._n:
            raise ValueError("restore needs an empty index")
        self._x = _rows(vectors, self.dim).copy()
        self._n = len(self._x)
        if "centroids" not in state:
            return
        self._centroids = np.ascontiguousarray(state["centroids"], np.float32)
        cells = np.asarray(state["cells"], np.int32)
        if len(cells) != self._n or cells.shape[1] != self.assign:
            raise ValueError("the saved cells do not match these vectors or this index's assign")
        self._cells = np.zeros((0, self.assign), np.int32)
        self._members = [np.zeros(0, np.int64) for _ in range(len(self._centroids))]
        self._file(np.arange(self._n), cells)

    # -- search -------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, min_sim: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """``(sims, ids)``, each ``(nq, k)``, best first; empty slots are ``-inf`` / ``-1``."""
        queries = _rows(queries, self.dim)
        sims = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        kk = min(k, self._n)
        if kk == 0 or len(queries) == 0:
            return sims, ids
        self._ready()
        if self._centroids is None:
            for lo, hi in _chunks(0, len(queries), _QUERY_BATCH):
                s, i = faiss.knn(queries[lo:hi], self.vectors, kk, metric=faiss.METRIC_INNER_PRODUCT)
                sims[lo:hi, :kk], ids[lo:hi, :kk] = np.where(i >= 0, s, -np.inf), i
        elif not np.isfinite(min_sim):
            for q in range(len(queries)):  # no floor: every candidate of the query's cells is ranked
                cand = np.unique(np.concatenate([self._members[c] for c in self._cells_of(queries[q:q + 1])[0]]))
                s = self._x[cand] @ queries[q]
                top = np.argsort(-s, kind="stable")[:kk]
                sims[q, :len(top)], ids[q, :len(top)] = s[top], cand[top]
        else:
            src, dst, sim = self._cell_products(queries, self._cells_of(queries), min_sim, k)
            sims, ids = directed_top_k(len(queries), src, dst, sim, k)
        weak = sims < min_sim
        sims[weak], ids[weak] = -np.inf, -1
        return sims, ids

    def self_graph(self, k: int, min_sim: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Every stored face's ``k`` nearest *other* faces at or above ``min_sim``."""
        self._ready()
        if self._centroids is None:
            sims, ids = self.search(self.vectors, k + 1, min_sim)
            return drop_self(sims, ids, np.arange(self._n), k)
        if not np.isfinite(min_sim):
            raise ValueError("a bucketed graph needs a similarity floor (min_sim)")
        # One matrix product per cell; each member keeps its k strongest partners at or above the floor.
        src, dst, sim = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        for members in self._members:
            if len(members) < 2:
                continue
            block = self._x[members]
            gram = block @ block.T
            np.fill_diagonal(gram, -np.inf)
            r, c = strongest_in_block(gram, min_sim, k)
            src.append(members[r])
            dst.append(members[c])
            sim.append(gram[r, c])
        return directed_top_k(self._n, np.concatenate(src), np.concatenate(dst), np.concatenate(sim), k)

    def _cell_products(self, queries: np.ndarray, cells: np.ndarray, min_sim: float, k: int):
        """(query row, member, cosine) for query-member pairs sharing a cell, at or above ``min_sim``
        (at most ``k`` per query and cell)."""
        flat = cells.ravel()
        order = np.argsort(flat, kind="stable")
        rows = order // cells.shape[1]
        bounds = np.searchsorted(flat[order], np.arange(len(self._centroids) + 1))
        src, dst, sim = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        for cell in np.nonzero(np.diff(bounds))[0].tolist():
            members = self._members[cell]
            if len(members) == 0:
                continue
            q = rows[bounds[cell]:bounds[cell + 1]]
            block = queries[q] @ self._x[members].T
            r, c = strongest_in_block(block, min_sim, k)
            src.append(q[r])
            dst.append(members[c])
            sim.append(block[r, c])
        return np.concatenate(src), np.concatenate(dst), np.concatenate(sim)


def _chunks(lo: int, hi: int, size: int):
    for start in range(lo, hi, size):
        yield start, min(hi, start + size)


@dataclass
class KnnGraph:
    """Each face's ``k`` nearest other faces: ``ids[i, r]`` (-1 = none) at cosine ``sims[i, r]``."""

    ids: np.ndarray  # (n, k) int64
    sims: np.ndarray  # (n, k) float32, descending per row
    mode: str  # how it was built
    seconds: float
    min_sim: float = -np.inf  # neighbours below it were not kept

    @property
    def k(self) -> int:
        return self.ids.shape[1]


def drop_self(sims: np.ndarray, ids: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own position from a ``k + 1`` result (or its last entry if absent)."""
    is_self = ids == own[:, None]
    first = is_self & (np.cumsum(is_self, axis=1) == 1)
    missing = ~first.any(axis=1)
    first[missing, -1] = True
    keep = ~first
    return sims[keep].reshape(len(ids), -1)[:, :k], ids[keep].reshape(len(ids), -1)[:, :k]


def build_knn_graph(embeddings: np.ndarray, k: int, *, min_sim: float = -np.inf,
                    exact_limit: int = DEFAULT_EXACT_LIMIT, assign: int = DEFAULT_ASSIGN,
                    nlist: int | None = None) -> KnnGraph:
    """The k-NN graph of ``embeddings`` (self excluded), exact or bucketed by size (module docstring)."""
    start = time.perf_counter()
    index = NeighbourIndex(_rows(embeddings).shape[1], exact_limit=exact_limit, assign=assign, nlist=nlist)
    index.add(embeddings)
    sims, ids = index.self_graph(k, min_sim)
    return KnnGraph(ids, sims, index.describe(), time.perf_counter() - start, min_sim)
