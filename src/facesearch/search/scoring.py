"""From a cosine similarity to words a reviewer can act on, using the pack's calibration."""

from __future__ import annotations

from facesearch.models.calibration import Calibration
from facesearch.search.results import FalseMatchEstimate

#: 1:N default operating point: 1 chance match in 100,000 comparisons.
DEFAULT_SEARCH_FMR = 1e-5
#: Used only for a pack without calibration; said so wherever it is used.
UNCALIBRATED_THRESHOLD = 0.4


def search_threshold(calibration: Calibration | None, override: float | None = None) -> tuple[float, str]:
    if override is not None:
        return override, f"threshold {override:.3f} given by the user"
    if calibration is None:
        return UNCALIBRATED_THRESHOLD, (f"threshold {UNCALIBRATED_THRESHOLD:.3f}: this pack is uncalibrated "
                                        "(a generic ArcFace value, false-match rate unknown)")
    key = f"{DEFAULT_SEARCH_FMR:g}"
    if key not in calibration.operating_points:
        key = max(calibration.operating_points, key=float)
    threshold = calibration.operating_points[key][0]
    return threshold, (f"threshold {threshold:.3f} = false-match rate {float(key):g} per comparison, measured on "
                       f"{calibration.impostor_pairs:,} different-person pairs ({calibration.source})")


def false_match(calibration: Calibration | None, score: float, gallery_size: int) -> FalseMatchEstimate | None:
    if calibration is None:
        return None
    rate, bound = calibration.false_match_rate(score)
    expected = rate * gallery_size
    prefix = "below " if bound else ""
    words = (f"{prefix}1 in {1 / rate:,.0f} different people score this high; searching {gallery_size:,} faces, "
             f"{'at most ' if bound else 'about '}{expected:.2g} such chance match(es) are expected per search")
    return FalseMatchEstimate(rate, bound, expected, words)
