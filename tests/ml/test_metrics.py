"""Hand-computed cases for the Kaggle and revisited-Oxford metrics (and DELF's own test values)."""

import math

import numpy as np
import pytest

from ml.metrics import (
    LandmarkPrediction,
    average_precision_at_k,
    compute_ap,
    compute_map,
    global_average_precision,
    mean_average_precision_at_k,
    recall_at_k,
    revisited_map,
    top1_accuracy,
)

# The fixtures of DELF's metrics_test.py, with its expected values.
RECOGNITION_SOLUTION = {
    "0123456789abcdef": [0, 12],
    "0223456789abcdef": [100, 200, 300],
    "0323456789abcdef": [1],
    "0423456789abcdef": [],
    "0523456789abcdef": [],
}
RECOGNITION_PREDICTIONS = {
    "0223456789abcdef": (0, 0.01),
    "0323456789abcdef": (1, 10.0),
    "0423456789abcdef": (150, 15.0),
}
RETRIEVAL_SOLUTION = {
    "0123456789abcdef": ["fedcba9876543210", "fedcba9876543220"],
    "0223456789abcdef": ["fedcba9876543210"],
    "0323456789abcdef": ["fedcba9876543230", "fedcba9876543240", "fedcba9876543250"],
    "0423456789abcdef": ["fedcba9876543230"],
}
RETRIEVAL_PREDICTIONS = {
    "0223456789abcdef": ["fedcba9876543200", "fedcba9876543210"],
    "0323456789abcdef": ["fedcba9876543240"],
    "0423456789abcdef": ["fedcba9876543230", "fedcba9876543240"],
}


# --- GAP -------------------------------------------------------------------------------------------

def test_gap_matches_delf_reference_values():
    assert global_average_precision(RECOGNITION_PREDICTIONS, RECOGNITION_SOLUTION) == pytest.approx(1 / 6)
    assert global_average_precision(
        RECOGNITION_PREDICTIONS, RECOGNITION_SOLUTION, ignore_non_gt_test_images=True
    ) == pytest.approx(1 / 3)
    assert top1_accuracy(RECOGNITION_PREDICTIONS, RECOGNITION_SOLUTION) == pytest.approx(1 / 3)


def test_gap_non_landmark_predictions_take_rank_positions():
    solution = {"a": [1], "b": [2], "c": [], "d": [3]}
    predictions = {
        "a": LandmarkPrediction(1, 0.9),  # right: P = 1/1
        "c": LandmarkPrediction(5, 0.8),  # a guess on a non-landmark: takes rank 2
        "b": LandmarkPrediction(2, 0.7),  # right: P = 2/3
        "d": LandmarkPrediction(4, 0.6),  # wrong
    }
    assert global_average_precision(predictions, solution) == pytest.approx((1 + 2 / 3) / 3)
    assert global_average_precision(predictions, solution, True) == pytest.approx((1 + 2 / 2) / 3)


def test_gap_ties_broken_by_test_id_ascending():
    solution = {"a": [1], "b": [2]}
    # Insertion order puts the wrong "b" first; DELF ranks "a" first on equal confidence.
    predictions = {"b": (9, 0.5), "a": (1, 0.5)}
    assert global_average_precision(predictions, solution) == pytest.approx(1 / 2)
    predictions = {"a": (9, 0.5), "b": (2, 0.5)}
    assert global_average_precision(predictions, solution) == pytest.approx((1 / 2) / 2)


def test_gap_no_prediction_rows_and_errors():
    solution = {"a": [1], "b": [2]}
    assert global_average_precision({"a": (1, 1.0), "b": None}, solution) == pytest.approx(0.5)
    assert global_average_precision({}, solution) == 0.0
    with pytest.raises(ValueError, match="not in the solution"):
        global_average_precision({"zz": (1, 1.0)}, solution)
    with pytest.raises(ValueError, match="no test image"):
        global_average_precision({"a": (1, 1.0)}, {"a": []})


# --- mAP@100 ---------------------------------------------------------------------------------------

def test_map_matches_delf_reference_values():
    assert mean_average_precision_at_k(RETRIEVAL_PREDICTIONS, RETRIEVAL_SOLUTION) == pytest.approx(0.458333, abs=1e-6)
    assert mean_average_precision_at_k(RETRIEVAL_PREDICTIONS, RETRIEVAL_SOLUTION, k=1) == pytest.approx(0.5)


def test_map_denominator_is_min_of_positives_and_k():
    # Fewer than 100 predictions, 3 positives, one found at rank 1: 1/3, not 1.
    assert average_precision_at_k(["p1", "n1"], {"p1", "p2", "p3"}) == pytest.approx(1 / 3)
    # LY's map_at_k divides by k; Kaggle gives 1.0 for one positive found at rank 1.
    assert average_precision_at_k(["p", "n1", "n2", "n3", "n4"], {"p"}, k=5) == pytest.approx(1.0)
    # 150 positives, the first 100 predictions all right: the denominator is capped at 100.
    positives = {f"p{i}" for i in range(150)}
    assert average_precision_at_k([f"p{i}" for i in range(120)], positives) == pytest.approx(1.0)


def test_map_ignores_hits_beyond_k():
    ranked = [f"n{i}" for i in range(100)] + ["p"]
    assert average_precision_at_k(ranked, {"p"}) == 0.0
    assert average_precision_at_k(ranked, {"p"}, k=101) == pytest.approx(1 / 101)


