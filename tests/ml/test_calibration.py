"""Calibrated scores (ml/calibration.py): the logistic fit finds the weights that made the data, the
reliability table and error say how far predictions are from what happens, a result's score is monotone
in its evidence, and the default's calibrated recognition names the landmark its nearest photos agree on
even when none of them verifies, while a photo whose neighbours disagree stays "no landmark"."""

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
from ml.pipeline import DEFAULT_PIPELINE, NOISY_OR_RECOGNITION, get_pipeline
from ml.recognize import recognize


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


def test_the_default_recognition_names_a_landmark_its_nearest_photos_agree_on():
    """Issue 23: three nearest photos of the Colosseum at cos 0.72-0.74, none verified, used to get "no
    landmark" at 0.24 (the nearest photo's evidence alone); the calibrated confidence sees that they agree.
    A photo whose nearest photos are of different landmarks, none close (an astronaut), stays "no landmark"."""
    recognition = get_pipeline(DEFAULT_PIPELINE).recognition
    assert recognition.calibration is not None
    labels = ["colosseum", "colosseum", "colosseum", "pantheon", "louvre"]
    sims = np.array([0.74, 0.73, 0.72, 0.60, 0.55])
    unverified = np.zeros(5)  # verification ran, nothing verified
    assert recognize(labels, sims, unverified, NOISY_OR_RECOGNITION).landmark_id is None  # the old rule
    found = recognize(labels, sims, unverified, recognition)
    assert found.landmark_id == "colosseum" and found.confidence >= 0.6
    evidence, runner_up, nearest_evidence, nearest = found.evidence["colosseum"]
    assert evidence == pytest.approx(1 - 0.76 * 0.77 * 0.78) and runner_up == 0.0
    assert nearest_evidence == pytest.approx(0.24) and nearest
    scattered = recognize(["a", "b", "c", "d", "e"], np.array([0.66, 0.64, 0.63, 0.62, 0.6]), unverified, recognition)
    assert scattered.landmark_id is None and scattered.confidence < recognition.threshold
    # One verified photo is enough, and more evidence never lowers the confidence.
    verified = recognize(labels, sims, np.array([60, 0, 0, 0, 0]), recognition)
    assert verified.landmark_id == "colosseum" and verified.confidence > found.confidence


def test_a_calibrated_confidence_rises_with_its_evidence_and_falls_with_a_rival():
    config = ConfidenceConfig(evidence_weight=3.0, runner_up_weight=-2.0, nearest_evidence_weight=1.0,
                              nearest_weight=2.0, bias=-3.0)
    base = config.probability(0.3, 0.1, 0.2, True)
    assert config.probability(0.5, 0.1, 0.2, True) > base > config.probability(0.3, 0.4, 0.2, True)
    assert base > config.probability(0.3, 0.1, 0.0, False)  # the nearest photo shows another landmark
    assert 0.0 < config.probability(0.0, 1.0, 0.0, False) < base < config.probability(1.0, 0.0, 1.0, True) < 1.0
