"""Score calibration: what false-match rate does a cosine similarity correspond to?

A calibration is measured, never guessed: ``facesearch calibrate --data DIR`` scores every
(or a fixed-seed sample of) different-person pairs of a labelled dataset and records how
often a different person scores at or above each similarity (the false-match rate, FMR).
Beyond the last score that at least ``MIN_EVENTS`` impostor pairs reached, the rate can no
longer be counted; there a straight line fitted to log10(FMR) over the measured tail carries
the estimate on. An exponential tail falls more slowly than the near-Gaussian tail of cosine
scores, so the extrapolation errs towards *higher* false-match estimates and higher thresholds.

The calibration defines the default thresholds by target rates, never by magic cosines:

- verify (1:1): FMR ``DEFAULT_VERIFY_FMR`` = 1e-4;
- search (1:N): false-positive identification rate ``DEFAULT_SEARCH_FPIR`` = 0.01 at the
  size of the gallery searched, i.e. FMR = 1 - (1 - FPIR)^(1/N) per comparison.

A calibration is attached to its pack: shipped beside built-in manifests, written into a
pinned local pack's folder, or kept in a facesearch home (``<home>/calibrations/<pack>.json``),
which wins over the others.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

#: The default operating point for 1:1 verification: 1 false match in 10,000 comparisons.
DEFAULT_VERIFY_FMR = 1e-4
#: The default operating point for 1:N search: 1 search in 100 returns a different person
#: above the threshold, whatever the gallery size.
DEFAULT_SEARCH_FPIR = 0.01
#: Rates backed by fewer impostor pairs than this are not counted but extrapolated.
MIN_EVENTS = 10
#: The tail line is fitted to measured points from this FMR down to ``TAIL_FIT_TO``.
TAIL_FIT_FROM = 1e-3
TAIL_FIT_TO = 1e-5
#: Rates listed in reports and ``facesearch models``.
STANDARD_RATES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
CALIBRATION_FILE = "calibration.json"

_BIN = 1e-4  # score histogram resolution
_NBINS = int(round(2 / _BIN)) + 1  # bin k holds scores in [-1 + k*BIN, -1 + (k+1)*BIN)


class ScoreHistogram:
    """Scores in fine bins over [-1, 1]: any number of pairs in constant memory.

    ``counts`` may be weighted (each pair of *people* counting equally, see
    :func:`facesearch.eval.verification.pair_score_histograms`); ``raw`` always counts pairs,
    and decides what a rate is backed by.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(_NBINS, np.float64)
        self.raw = np.zeros(_NBINS, np.int64)

    def add(self, scores: np.ndarray, weights: np.ndarray | None = None) -> None:
        k = np.clip(((np.asarray(scores, np.float64).ravel() + 1.0) / _BIN).astype(np.int64), 0, _NBINS - 1)
        raw = np.bincount(k, minlength=_NBINS)
        self.raw += raw
        self.counts += raw if weights is None else np.bincount(k, weights=np.ravel(weights), minlength=_NBINS)

    def unweighted(self) -> ScoreHistogram:
        """The same pairs, each counted once (what ``add`` without weights would have made)."""
        plain = ScoreHistogram()
        plain.raw = self.raw.copy()
        plain.counts = self.raw.astype(np.float64)
        return plain

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @property
    def pairs(self) -> int:
        return int(self.raw.sum())

    @staticmethod
    def edges() -> np.ndarray:
        return -1.0 + _BIN * np.arange(_NBINS)

    def at_or_above(self) -> np.ndarray:
        """(Weighted) count of scores >= each bin's lower edge."""
        return np.cumsum(self.counts[::-1])[::-1]

    def raw_at_or_above(self) -> np.ndarray:
        return np.cumsum(self.raw[::-1])[::-1]

    def rate_above(self, threshold: float) -> float:
        """Share of scores >= ``threshold`` (to the bin resolution)."""
        k = int(np.clip(math.ceil((threshold + 1.0) / _BIN - 1e-9), 0, _NBINS))
        return float(self.counts[k:].sum()) / max(self.total, 1e-300)

    def quantile_threshold(self, rate: float) -> float:
        """Lowest bin edge t with share(scores >= t) <= rate."""
        above = self.at_or_above()
        k = int(np.searchsorted(-above, -rate * self.total * (1 + 1e-12), side="left"))
        return float(self.edges()[min(k, _NBINS - 1)])


@dataclass(frozen=True)
class TailFit:
    """log10 FMR falls linearly with the score beyond ``anchor_score`` (the counting limit)."""

    anchor_score: float
    anchor_fmr: float
    slope: float  # d log10(FMR) / d score, negative
    fitted_points: int
    fit_from_fmr: float
    max_error_log10: float  # the worst residual of the fit over the measured points

    def fmr(self, score: float) -> float:
        return self.anchor_fmr * 10 ** (self.slope * (score - self.anchor_score))

    def score(self, fmr: float) -> float:
        return self.anchor_score + (math.log10(fmr) - math.log10(self.anchor_fmr)) / self.slope