def test_map_duplicates_use_a_rank_but_score_nothing():
    assert average_precision_at_k(["x", "x", "y"], {"x", "y"}) == pytest.approx((1 + 2 / 3) / 2)
    # Repeating a positive cannot raise the score above finding it once.
    assert average_precision_at_k(["x", "x", "x"], {"x", "y"}) == pytest.approx(1 / 2)


def test_map_missing_and_empty_queries_score_zero():
    solution = {"q1": ["a"], "q2": ["b"], "q3": ["c"]}
    assert mean_average_precision_at_k({"q1": ["a"], "q2": []}, solution) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="not in the solution"):
        mean_average_precision_at_k({"q9": ["a"]}, solution)
    with pytest.raises(ValueError, match="without ground-truth"):
        mean_average_precision_at_k({"q1": ["a"]}, {"q1": []})


def test_recall_at_k():
    solution = {"q1": ["a"], "q2": ["b"], "q3": [], "q4": ["d"]}
    predictions = {"q1": ["a", "x"], "q2": ["x", "b"], "q3": ["z"]}  # q4 missing: a miss
    assert recall_at_k(predictions, solution, 1) == pytest.approx(1 / 3)
    assert recall_at_k(predictions, solution, 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        recall_at_k(predictions, solution, 0)


# --- revisited Oxford / Paris ----------------------------------------------------------------------

def test_compute_ap_is_trapezoidal():
    # The reference's check: positives at ranks {0, 2} give 0.7917 (standard AP would give 0.8333).
    assert compute_ap([0, 2], 2) == pytest.approx(0.5 + (1 / 2 + 2 / 3) / 4)
    assert compute_ap([0, 2], 2) == pytest.approx(0.7917, abs=1e-4)
    assert compute_ap([0], 1) == 1.0
    assert compute_ap([1], 1) == pytest.approx(0.25)


def test_compute_map_removes_junk_ranked_first():
    # Database items 0..3; the query's positives are 1 and 3; junk item 0 is ranked first.
    ranks = np.array([[0], [1], [2], [3]])
    with_junk, aps, _, _ = compute_map(ranks, [{"ok": [1, 3], "junk": [0]}])
    without, _, _, _ = compute_map(ranks, [{"ok": [1, 3]}])
    assert with_junk == pytest.approx(compute_ap([0, 2], 2))
    assert without == pytest.approx(compute_ap([1, 3], 2))
    assert aps[0] == pytest.approx(with_junk)


def test_compute_map_skips_queries_without_positives_and_unranked_positives():
    ranks = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]])  # a truncated ranking of a larger database
    gnd = [{"ok": [0]}, {"ok": []}, {"ok": [0, 7]}]  # item 7 is not in the ranking
    mean_ap, aps, _, _ = compute_map(ranks, gnd)
    assert math.isnan(aps[1])
    assert aps[2] == pytest.approx(0.5)
    assert mean_ap == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="transposed"):
        compute_map(np.zeros((2, 5), dtype=int), [{"ok": [0]}, {"ok": [1]}])


def test_revisited_map_protocols():
    # Database 0..5. Query 0: easy 0, hard 2, junk 1 (junk at rank 1). Query 1: no positives at all.
    # Query 2: easy 5 only (no hard positive), found last.
    ranks = np.array([[1, 0, 0], [0, 1, 1], [3, 2, 2], [2, 3, 3], [4, 4, 4], [5, 5, 5]])
    gnd = [
        {"easy": [0], "hard": [2], "junk": [1]},
        {"easy": [], "hard": [], "junk": []},
        {"easy": [5], "hard": [], "junk": []},
    ]
    scores = revisited_map(ranks, gnd)
    # Easy: q0 junk {1, 2}: item 0 moves to rank 0, AP 1; q2: rank 5 -> (0 + 1/6)/2.
    assert scores["easy"] == pytest.approx(100 * (1.0 + 1 / 12) / 2)
    # Medium: q0 positives at ranks 1, 3 minus one junk -> {0, 2}; q2 as above.
    assert scores["medium"] == pytest.approx(100 * (compute_ap([0, 2], 2) + 1 / 12) / 2)
    # Hard: only q0 counts; easy item 0 and junk 1 removed, hard item 2 at rank 1 -> (0 + 1/2)/2.
    assert scores["hard"] == pytest.approx(25.0)
    assert scores["kappas"] == [1, 5, 10]
    assert scores["medium_mp"][0] == pytest.approx(50.0)  # q0 right at rank 1, q2 not
    assert scores["medium_mp"][1] == pytest.approx(100 * (2 / 3 + 0) / 2)


def test_revisited_map_hard_is_none_without_hard_positives():
    ranks = np.array([[0], [1]])
    scores = revisited_map(ranks, [{"easy": [1], "hard": [], "junk": []}])
    assert scores["hard"] is None and scores["hard_mp"] is None
    assert scores["medium"] == pytest.approx(100 * compute_ap([1], 1))


def test_revisited_map_accepts_ids_as_well_as_indices():
    ranks = np.array([["b"], ["a"], ["c"]])
    scores = revisited_map(ranks, [{"easy": ["a"], "hard": ["c"], "junk": ["b"]}])
    assert scores["medium"] == pytest.approx(100 * compute_ap([0, 1], 2))
    assert scores["easy"] == pytest.approx(100.0)
