"""Score calibration: the shipped one must hold on people it never saw, and the machinery must be right.

The held-out check uses ``fixtures/calibration_check/lfw_view1_holdout.npz``: buffalo_s embeddings
(float16) of 1,200 photos of 782 people from LFW view 1's test people (``peopleDevTest.txt``),
whom the shipped calibration excluded, plus the view-1 test pairs among them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from facesearch.eval.calibrate import check_calibration
from facesearch.eval.verification import pair_score_histograms
from facesearch.models.calibration import (
    Calibration,
    ScoreHistogram,
    build_calibration,
    load_calibration,
)
from facesearch.pipeline import load_image
from facesearch.search import false_match, search_threshold
from tests.conftest import FIXTURES

HOLDOUT = FIXTURES / "calibration_check" / "lfw_view1_holdout.npz"


@pytest.fixture(scope="module")
def shipped() -> Calibration:
    calibration = load_calibration("buffalo_s")
    assert calibration is not None
    return calibration


@pytest.fixture(scope="module")
def holdout():
    with np.load(HOLDOUT) as data:
        return {k: data[k] for k in data.files}


def holdout_impostor_scores(holdout) -> np.ndarray:
    vectors = holdout["embeddings"].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([p.split("/")[0] for p in holdout["paths"]])
    _, ids = np.unique(labels, return_inverse=True)
    sims = vectors @ vectors.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    cross = sims[upper & (ids[:, None] != ids[None, :])]
    index = {p: i for i, p in enumerate(holdout["paths"])}
    different = ~holdout["pair_same"]
    a = np.array([index[p] for p in holdout["pair_a"][different]])
    b = np.array([index[p] for p in holdout["pair_b"][different]])
    return np.concatenate([cross, np.einsum("ij,ij->i", vectors[a], vectors[b])])


def test_shipped_calibration_holds_on_held_out_people(shipped, holdout):
    assert "held out" in shipped.excluded_people
    scores = holdout_impostor_scores(holdout)
    assert len(scores) > 500_000
    rows = check_calibration(shipped, scores, (1e-3, 1e-4))
    for row in rows:
        assert row["resolvable"], row
        assert row["within_factor_2"], row


def test_the_check_catches_a_wrong_calibration(shipped, holdout):
    scores = holdout_impostor_scores(holdout)
    # Thresholds 0.05 lower than measured let through several times the target rate: the check must say so.
    shifted = Calibration.from_dict({**json.loads(json.dumps(shipped.__dict__, default=lambda o: o.__dict__)),
                                     "scores": [s + 0.05 for s in shipped.scores]})
    looser = Calibration.from_dict({**json.loads(json.dumps(shipped.__dict__, default=lambda o: o.__dict__)),
                                    "scores": [s - 0.05 for s in shipped.scores]})
    assert not any(r["within_factor_2"] for r in check_calibration(shifted, scores, (1e-3, 1e-4)))
    assert not any(r["within_factor_2"] for r in check_calibration(looser, scores, (1e-3, 1e-4)))


def test_holdout_fixture_matches_the_pipeline_today(analyzer, holdout):
    """The fixture's embeddings are what the current pipeline computes for those photos."""
    index = {p.split("/")[1]: i for i, p in enumerate(holdout["paths"])}
    checked = 0
    for photo in sorted((FIXTURES / "calibration_check").glob("*.jpg")):
        faces = analyzer.analyze(load_image(photo))
        assert faces, photo
        stored = holdout["embeddings"][index[photo.name]].astype(np.float32)
        best = max(float(f.embedding @ stored) / float(np.linalg.norm(stored)) for f in faces)
        assert best > 0.99, (photo.name, best)
        checked += 1
    assert checked == 3


