"""1:N identification the way NIST FRTE measures it: CMC, FNIR at fixed FPIR, and gallery-size growth.

Split (fixed seed): people with 2+ usable photos are shuffled; ``holdout`` of them are never
enrolled and all their photos are *non-mated* probes; each other person enrols one photo
(the gallery's mates) and their remaining photos are *mated* probes. People with a single
photo are split in two: half are real distractors in the gallery, half more non-mated probes
(people never enrolled, as in NIST's non-mated searches).

- CMC: share of mated probes whose mate is within rank 1 / 5 / 10 / 20.
- FPIR(T): share of non-mated probes whose top candidate scores >= T.
- FNIR(T): share of mated probes whose mate is not the rank-1 candidate with score >= T
  (NIST's identification mode, rank 1; investigation mode would accept lower ranks).
- Growth: the same measured at gallery sizes of 1k, 10k, 100k, 1M. Below the real gallery
  size a seeded subset of mates and distractors is used; above it real extra distractors
  (``--distractors``) come first, then *synthetic* embeddings (:mod:`facesearch.eval.synthetic`,
  labelled as such in every report row).
- Calibration check: at the pack's search threshold for each gallery size (target FPIR
  0.01), the FPIR actually measured.

Search is exact (FAISS flat inner product): this measures the model, not the index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from facesearch.eval.synthetic import GaussianFaces
from facesearch.models.calibration import Calibration

FPIR_POINTS = (0.1, 0.01, 0.003)
CMC_RANKS = (1, 5, 10, 20)
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
TOP_NONMATED = 10


@dataclass(frozen=True)
class Split:
    gallery_mates: np.ndarray  # dataset rows enrolled
    distractors: np.ndarray  # dataset rows of single-photo people (in the gallery, never probed)
    mated: np.ndarray  # dataset rows probed, with a mate enrolled
    nonmated: np.ndarray  # dataset rows probed, person never enrolled
    seed: int


def split(labels: np.ndarray, usable: np.ndarray, *, holdout: float = 0.2, seed: int = 0) -> Split:
    rows: dict[str, list[int]] = {}
    for i in np.flatnonzero(usable):
        rows.setdefault(str(labels[i]), []).append(int(i))
    rng = np.random.default_rng(seed)
    multi = sorted(n for n, r in rows.items() if len(r) >= 2)
    held = set(rng.choice(multi, size=round(holdout * len(multi)), replace=False).tolist()) if multi else set()
    mates, mated, nonmated = [], [], []
    for name in multi:
        if name in held:
            nonmated += rows[name]
            continue
        person = list(rows[name])
        pick = int(rng.integers(len(person)))
        mates.append(person.pop(pick))
        mated += person
    singles = [r[0] for r in rows.values() if len(r) == 1]
    rng.shuffle(singles)
    probed_singles, singles = singles[: len(singles) // 2], singles[len(singles) // 2:]
    nonmated += probed_singles
    rows_of = lambda r: np.array(sorted(r), np.int64)  # noqa: E731
    return Split(np.array(mates, np.int64), rows_of(singles), rows_of(mated), rows_of(nonmated), seed)


def exact_topk(gallery: np.ndarray, probes: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, np.float32))
    k = min(k, len(gallery))
    scores = np.empty((len(probes), k), np.float32)
    ids = np.empty((len(probes), k), np.int64)
    for lo in range(0, len(probes), batch):
        scores[lo:lo + batch], ids[lo:lo + batch] = index.search(np.ascontiguousarray(probes[lo:lo + batch]), k)
    return scores, ids


def fnir_fpir_curve(mated_top: np.ndarray, mated_hit1: np.ndarray, nonmated_top: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FPIR, FNIR) at every distinct non-mated top score, high to low."""
    thresholds = np.sort(np.unique(nonmated_top))[::-1]
    ranked = np.sort(nonmated_top)
    fpir = (len(ranked) - np.searchsorted(ranked, thresholds, side="left")) / len(ranked)
    hit_scores = np.sort(mated_top[mated_hit1])
    found = len(hit_scores) - np.searchsorted(hit_scores, thresholds, side="left")
    return thresholds, fpir, 1.0 - found / len(mated_top)


def at_fpir(thresholds, fpir, fnir, target: float) -> dict:
    """The lowest threshold whose FPIR does not exceed ``target``."""
    ok = np.flatnonzero(fpir <= target)
    if not len(ok):
        return {"fpir_target": target, "threshold": None, "fpir": None, "fnir": None}
    k = int(ok[-1])
    # Just above the next non-mated score down: FPIR stays <= target.
    t = float(np.nextafter(np.float32(thresholds[k + 1]), np.float32(1))) if k + 1 < len(thresholds) else float(
        thresholds[k])
    return {"fpir_target": target, "threshold": round(t, 5), "fpir": float(fpir[k]), "fnir": float(fnir[k])}


@dataclass
class GalleryRun:
    size: int
    real: int  # real faces in the gallery (mates + real distractors)
    synthetic: int
    mated_probes: int
    nonmated_probes: int
    cmc: dict[str, float]
    at_fpir: list[dict]
    calibrated: dict | None
    search_seconds: float
    curve: tuple[np.ndarray, np.ndarray, np.ndarray]
    #: The highest-scoring non-mated probes (dataset rows) and their top gallery face (row, or None if
    #: synthetic): in LFW mostly label errors, the same person filed under two names.
    top_nonmated: list[dict]

    def to_dict(self) -> dict:
        return {"gallery_size": self.size, "real_faces": self.real, "synthetic_faces": self.synthetic,
                "mated_probes": self.mated_probes, "nonmated_probes": self.nonmated_probes, "cmc": self.cmc,
                "fnir_at_fpir": self.at_fpir, "calibrated_threshold": self.calibrated,
                "search_seconds": round(self.search_seconds, 2), "top_nonmated": self.top_nonmated}