@dataclass(frozen=True)
class Calibration:
    pack: str
    source: str  # what data and protocol produced it
    flip_augment: bool
    impostor_pairs: int
    genuine_pairs: int
    #: Score grid and the fraction of impostor pairs scoring at or above each value (measured part).
    scores: list[float]
    fmr: list[float]
    #: FMR -> (threshold, fraction of genuine pairs at or above it), at the standard rates.
    operating_points: dict[str, tuple[float, float]]
    verify_fmr: float = DEFAULT_VERIFY_FMR
    tail: TailFit | None = None
    #: Genuine score grid: fraction of same-person pairs at or above each of ``scores``.
    tar: list[float] = field(default_factory=list)
    search_fpir: float = DEFAULT_SEARCH_FPIR
    excluded_people: str = ""  # who was held out of the measurement, for an honest check
    version: int = 2

    # -- score -> rate ----------------------------------------------------------------------------

    @property
    def resolution(self) -> float:
        """The smallest rate counted from at least ``MIN_EVENTS`` impostor pairs."""
        return MIN_EVENTS / self.impostor_pairs

    @property
    def measured_up_to(self) -> float:
        return self.tail.anchor_score if self.tail else self.scores[-1]

    def false_match_rate(self, score: float) -> tuple[float, bool]:
        """Estimated FMR at ``score`` and whether it lies beyond the counted range.

        Beyond the counted range the fitted tail gives the estimate; without a tail (too few
        pairs to fit one) the counting limit is returned as an upper bound.
        """
        if score <= self.scores[0]:
            return float(self.fmr[0]), False
        if score <= self.measured_up_to:
            return float(10 ** np.interp(score, self.scores, np.log10(np.maximum(self.fmr, 1e-300)))), False
        if self.tail is None:
            return self.resolution, True
        return self.tail.fmr(score), True

    def threshold_for_fmr(self, rate: float) -> tuple[float, bool]:
        """The score a different person reaches with probability ``rate``; True when extrapolated."""
        if self.tail is not None and rate < self.tail.anchor_fmr:
            return self.tail.score(rate), True
        if rate >= self.fmr[0]:
            return float(self.scores[0]), False
        # fmr is non-increasing along the grid: interpolate in log space.
        logs = np.log10(np.maximum(self.fmr, 1e-300))
        return float(np.interp(-math.log10(rate), -logs, self.scores)), rate < self.resolution

    def tar_at(self, threshold: float) -> float | None:
        if not self.tar:
            return None
        return float(np.interp(threshold, self.scores, self.tar))

    # -- operating points -----------------------------------------------------------------------

    @property
    def verify_threshold(self) -> float:
        return self.threshold_for_fmr(self.verify_fmr)[0]

    @staticmethod
    def per_comparison_fmr(fpir: float, gallery_size: int) -> float:
        """FMR per comparison that gives ``fpir`` over ``gallery_size`` independent comparisons."""
        return -math.expm1(math.log1p(-fpir) / max(int(gallery_size), 1))

    @staticmethod
    def fpir_at(fmr: float, gallery_size: int) -> float:
        """Chance that at least one of ``gallery_size`` different people reaches a score with ``fmr``."""
        return -math.expm1(max(int(gallery_size), 1) * math.log1p(-min(fmr, 1 - 1e-16)))

    def search_threshold(self, gallery_size: int, fpir: float | None = None) -> tuple[float, float, bool]:
        """(threshold, FMR per comparison, extrapolated) for a search over ``gallery_size`` faces."""
        rate = self.per_comparison_fmr(fpir or self.search_fpir, gallery_size)
        threshold, extrapolated = self.threshold_for_fmr(rate)
        return threshold, rate, extrapolated

    def describe_threshold(self) -> str:
        threshold, extrapolated = self.threshold_for_fmr(self.verify_fmr)
        tar = self.tar_at(threshold)
        how = "extrapolated from the fitted tail of" if extrapolated else "measured on"
        out = (f"threshold {threshold:.3f} = false-match rate {self.verify_fmr:g}, {how} "
               f"{self.impostor_pairs:,} different-person pairs ({self.source})")
        if tar is not None:
            out += f"; {100 * tar:.2f} % of same-person pairs there score above it"
        return out

    # -- files ------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        data = dict(data)
        data["operating_points"] = {k: tuple(v) for k, v in data["operating_points"].items()}
        if data.get("tail"):
            data["tail"] = TailFit(**data["tail"])
        return cls(**data)


