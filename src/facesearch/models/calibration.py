"""Score calibration: what false-match rate does a cosine similarity correspond to?

A calibration is measured, never guessed: ``facesearch eval lfw --calibration-out``
builds it from every cross-identity pair of a labelled dataset's embeddings. It ships
beside the pack manifest so ``verify`` (and later ``search``) can print, for any score,
the measured false-match rate and how the default threshold was chosen.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: The default operating point for 1:1 verification: 1 false match in 10,000 comparisons.
DEFAULT_VERIFY_FMR = 1e-4
#: Rates backed by fewer impostor pairs than this are reported as upper bounds only.
MIN_EVENTS = 10


@dataclass(frozen=True)
class Calibration:
    pack: str
    source: str  # what data and protocol produced it
    flip_augment: bool
    impostor_pairs: int
    genuine_pairs: int
    #: Score grid and the fraction of impostor pairs scoring at or above each value.
    scores: list[float]
    fmr: list[float]
    #: FMR -> (threshold, fraction of genuine pairs above it), at the standard points.
    operating_points: dict[str, tuple[float, float]]
    verify_fmr: float = DEFAULT_VERIFY_FMR

    @property
    def verify_threshold(self) -> float:
        return self.operating_points[f"{self.verify_fmr:g}"][0]

    def false_match_rate(self, score: float) -> tuple[float, bool]:
        """Estimated FMR at ``score``, and whether it is only an upper bound.

        Where fewer than ``MIN_EVENTS`` impostor pairs scored that high, the measurement
        cannot resolve the rate: we return the resolution as an upper bound, and say so.
        """
        scores = np.asarray(self.scores)
        rates = np.asarray(self.fmr)
        resolution = MIN_EVENTS / self.impostor_pairs
        if score <= scores[0]:
            return float(rates[0]), False
        rate = float(np.interp(score, scores, rates)) if score < scores[-1] else 0.0
        if rate < resolution:
            return resolution, True
        return rate, False

    def describe_threshold(self) -> str:
        threshold = self.verify_threshold
        tar = self.operating_points[f"{self.verify_fmr:g}"][1]
        return (f"threshold {threshold:.3f} = false-match rate {self.verify_fmr:g}, measured on "
                f"{self.impostor_pairs:,} different-person pairs ({self.source}); "
                f"{100 * tar:.2f} % of same-person pairs there score above it")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        data = dict(data)
        data["operating_points"] = {k: tuple(v) for k, v in data["operating_points"].items()}
        return cls(**data)


def build_calibration(pack: str, source: str, flip_augment: bool, impostor: np.ndarray,
                      genuine: np.ndarray, grid_points: int = 400) -> Calibration:
    impostor = np.sort(np.asarray(impostor, np.float64))
    genuine = np.asarray(genuine, np.float64)
    n = len(impostor)
    grid = np.linspace(float(impostor[0]), float(impostor[-1]), grid_points)
    # Fraction of impostors scoring >= each grid value.
    fmr = (n - np.searchsorted(impostor, grid, side="left")) / n
    points = {}
    for rate in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        allowed = int(np.floor(rate * n))
        if allowed < 1:
            continue
        threshold = float(impostor[n - allowed])
        points[f"{rate:g}"] = (round(threshold, 5), round(float(np.mean(genuine > threshold)), 5))
    verify_fmr = DEFAULT_VERIFY_FMR if f"{DEFAULT_VERIFY_FMR:g}" in points else max(
        float(k) for k in points)
    return Calibration(pack, source, flip_augment, n, len(genuine),
                       [round(float(v), 5) for v in grid], [float(v) for v in fmr], points, verify_fmr)


def load_calibration(pack: str, path: Path | None = None) -> Calibration | None:
    """The calibration shipped for ``pack`` (or the one at ``path``); None when uncalibrated."""
    if path is not None:
        return Calibration.from_dict(json.loads(Path(path).read_text()))
    resource = importlib.resources.files("facesearch.models") / "calibrations" / f"{pack}.json"
    if not resource.is_file():
        return None
    return Calibration.from_dict(json.loads(resource.read_text()))
