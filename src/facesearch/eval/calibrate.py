"""Fit a pack's score calibration on a labelled dataset, and check it on people it never saw.

``calibrate_embeddings`` scores every different-person pair (or a fixed-seed sample) of the
dataset's people minus ``exclude`` and builds a :class:`~facesearch.models.calibration.Calibration`
with a fitted tail. ``check_calibration`` then measures, on the excluded people only (their
protocol pairs, if any, plus every different-person pair among them), the false-match rate
actually reached at the thresholds the calibration gives for each target rate.
"""

from __future__ import annotations

import numpy as np

from facesearch.errors import FacesearchError
from facesearch.eval.datasets import DatasetEmbeddings
from facesearch.eval.lfw import read_pairs
from facesearch.eval.verification import DEFAULT_MAX_IMPOSTORS, pair_score_histograms
from facesearch.models.calibration import DEFAULT_VERIFY_FMR, MIN_EVENTS, Calibration, build_calibration

CHECK_RATES = (1e-3, 1e-4)


class CalibrationError(FacesearchError):
    """The data cannot support a calibration."""

#: The measured FMR must be within this factor of the target for the check to pass.
CHECK_FACTOR = 2.0


def read_people(path) -> set[str]:
    """Names from an LFW ``people*.txt`` file (``NAME count`` lines) or one name per line."""
    names = set()
    for line in open(path, encoding="utf-8"):
        fields = line.split()
        if len(fields) >= 1 and not fields[0].isdigit():
            names.add(fields[0])
    return names


def calibrate_embeddings(emb: DatasetEmbeddings, *, exclude: set[str] | None = None,
                         max_impostors: int = DEFAULT_MAX_IMPOSTORS, seed: int = 0) -> Calibration:
    labels = emb.dataset.labels
    keep = emb.usable & ~np.isin(labels, sorted(exclude or ()))
    scores = pair_score_histograms(emb.vectors[keep], labels[keep], max_impostors=max_impostors, seed=seed,
                                   per_person=True)
    needed = int(MIN_EVENTS / DEFAULT_VERIFY_FMR)
    if scores.impostor.pairs < needed:
        raise CalibrationError(
            f"{emb.dataset.root}: {scores.impostor.pairs:,} different-person pairs cannot measure the verify "
            f"operating point (FMR {DEFAULT_VERIFY_FMR:g} needs at least {needed:,}: about 450 photos of "
            "different people)")
    people = len(set(labels[keep].tolist()))
    source = (f"{emb.dataset.name}: {'a fixed-seed sample of the' if scores.impostors_sampled else 'all'} "
              f"different-person pairs (each pair of people weighted equally) of {int(keep.sum()):,} photos "
              f"of {people:,} people "
              f"(dataset sha256 {emb.dataset_hash[:12]})")
    excluded = f"{len(exclude):,} people held out for checking" if exclude else ""
    return build_calibration(emb.pack, source, scores.impostor, scores.genuine, excluded_people=excluded)


def holdout_scores(emb: DatasetEmbeddings, people: set[str], pairs_file=None) -> tuple[np.ndarray, int]:
    """Different-person scores among ``people`` only: the protocol's pairs (if given) + every cross pair."""
    labels = emb.dataset.labels
    rows = np.flatnonzero(emb.usable & np.isin(labels, sorted(people)))
    vectors, ids = emb.vectors[rows], np.unique(labels[rows], return_inverse=True)[1]
    parts = []
    for lo in range(0, len(rows), 1024):
        sims = vectors[lo:lo + 1024] @ vectors.T
        r = np.arange(lo, min(lo + 1024, len(rows)))
        parts.append(sims[(np.arange(len(rows))[None, :] > r[:, None]) & (ids[r][:, None] != ids[None, :])])
    protocol = 0
    if pairs_file is not None:
        index = {p: i for i, p in enumerate(emb.dataset.rel_paths)}
        different = [p for p in read_pairs(pairs_file) if not p.same and p.a in index and p.b in index]
        a = np.array([index[p.a] for p in different], dtype=np.int64)
        b = np.array([index[p.b] for p in different], dtype=np.int64)
        if len(a):
            parts.append(np.einsum("ij,ij->i", emb.vectors[a], emb.vectors[b]))
        protocol = len(different)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32), protocol


def check_calibration(calibration: Calibration, impostor_scores: np.ndarray,
                      rates: tuple[float, ...] = CHECK_RATES) -> list[dict]:
    """Measured FMR at the calibrated threshold for each target rate, and whether it is within a factor 2."""
    n = len(impostor_scores)
    rows = []
    for rate in rates:
        threshold, extrapolated = calibration.threshold_for_fmr(rate)
        measured = float(np.mean(impostor_scores >= threshold)) if n else float("nan")
        resolvable = rate * n >= MIN_EVENTS
        ratio = measured / rate if rate else float("nan")
        rows.append({"target_fmr": rate, "threshold": round(threshold, 5), "threshold_extrapolated": extrapolated,
                     "impostor_pairs": n, "false_matches": int(np.sum(impostor_scores >= threshold)),
                     "measured_fmr": measured, "ratio": round(ratio, 3), "resolvable": resolvable,
                     "within_factor_2": bool(resolvable and 1 / CHECK_FACTOR <= ratio <= CHECK_FACTOR)})
    return rows