def test_thresholds_are_defined_by_target_rates(shipped):
    assert shipped.verify_fmr == 1e-4
    assert shipped.verify_threshold == pytest.approx(shipped.threshold_for_fmr(1e-4)[0])
    # round trip score <-> rate, in the measured range and in the fitted tail
    for rate in (1e-2, 1e-3, 1e-4, 1e-6, 1e-8):
        threshold, _ = shipped.threshold_for_fmr(rate)
        assert shipped.false_match_rate(threshold)[0] == pytest.approx(rate, rel=0.05)
    assert not shipped.threshold_for_fmr(1e-4)[1]  # measured
    assert shipped.threshold_for_fmr(1e-8)[1]  # extrapolated, and said so
    # search: FPIR 0.01 at the gallery size, so bigger galleries get stricter thresholds
    sizes = (10, 1_000, 100_000, 10_000_000)
    thresholds = [shipped.search_threshold(n)[0] for n in sizes]
    assert thresholds == sorted(thresholds) and thresholds[-1] - thresholds[0] > 0.2
    for n in sizes:
        t, fmr, _ = shipped.search_threshold(n)
        assert shipped.fpir_at(fmr, n) == pytest.approx(0.01, rel=1e-6)
    limit, rule = search_threshold(shipped, None, 50_000)
    assert limit == pytest.approx(shipped.search_threshold(50_000)[0])
    assert "50,000 faces" in rule and "0.01" in rule


def test_false_match_words(shipped):
    t, _ = shipped.threshold_for_fmr(2e-5)
    estimate = false_match(shipped, t, 1_000)
    assert estimate.words.startswith("about 1 in 50,000 different people score this high")
    assert estimate.fpir == pytest.approx(1 - (1 - 2e-5) ** 1000, rel=0.05)
    assert "searching 1,000 faces" in estimate.words
    tail = false_match(shipped, shipped.threshold_for_fmr(1e-7)[0], 10)
    assert tail.extrapolated and "about 1 in 10,000,000" in tail.words and "fitted tail" in tail.words
    deep = false_match(shipped, 0.9, 10)  # far beyond anything measured: a bound, not a number
    assert deep.extrapolated and deep.words.startswith("fewer than 1 in 100,000,000 different people")
    assert "is below 1.0e-07" in deep.words
    low = false_match(shipped, -0.2, 10)
    assert "no evidence of a match" in low.words


def test_fitted_tail_on_a_known_distribution_is_conservative():
    """Gaussian impostors: measured rates are right; beyond the count the tail over-estimates, never under."""
    rng = np.random.default_rng(0)
    sd = 0.07
    impostor, genuine = ScoreHistogram(), ScoreHistogram()
    for _ in range(20):
        impostor.add(rng.normal(0.0, sd, 1_000_000))
    genuine.add(rng.normal(0.6, 0.1, 20_000))
    calibration = build_calibration("test", "gaussian", impostor, genuine)
    truth = lambda s: 0.5 * math.erfc(s / (sd * math.sqrt(2)))  # noqa: E731
    for score in (0.15, 0.2, 0.25):  # measured
        assert calibration.false_match_rate(score)[0] == pytest.approx(truth(score), rel=0.15)
    for score in (0.35, 0.4, 0.45):  # beyond 20M pairs' counting limit
        rate, extrapolated = calibration.false_match_rate(score)
        assert extrapolated and rate >= truth(score)
    assert calibration.tail is not None and calibration.tail.max_error_log10 < 0.2


def test_per_person_weighting_counts_each_pair_of_people_once():
    # Person A has 3 photos, B and C one each; A's photos all score 0.5 against B, C scores 0.0.
    vectors = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0.5, math.sqrt(0.75), 0], [0, 0, 1]], np.float32)
    labels = np.array(["A", "A", "A", "B", "C"])
    plain = pair_score_histograms(vectors, labels)
    weighted = pair_score_histograms(vectors, labels, per_person=True)
    assert plain.impostor.pairs == weighted.impostor.pairs == 7
    assert plain.impostor.rate_above(0.4) == pytest.approx(3 / 7)
    assert weighted.impostor.rate_above(0.4) == pytest.approx(1 / 3)  # A-B is one of three pairs of people
    assert weighted.genuine.rate_above(0.99) == pytest.approx(1.0)
    # one pass serves both weightings: the weighted histograms carry the plain counts
    for plain_hist, weighted_hist in ((plain.genuine, weighted.genuine), (plain.impostor, weighted.impostor)):
        assert np.array_equal(weighted_hist.unweighted().counts, plain_hist.counts)
