"""Clustering quality against known identities: pairwise and BCubed precision / recall.

Convention (it decides the numbers, so it is spelled out): a face labelled ``-1`` (unassigned)
counts as a cluster of its own. Leaving a face unassigned is therefore never a precision
error, only a recall error when the face has true mates. This is also the right reading of a
dataset like LFW, where most people have exactly one photo and the correct answer for them
is "no cluster".

- Pairwise: every unordered pair of faces is a decision. Precision = same-cluster pairs that
  are same-identity / same-cluster pairs; recall = same-identity pairs that are
  same-cluster / same-identity pairs. Dominated by large identities (a person with 530
  photos has 140k pairs), so it is reported next to BCubed, not instead of it.
- BCubed (Bagga & Baldwin 1998; Amigó et al. 2009): per face, precision = share of its
  cluster that has its identity, recall = share of its identity that is in its cluster;
  both averaged over faces, F = harmonic mean of the two averages. Every face weighs the
  same, so small identities count.

Both are computed from the contingency table of (identity, cluster) counts: O(n log n), no
pair enumeration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _dense(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be one-dimensional")
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _predicted(labels) -> np.ndarray:
    """Cluster ids with every ``-1`` turned into a singleton cluster of its own."""
    pred = np.asarray(labels, np.int64).copy()
    free = pred < 0
    if free.any():
        base = int(pred.max(initial=-1)) + 1
        pred[free] = base + np.arange(int(free.sum()))
    return _dense(pred)


def _contingency(truth, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cell counts, cell truth id, cell cluster id, truth sizes, cluster sizes)."""
    t = _dense(truth)
    p = _predicted(labels)
    if len(t) != len(p):
        raise ValueError(f"truth has {len(t)} faces, labels {len(p)}")
    cells, counts = np.unique(t * (int(p.max(initial=0)) + 1) + p, return_counts=True)
    width = int(p.max(initial=0)) + 1
    return counts, cells // width, cells % width, np.bincount(t), np.bincount(p)


def pairwise_scores(truth, labels) -> Scores:
    """Pairwise precision and recall; ``-1`` labels are singletons.

    With no predicted pair at all precision is 1.0 (nothing claimed, nothing wrong); with no
    true pair recall is 1.0.
    """
    counts, _, _, true_sizes, pred_sizes = _contingency(truth, labels)

    def pairs(x: np.ndarray) -> float:
        x = x.astype(np.float64)
        return float((x * (x - 1) / 2).sum())

    tp, predicted, actual = pairs(counts), pairs(pred_sizes), pairs(true_sizes)
    return Scores(tp / predicted if predicted else 1.0, tp / actual if actual else 1.0)


def bcubed_scores(truth, labels) -> Scores:
    """BCubed precision and recall averaged over faces; ``-1`` labels are singletons."""
    counts, t_of, p_of, true_sizes, pred_sizes = _contingency(truth, labels)
    n = float(true_sizes.sum())
    if n == 0:
        return Scores(1.0, 1.0)
    sq = counts.astype(np.float64) ** 2
    # Each of the ``c`` faces of a cell has precision c / |cluster| and recall c / |identity|.
    precision = float((sq / pred_sizes[p_of]).sum() / n)
    recall = float((sq / true_sizes[t_of]).sum() / n)
    return Scores(precision, recall)


@dataclass(frozen=True)
class BandScores:
    """Scores of the faces whose person has ``low``..``high`` faces in the set (``high`` None = no limit)."""

    low: int
    high: int | None
    faces: int
    people: int
    bcubed: Scores
    pairwise: Scores  # over the pairs that start at a face of the band (each face's cluster- and person-mates)
    unassigned: float  # share of the band's faces in no cluster

    @property
    def name(self) -> str:
        return f"{self.low}" if self.high == self.low else f"{self.low}+" if self.high is None else \
            f"{self.low}-{self.high}"


def band_scores(truth, labels, bands: list[tuple[int, int | None]]) -> list[BandScores]:
    """BCubed and pairwise precision / recall per band of true identity size (``-1`` labels are singletons).

    BCubed is averaged over the band's faces; pairwise counts, for each face of the band, the
    other faces of its cluster (predicted pairs) and of its person (true pairs).
    """
    t = _dense(truth)
    p = _predicted(labels)
    width = int(p.max(initial=0)) + 1
    cell = t * width + p
    cells, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    n_ct = counts[inverse].astype(np.float64)  # each face: faces of its cell
    true_size = np.bincount(t)[t].astype(np.float64)
    pred_size = np.bincount(p)[p].astype(np.float64)
    free = np.asarray(labels) < 0
    out = []
    for low, high in bands:
        band = (true_size >= low) & ((true_size <= high) if high is not None else True)
        if not band.any():
            continue
        b3 = Scores(float(np.mean(n_ct[band] / pred_size[band])), float(np.mean(n_ct[band] / true_size[band])))
        tp, predicted, actual = (float(np.sum(n_ct[band] - 1)), float(np.sum(pred_size[band] - 1)),
                                 float(np.sum(true_size[band] - 1)))
        pw = Scores(tp / predicted if predicted else 1.0, tp / actual if actual else 1.0)
        out.append(BandScores(low, high, int(band.sum()), len(np.unique(t[band])), b3, pw,
                              float(np.mean(free[band]))))
    return out
