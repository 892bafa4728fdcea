"""Opt-out: people who asked not to be found. Their embeddings form an exclusion list that
is never searchable; search results and new ingests drop any face matching it.

The list stores an embedding and a request reference only: no photo, no name.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, func, select

from facesearch.catalog import Catalog
from facesearch.governance.schema import OptOut
from facesearch.models.calibration import Calibration, threshold_at_fmr

#: Suppress at a permissive operating point: a missed opt-out is worse than a hidden lead.
OPTOUT_FMR = 1e-3
FALLBACK_OPTOUT_THRESHOLD = 0.25


def optout_threshold(calibration: Calibration | None) -> float:
    return threshold_at_fmr(calibration, OPTOUT_FMR, FALLBACK_OPTOUT_THRESHOLD)


class OptOutList:
    def __init__(self, catalog: Catalog, pack: str, threshold: float) -> None:
        self.catalog = catalog
        self.pack = pack
        self.threshold = threshold
        self._matrix: np.ndarray | None = None
        self._stamp: tuple = ()

    def add(self, embedding: np.ndarray, reference: str, created_by: str) -> int:
        with self.catalog.session() as s:
            row = OptOut(embedding=np.asarray(embedding, "<f4").tobytes(), pack=self.pack, reference=reference,
                         created_by=created_by)
            s.add(row)
            s.commit()
        self._matrix = None
        return row.id

    def remove(self, optout_id: int) -> None:
        with self.catalog.session() as s:
            s.execute(delete(OptOut).where(OptOut.id == optout_id))
            s.commit()
        self._matrix = None

    def entries(self) -> list[dict]:
        with self.catalog.session() as s:
            return [{"id": r.id, "reference": r.reference, "created_by": r.created_by,
                     "created_at": r.created_at.isoformat()} for r in s.scalars(select(OptOut).order_by(OptOut.id))]

    def matrix(self) -> np.ndarray:
        # A stamp query per use: an opt-out registered by another process applies at once.
        with self.catalog.session() as s:
            stamp = tuple(s.execute(select(func.count(OptOut.id), func.max(OptOut.id))
                                    .where(OptOut.pack == self.pack)).one())
            if self._matrix is None or stamp != self._stamp:
                rows = list(s.scalars(select(OptOut.embedding).where(OptOut.pack == self.pack)))
                self._matrix = (np.stack([np.frombuffer(r, "<f4") for r in rows]) if rows
                                else np.zeros((0, 512), np.float32))
                self._stamp = stamp
        return self._matrix

    def blocked(self, embeddings: np.ndarray) -> np.ndarray:
        """Mask of the embeddings that match any opted-out person."""
        matrix = self.matrix()
        embeddings = np.atleast_2d(embeddings)
        if len(matrix) == 0 or len(embeddings) == 0:
            return np.zeros(len(embeddings), bool)
        return (embeddings @ matrix.T).max(axis=1) >= self.threshold
