"""1:1 verification accuracy the way NIST FRTE reports it: TAR at fixed FAR, EER, DET curves.

Pairs: every same-person pair of the dataset and every different-person pair (or, above
``max_impostors``, a fixed-seed sample of that many). Scores go into fine histograms, so
millions of pairs cost constant memory. A rate is *resolved* only when at least
``MIN_EVENTS`` impostor pairs back it; smaller FARs are reported as not resolvable.
When the data ships a protocol (LFW's ``pairs.txt``), its 10-fold accuracy is reported too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesearch.eval.datasets import DatasetEmbeddings
from facesearch.eval.lfw import evaluate, pair_scores, read_pairs
from facesearch.models.calibration import MIN_EVENTS, ScoreHistogram

FAR_POINTS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_MAX_IMPOSTORS = 200_000_000


@dataclass
class PairScores:
    genuine: ScoreHistogram
    impostor: ScoreHistogram
    impostors_sampled: bool
    seed: int

    def unweighted(self) -> PairScores:
        return PairScores(self.genuine.unweighted(), self.impostor.unweighted(), self.impostors_sampled, self.seed)


def pair_score_histograms(vectors: np.ndarray, labels: np.ndarray, *, max_impostors: int = DEFAULT_MAX_IMPOSTORS,
                          seed: int = 0, block: int = 1024, per_person: bool = False) -> PairScores:
    """Histograms of all genuine pairs and all (or a seeded sample of) impostor pairs, each pair once.

    ``per_person``: weight each pair by 1 / (pairs between the same two people), so every pair of
    people counts once however many photos each has. Unweighted, a few people with hundreds
    of photos (LFW's George W. Bush: 530) dominate every rate.
    """
    _, ids, per = np.unique(labels, return_inverse=True, return_counts=True)
    n = len(vectors)
    inv = 1.0 / per[ids].astype(np.float64)
    genuine, impostor = ScoreHistogram(), ScoreHistogram()
    same_pairs = int(sum(c * (c - 1) // 2 for c in per))
    cross_pairs = n * (n - 1) // 2 - same_pairs
    sampled = cross_pairs > max_impostors

    def weights(i: np.ndarray, j: np.ndarray, same: bool) -> np.ndarray | None:
        if not per_person:
            return None
        w = inv[i] * inv[j]
        return w * per[ids[i]] / np.maximum(per[ids[i]] - 1, 1) if same else w

    if not sampled:
        for lo in range(0, n, block):
            rows = np.arange(lo, min(lo + block, n))
            sims = vectors[rows] @ vectors.T
            upper = np.arange(n)[None, :] > rows[:, None]
            same = ids[rows][:, None] == ids[None, :]
            for mask, is_same, hist in ((upper & same, True, genuine), (upper & ~same, False, impostor)):
                i, j = np.nonzero(mask)
                hist.add(sims[i, j], weights(rows[i], j, is_same))
        return PairScores(genuine, impostor, False, seed)
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], ids[order], [ids.max() + 1]])))
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = order[a:b]
        i, j = np.triu_indices(len(members), 1)
        sims = vectors[members] @ vectors[members].T
        genuine.add(sims[i, j], weights(members[i], members[j], True))
    rng = np.random.default_rng(seed)
    drawn = 0
    while drawn < max_impostors:
        m = min(1_000_000, max_impostors - drawn)
        i, j = rng.integers(0, n, m), rng.integers(0, n, m)
        keep = ids[i] != ids[j]
        i, j = i[keep], j[keep]
        impostor.add(np.einsum("ij,ij->i", vectors[i], vectors[j]), weights(i, j, False))
        drawn += len(i)
    return PairScores(genuine, impostor, True, seed)


def tar_at_far(scores: PairScores, far: float) -> dict:
    n = scores.impostor.pairs
    threshold = scores.impostor.quantile_threshold(far)
    return {"far": far, "threshold": round(threshold, 4), "tar": round(scores.genuine.rate_above(threshold), 5),
            "resolved": far * n >= MIN_EVENTS,
            "note": "" if far * n >= MIN_EVENTS else
            f"not resolvable: {n:,} impostor pairs resolve FAR down to {MIN_EVENTS / n:.1e}"}


def det_curve(scores: PairScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR) at every histogram edge where some impostor still scores."""
    edges = ScoreHistogram.edges()
    fmr = scores.impostor.at_or_above() / scores.impostor.total
    fnmr = 1.0 - scores.genuine.at_or_above() / scores.genuine.total
    keep = fmr > 0
    return edges[keep], fmr[keep], fnmr[keep]


def equal_error_rate(scores: PairScores) -> tuple[float, float]:
    thresholds = ScoreHistogram.edges()
    fmr = scores.impostor.at_or_above() / scores.impostor.total
    fnmr = 1.0 - scores.genuine.at_or_above() / scores.genuine.total
    k = int(np.argmin(np.maximum(fmr, fnmr)))  # where the two rates cross (both may reach 0)
    return float((fmr[k] + fnmr[k]) / 2), float(thresholds[k])


def coarse_histogram(hist: ScoreHistogram, step: float = 0.01) -> dict:
    """Share of pairs per ``step``-wide score bin, for reports and plots."""
    factor = int(round(step / 1e-4))
    counts = np.add.reduceat(hist.counts, np.arange(0, len(hist.counts), factor))
    lo = ScoreHistogram.edges()[::factor]
    nz = np.nonzero(counts)[0]
    sl = slice(int(nz[0]), int(nz[-1]) + 1) if len(nz) else slice(0, 0)
    return {"bin_start": [round(float(v), 3) for v in lo[sl]], "step": step,
            "share": [float(v) for v in counts[sl] / max(hist.total, 1)]}


@dataclass
class VerificationReport:
    pack: str
    scores: PairScores
    tar_at_far: list[dict]
    eer: float
    eer_threshold: float
    protocol: dict | None  # the dataset's own protocol (LFW pairs.txt, 10-fold), when it has one
    images: int
    usable_images: int
    per_person: bool = False

    @property
    def weighting(self) -> str:
        return "each pair of people weighted equally" if self.per_person else "every pair counted once"

    def to_dict(self) -> dict:
        return {
            "pack": self.pack, "weighting": self.weighting, "images": self.images,
            "images_with_face": self.usable_images,
            "genuine_pairs": self.scores.genuine.pairs, "impostor_pairs": self.scores.impostor.pairs,
            "impostors": (f"fixed-seed sample (seed {self.scores.seed})" if self.scores.impostors_sampled
                          else "every different-person pair"),
            "tar_at_far": self.tar_at_far, "eer": round(self.eer, 5), "eer_threshold": round(self.eer_threshold, 4),
            "protocol": self.protocol,
            "histograms": {"genuine": coarse_histogram(self.scores.genuine),
                           "impostor": coarse_histogram(self.scores.impostor)},
        }


def run_verification(emb: DatasetEmbeddings, *, pairs_file=None, max_impostors: int = DEFAULT_MAX_IMPOSTORS,
                     seed: int = 0) -> tuple[VerificationReport, VerificationReport]:
    """Two reports from one pass over the pairs: NIST's, counting every pair once (with the
    dataset's own protocol, if any), and one weighting each pair of people once, so a dataset's
    few heavily photographed people (LFW: George W. Bush, 530 photos, 58 % of its same-person
    pairs) do not set the result."""
    usable = emb.usable
    weighted = pair_score_histograms(emb.vectors[usable], emb.dataset.labels[usable],
                                     max_impostors=max_impostors, seed=seed, per_person=True)
    pairs_file = pairs_file or emb.dataset.pairs_file
    accuracy = protocol_accuracy(emb, pairs_file) if pairs_file is not None else None
    reports = []
    for scores, per_person in ((weighted.unweighted(), False), (weighted, True)):
        eer, eer_t = equal_error_rate(scores)
        reports.append(VerificationReport(emb.pack, scores, [tar_at_far(scores, far) for far in FAR_POINTS], eer,
                                          eer_t, None if per_person else accuracy, len(usable), int(usable.sum()),
                                          per_person))
    return reports[0], reports[1]


def protocol_accuracy(emb: DatasetEmbeddings, pairs_file) -> dict:
    """10-fold accuracy of a ``pairs.txt``-format protocol (threshold chosen on 9 folds, tested on 1)."""
    pairs = read_pairs(pairs_file)
    index = {p: i for i, p in enumerate(emb.dataset.rel_paths)}
    missing = sorted({p for pair in pairs for p in (pair.a, pair.b) if p not in index})
    if missing:
        raise FileNotFoundError(f"{pairs_file}: {len(missing)} image(s) of the protocol are not in the dataset, "
                                f"e.g. {missing[0]}")
    result = evaluate("protocol", pairs, pair_scores(pairs, emb.vectors, index, emb.usable), top=5)
    folds = max(p.fold for p in pairs) + 1
    return {"pairs_file": str(pairs_file), "pairs": len(pairs), "folds": folds,
            "accuracy_mean": round(result.accuracy_mean, 5), "accuracy_std": round(result.accuracy_std, 5),
            "tar_at_far_protocol_pairs": result.tar_at_far,
            "hardest_impostor_pairs": result.hardest_impostors, "hardest_genuine_pairs": result.hardest_genuines}