def run_gallery(vectors: np.ndarray, labels: np.ndarray, s: Split, size: int, *, extra: np.ndarray | None,
                synthetic: GaussianFaces | None, calibration: Calibration | None, seed: int) -> GalleryRun | None:
    """Measure one gallery size; None when it cannot be reached (no synthetic model given)."""
    mates, distractors, mated = s.gallery_mates, s.distractors, s.mated
    base = len(mates) + len(distractors)
    rng = np.random.default_rng([seed, size])
    extra = np.zeros((0, vectors.shape[1]), np.float32) if extra is None else extra
    if size < base:  # a proportional seeded subset of enrolled people and of distractors
        keep_mates = rng.choice(len(mates), size=max(1, round(size * len(mates) / base)), replace=False)
        keep_names = set(labels[mates[keep_mates]].tolist())
        mates = mates[keep_mates]
        distractors = rng.choice(distractors, size=min(len(distractors), size - len(mates)), replace=False)
        mated = np.array([r for r in mated if labels[r] in keep_names])
        gallery, n_extra, n_synth = vectors[np.concatenate([mates, distractors])], 0, 0
    else:
        n_extra = min(len(extra), size - base)
        n_synth = size - base - n_extra
        if n_synth and synthetic is None:
            return None
        parts = [vectors[mates], vectors[distractors], extra[:n_extra]]
        if n_synth:
            parts.append(synthetic.sample(n_synth, seed))
        gallery = np.concatenate(parts)
    probes = np.concatenate([vectors[mated], vectors[s.nonmated]])
    start = time.perf_counter()
    scores, ids = exact_topk(gallery, probes, max(CMC_RANKS))
    seconds = time.perf_counter() - start
    gallery_labels = np.concatenate([labels[mates], np.full(len(gallery) - len(mates), "\0distractor")])
    m = len(mated)
    correct = gallery_labels[ids[:m]] == labels[mated][:, None]
    cmc = {f"rank{r}": float(correct[:, :r].any(1).mean()) for r in CMC_RANKS}
    mated_top, hit1, nonmated_top = scores[:m, 0], correct[:, 0], scores[m:, 0]
    curve = fnir_fpir_curve(mated_top, hit1, nonmated_top)
    points = [at_fpir(*curve, f) for f in FPIR_POINTS]
    calibrated = None
    if calibration is not None:
        t, fmr, extrapolated = calibration.search_threshold(len(gallery))
        calibrated = {"threshold": round(t, 5), "target_fpir": calibration.search_fpir,
                      "per_comparison_fmr": fmr, "extrapolated": extrapolated,
                      "measured_fpir": float(np.mean(nonmated_top >= t)),
                      "fnir": float(np.mean(~(hit1 & (mated_top >= t))))}
    worst = np.argsort(-nonmated_top)[:TOP_NONMATED]
    gallery_rows = np.concatenate([mates, distractors]) if size < base else np.concatenate([mates, s.distractors])
    top_nonmated = [{"probe": int(s.nonmated[q]), "score": round(float(nonmated_top[q]), 4),
                     "gallery": int(gallery_rows[ids[m + q, 0]]) if ids[m + q, 0] < len(gallery_rows) else None}
                    for q in worst]
    return GalleryRun(len(gallery), len(gallery) - n_synth, n_synth, m, len(s.nonmated), cmc, points, calibrated,
                      seconds, curve, top_nonmated)


def run_identification(vectors: np.ndarray, labels: np.ndarray, usable: np.ndarray, *,
                       sizes: tuple[int, ...] = DEFAULT_SIZES, extra: np.ndarray | None = None,
                       synthetic_distractors: bool = True, calibration: Calibration | None = None,
                       holdout: float = 0.2, seed: int = 0) -> tuple[Split, list[GalleryRun], list[str]]:
    s = split(labels, usable, holdout=holdout, seed=seed)
    base = len(s.gallery_mates) + len(s.distractors)
    notes = []
    model = None
    if synthetic_distractors and any(size > base + (0 if extra is None else len(extra)) for size in sizes):
        # Fitted on the real distractors only, so the probes' identities never leak into it.
        fit, who = (s.distractors, "single-photo people (never probed)") if len(s.distractors) >= 2 else (
            s.gallery_mates, "enrolled photos (no single-photo people to fit on: the probes' people leak in)")
        model = GaussianFaces.fit(vectors[fit], labels[fit])
        notes.append(f"synthetic distractors: Gaussian fitted to the {len(fit):,} {who}; its tail is lighter than "
                     "real faces', so FNIR growth is a lower bound")
    runs = []
    for size in sorted({*sizes, base}):
        run = run_gallery(vectors, labels, s, size, extra=extra, synthetic=model, calibration=calibration, seed=seed)
        if run is None:
            notes.append(f"gallery size {size:,} skipped: not enough real faces and synthetic distractors disabled")
        else:
            runs.append(run)
    return s, runs, notes