def threshold_at_fmr(calibration: Calibration | None, rate: float, fallback: float | None = None) -> float:
    """The cosine a different person reaches with probability ``rate`` under ``calibration``: the one
    threshold-from-a-false-match-rate rule (calibration reports, clustering, opt-out, face tracking).

    Within the measured range the calibration's impostor curve is interpolated (log-rate), beyond it
    the fitted tail extrapolates. Without a calibration: ``fallback``, or ValueError when none is given.
    """
    if calibration is None:
        if fallback is None:
            raise ValueError(f"no calibration: a threshold at false-match rate {rate:g} needs one")
        return fallback
    return float(calibration.threshold_for_fmr(rate)[0])


def fit_tail(impostor: ScoreHistogram, fit_from: float = TAIL_FIT_FROM, fit_to: float = TAIL_FIT_TO
             ) -> TailFit | None:
    """Least-squares line through log10(FMR) at log-spaced rates from ``fit_from`` down to ``fit_to``
    (or the counting limit, if higher). Beyond that the line, not the count, gives the rate:
    deep in the tail labelled datasets are dominated by their own label errors (one person
    filed under two names, duplicate photos), which would otherwise set the thresholds."""
    n = impostor.total
    above, raw = impostor.at_or_above(), impostor.raw_at_or_above()
    edges = ScoreHistogram.edges()
    counted = np.nonzero(raw >= MIN_EVENTS)[0]
    if not len(counted):
        return None
    limit = max(fit_to, above[int(counted[-1])] / n)
    if limit >= fit_from / 10:  # less than a decade of measured tail: no honest fit
        return None
    rates = np.logspace(math.log10(fit_from), math.log10(limit), 25)
    ks = np.unique(np.searchsorted(-above, -rates * n, side="left"))
    ks = ks[above[ks] > 0]
    x, y = edges[ks], np.log10(above[ks] / n)
    slope, intercept = np.polyfit(x, y, 1)
    if slope >= 0:
        return None
    anchor = int(ks[-1])
    residual = float(np.max(np.abs(intercept + slope * x - y)))
    return TailFit(round(float(edges[anchor]), 5), float(above[anchor] / n), round(float(slope), 4), len(ks),
                   fit_from, round(residual, 3))


def build_calibration(pack: str, source: str, impostor: ScoreHistogram, genuine: ScoreHistogram, *,
                      flip_augment: bool = False, excluded_people: str = "", grid_step: float = 1e-3
                      ) -> Calibration:
    n = impostor.total
    if impostor.pairs == 0 or genuine.pairs == 0:
        raise ValueError("a calibration needs both same-person and different-person pairs")
    tail = fit_tail(impostor)
    edges = ScoreHistogram.edges()
    imp_above, gen_above = impostor.at_or_above(), genuine.at_or_above()
    nonzero = np.nonzero(imp_above)[0]
    lo, hi = int(nonzero[0]), int(nonzero[-1])
    step = max(1, int(round(grid_step / _BIN)))
    ks = np.unique(np.concatenate([np.arange(lo, hi + 1, step), [hi]]))
    scores = [round(float(edges[k]), 5) for k in ks]
    fmr = [float(imp_above[k] / n) for k in ks]
    tar = [round(float(gen_above[k] / genuine.total), 6) for k in ks]
    calibration = Calibration(pack, source, flip_augment, impostor.pairs, genuine.pairs, scores, fmr, {}, tail=tail,
                              tar=tar,
                              excluded_people=excluded_people)
    points = {}
    for rate in STANDARD_RATES:
        threshold, extrapolated = calibration.threshold_for_fmr(rate)
        if extrapolated and tail is None:
            continue
        points[f"{rate:g}"] = (round(threshold, 5), round(genuine.rate_above(threshold), 5))
    return replace(calibration, operating_points=points)


def calibration_path(pack: str, home: Path | None = None) -> Path | None:
    """Where a calibration for a pack lives outside the package: the home first, then a local pack's folder."""
    candidates = []
    if home is not None:
        candidates.append(Path(home) / "calibrations" / f"{Path(pack).name}.json")
    if Path(pack).is_dir():
        candidates.append(Path(pack) / CALIBRATION_FILE)
    return next((c for c in candidates if c.is_file()), None)


def load_calibration(pack: str, path: Path | None = None, *, home: Path | None = None) -> Calibration | None:
    """The calibration in force for ``pack``: ``path``, else home / local pack folder, else shipped; None if none."""
    path = path or calibration_path(str(pack), home)
    if path is not None:
        return Calibration.from_dict(json.loads(Path(path).read_text()))
    resource = importlib.resources.files("facesearch.models") / "calibrations" / f"{pack}.json"
    if not resource.is_file():
        return None
    return Calibration.from_dict(json.loads(resource.read_text()))
