"""Calibrated scores (ml/calibration.py): the logistic fit finds the weights that made the data, the
reliability table and error say how far predictions are from what happens, a result's score is monotone
in its evidence, and a calibrated recognition names the landmark its nearest photos agree on even when
none of them verifies, while a photo whose neighbours disagree stays "no landmark"."""

import numpy as np
import pytest

from ml.calibration import (
    ConfidenceConfig,
    ScoreConfig,
    calibration_error,
    fit_logistic,
    monotone,
    reliability,
    sigmoid,
)
from ml.recognize import RecognitionConfig, recognize
from ml.rerank import LabelVoteConfig


def test_the_fit_finds_the_weights_that_made_the_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3))
    truth = np.array([2.0, -1.0, 0.5])
    y = rng.random(len(x)) < sigmoid(x @ truth - 0.7)
    w, b = fit_logistic(x, y, l2=0.0)
    np.testing.assert_allclose(w, truth, atol=0.08)
    assert b == pytest.approx(-0.7, abs=0.06)
    # The fitted probabilities are calibrated: each bin's prediction matches what happened.
    p = sigmoid(x @ w + b)
    assert calibration_error(p, y) < 0.02
    with pytest.raises(ValueError, match="both right and wrong answers"):
        fit_logistic(x[:10], np.ones(10, bool))


def test_the_reliability_table_bins_predictions_against_what_happened():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    y = np.array([False, False, True, True, True, False])
    rows = reliability(p, y, bins=10)
    assert [(r["low"], r["count"], r["observed"]) for r in rows] == [(0.0, 2, 0.0), (0.9, 4, 0.75)]
    assert calibration_error(p, y, bins=10) == pytest.approx((2 * 0.05 + 4 * 0.2) / 6)


def test_a_results_score_rises_with_its_evidence_and_never_down_a_ranking():
    config = ScoreConfig(fused_weight=3.0, label_weight=2.0, bias=-2.0)
    fused = np.array([0.2, 0.6, 1.0, 1.8])
    p = config.probability(fused, np.zeros(4))
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
    assert np.all(config.probability(fused, np.ones(4)) > p)  # agreeing with the recognised landmark
    np.testing.assert_array_equal(monotone(np.array([0.9, 0.95, 0.5, 0.7])), [0.9, 0.9, 0.5, 0.5])


def test_a_calibrated_recognition_counts_agreeing_neighbours():
    """Three nearest photos of one landmark at cos 0.74 and none verified: one neighbour's vote alone
    (k = 1) is 0.24, below the old 0.25 threshold; the calibrated confidence sees that they agree."""
    vote = LabelVoteConfig(k=1)
    calibration = ConfidenceConfig(evidence_weight=6.0, runner_up_weight=-2.0, share_weight=4.0,
                                   nearest_weight=1.0, bias=-4.0)
    plain = RecognitionConfig(vote=vote, threshold=0.25)
    calibrated = RecognitionConfig(vote=vote, threshold=0.5, calibration=calibration)
    labels = ["colosseum", "colosseum", "colosseum", "pantheon", "louvre"]
    sims = np.array([0.74, 0.73, 0.72, 0.60, 0.55])
    unverified = np.zeros(5)  # verification ran, nothing verified
    assert recognize(labels, sims, unverified, plain).landmark_id is None
    found = recognize(labels, sims, unverified, calibrated)
    assert found.landmark_id == "colosseum" and found.confidence > 0.5
    assert found.evidence["colosseum"] == pytest.approx((0.24, 0.0, 0.6, True))
    # A photo whose nearest photos are of five landmarks, none close: no landmark, whatever the nearest.
    scattered = recognize(["a", "b", "c", "d", "e"], np.array([0.66, 0.64, 0.63, 0.62, 0.6]), unverified, calibrated)
    assert scattered.landmark_id is None and scattered.confidence < 0.5
