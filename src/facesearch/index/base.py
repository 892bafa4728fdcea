"""The vector-index interface every backend implements, and the hits it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Hits:
    """Top-k results of a batch of queries: ``ids[q, r]`` (-1 = empty slot) and cosine ``scores``."""

    ids: np.ndarray  # (nq, k) int64
    scores: np.ndarray  # (nq, k) float32

    def row(self, q: int) -> list[tuple[int, float]]:
        return [(int(i), float(s)) for i, s in zip(self.ids[q], self.scores[q]) if i >= 0]


class VectorIndex(Protocol):
    """Unit-length embeddings keyed by catalog face id; cosine similarity = inner product."""

    dim: int

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray | list[int]) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> Hits: ...

    def ids(self) -> np.ndarray: ...

    def save(self) -> None: ...

    def drop(self) -> None: ...

    def describe(self) -> dict: ...


def empty_hits(nq: int, k: int) -> Hits:
    return Hits(np.full((nq, k), -1, np.int64), np.full((nq, k), -np.inf, np.float32))


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != dim:
        raise ValueError(f"query dimension {queries.shape[1]} does not match the index ({dim})")
    return queries
