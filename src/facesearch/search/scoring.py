"""From a cosine similarity to words a reviewer can act on, using the pack's calibration.

Search thresholds are defined by a target false-positive identification rate (FPIR 0.01:
one search in a hundred shows a different person above the line) at the size of the gallery
actually searched, so a bigger collection automatically gets a stricter threshold.
"""

from __future__ import annotations

from facesearch.models.calibration import Calibration
from facesearch.search.results import FalseMatchEstimate

#: Used only for a pack without calibration; said so wherever it is used.
UNCALIBRATED_THRESHOLD = 0.4


def search_threshold(calibration: Calibration | None, override: float | None = None,
                     gallery_size: int = 1, searched: str | None = None) -> tuple[float, str]:
    """The threshold for one search of ``gallery_size`` comparisons, and its rule in words.

    ``searched`` says what was compared when that is not simply so many faces (a subject's
    several enrolled faces against the faces searched), so every count in the words is the
    one the page shows next to them."""
    if override is not None:
        return override, f"threshold {override:.3f} given by the user"
    if calibration is None:
        return UNCALIBRATED_THRESHOLD, (f"threshold {UNCALIBRATED_THRESHOLD:.3f}: this pack is uncalibrated "
                                        "(a generic ArcFace value, false-match rate unknown)")
    threshold, fmr, extrapolated = calibration.search_threshold(gallery_size)
    how = "from the fitted tail of" if extrapolated else "measured on"
    searched = searched or f"{gallery_size:,} faces"
    return threshold, (f"threshold {threshold:.3f} = at most {calibration.search_fpir:g} chance of a different "
                       f"person above it per search of {searched} (false-match rate {fmr:.1e} per "
                       f"comparison, {how} {calibration.impostor_pairs:,} different-person pairs: "
                       f"{calibration.source})")


#: Below this rate an estimate is not stated: the fitted tail is anchored on counts down to
#: 1e-5 and checked on held-out people to about 1e-6; two decades further is the limit we say.
RATE_FLOOR = 1e-8


def rate_words(rate: float, extrapolated: bool) -> str:
    """'about 1 in 50,000 different people score this high' (and how the rate is known)."""
    if rate >= 0.5:
        return "as high as most different people score: no evidence of a match"
    if rate < RATE_FLOOR:
        return f"fewer than 1 in {1 / RATE_FLOOR:,.0f} different people score this high (beyond what was measured)"
    return f"about 1 in {1 / rate:,.0f} different people score this high" + (
        " (estimated from the fitted tail of the calibration)" if extrapolated else "")


def false_match(calibration: Calibration | None, score: float, gallery_size: int,
                searched: str | None = None) -> FalseMatchEstimate | None:
    if calibration is None:
        return None
    rate, extrapolated = calibration.false_match_rate(score)
    expected = rate * gallery_size
    fpir = calibration.fpir_at(rate, gallery_size)
    words = rate_words(rate, extrapolated)
    if rate < 0.5:
        below = rate < RATE_FLOOR
        chance = _share(calibration.fpir_at(RATE_FLOOR, gallery_size) if below else fpir)
        searched = searched or f"{gallery_size:,} faces"
        words += (f"; searching {searched}, the chance that some different person scores this high "
                  f"is {'below ' if below else ''}{chance}")
    return FalseMatchEstimate(rate, extrapolated, expected, fpir, words)


def _share(p: float) -> str:
    if p >= 0.995:
        return "near certain"
    return f"{100 * p:.2g} %" if p >= 1e-4 else f"{p:.1e}"
