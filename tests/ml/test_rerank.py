"""ml.rerank: QE/DBA (with the reference's row-slicing bug fixed), inlier fusion, label-aware re-ranking."""

from __future__ import annotations

import numpy as np

from ml.rerank import (
    BridgedConfig,
    ExpansionConfig,
    LabelRerankConfig,
    LabelVoteConfig,
    VerificationConfig,
    alpha_query_expansion,
    bridged_scores,
    database_augmentation,
    discriminative_rerank,
    fuse_inliers,
    known_label_confidences,
    label_distance_boost,
    landmark_confidences,
    predict_labels,
    rerank_with_inliers,
    verified_query_expansion,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _reference_dba(x: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """qe_dba as intended (sims[:, :k], not sims[:k]): each row's own top-k, itself included."""
    sims = x @ x.T
    order = np.argsort(-sims, axis=1)[:, :k]
    out = np.stack([(np.clip(sims[i, order[i]], 0, None) ** alpha) @ x[order[i]] for i in range(len(x))])
    return _unit(out)


def test_dba_matches_reference_per_row():
    x = _unit(np.random.default_rng(0).standard_normal((40, 16)))
    np.testing.assert_allclose(database_augmentation(x, ExpansionConfig(k=4)), _reference_dba(x, 4, 3.0), atol=1e-5)


def test_dba_uses_each_rows_own_neighbours():
    """The reference bug sliced rows (sims[:n]): every vector would get the first rows' weights."""
    x = _unit(np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]], np.float32))
    out = database_augmentation(x, ExpansionConfig(k=2, alpha=1.0))
    # Each vector moves towards its own pair, not towards vector 0's neighbours.
    assert out[2] @ x[3] > x[2] @ x[3]
    assert out[3] @ x[2] > x[3] @ x[2]
    assert out[2] @ x[0] < 0.2


def test_dba_off_returns_a_copy():
    x = _unit(np.random.default_rng(1).standard_normal((5, 4)))
    out = database_augmentation(x, ExpansionConfig(k=0))
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_alpha_qe_includes_query_and_weights_by_similarity():
    q = _unit(np.array([1.0, 0.0, 0.0]))
    nbrs = _unit(np.array([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0]]))
    sims = nbrs @ q
    out = alpha_query_expansion(q, nbrs, sims, ExpansionConfig(k=3, alpha=3.0))
    expected = _unit(q + 0.8**3 * nbrs[0] + 0.0 * nbrs[1])
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(alpha_query_expansion(q, nbrs, sims, ExpansionConfig(k=1)), q)


def test_verified_first_and_fused_orders():
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    inliers = np.array([0, 5, 40, 16])
    cfg = VerificationConfig(top_n=4, min_inliers=15, mode="verified_first")
    assert rerank_with_inliers(scores, inliers, cfg).tolist() == [2, 3, 0, 1]
    fused = VerificationConfig(top_n=4, min_inliers=15, mode="fused", weight=1.0)
    np.testing.assert_allclose(fuse_inliers(scores, inliers, fused), [0.9, 0.8, 0.7 + 40 / 70, 0.6 + 16 / 70])
    assert rerank_with_inliers(scores, inliers, fused).tolist() == [2, 0, 3, 1]


def test_verified_qe_ignores_unverified_images():
    q = _unit(np.array([1.0, 0.0, 0.0]))
    cands = _unit(np.array([[0.9, 0.1, 0.0], [0.7, 0.0, 0.7]]))
    cfg = VerificationConfig(top_n=2, min_inliers=15, qe_k=5)
    out = verified_query_expansion(q, cands, cands @ q, np.array([3, 30]), cfg)
    assert out is not None and out[2] > 0.1  # moved towards the verified one only
    assert out[1] == 0.0
    assert verified_query_expansion(q, cands, cands @ q, np.array([3, 4]), cfg) is None


def test_label_vote_with_inlier_bonus():
    labels = ["a", "b", "b", "a", None]
    sims = np.array([0.9, 0.85, 0.8, 0.5, 0.99])
    cfg = LabelVoteConfig(k=5)
    # Without inliers: b's two strong neighbours win (0.7 + 0.6 > 0.8 + 0.0).
    assert predict_labels(labels, sims, None, cfg).label == "b"
    # A verified "a" neighbour adds min(70, 70)/70 = 1 and wins.
    vote = predict_labels(labels, sims, np.array([70, 0, 0, 0, 0]), cfg)
    assert vote.label == "a" and 0 < vote.confidence <= 1
    assert abs(vote.ranked[0][1] - (2 * 0.9 - 1 + 2 * 0.5 - 1 + 1.0)) < 1e-6
    assert abs(vote.confidence - (1 - (1 - 1.8 / 2) * (1 - 0.0))) < 1e-6


def test_discriminative_sort_and_insert():
    db_labels = ["x", "y", "x", "z", "y", "x"]
    ranked = np.array([1, 0, 3, 2, 4, 5])  # global order
    cfg = LabelRerankConfig(method="discriminative", top_m=4)
    out = discriminative_rerank(ranked, db_labels, "x", 0.5, None, cfg)
    # Sort: same-label inside the top-4 first (stable: 0 before 2); insert: 5 from beyond the top-4;
    # then the retrieved negatives in order, then the rest.
    assert out.tolist() == [0, 2, 5, 1, 3, 4]
    # Threshold rule: conf(query) + conf(image) must exceed it, else nothing moves.
    strict = LabelRerankConfig(method="discriminative", top_m=4, threshold=2.0)
    assert discriminative_rerank(ranked, db_labels, "x", 0.5, None, strict).tolist() == ranked.tolist()


def test_mk_boost_divides_distance():
    out = label_distance_boost(np.array([0.4, 0.7]), ["a", "b"], "a", 1.5)
    np.testing.assert_allclose(out, [1 - 0.6 / 1.5, 0.7], atol=1e-6)


def test_bridged_confidence():
    cfg = BridgedConfig()
    qconf = landmark_confidences(np.array([0.9, 0.8, 0.7, 0.6]), ["a", "a", "a", "b"], cfg)
    assert qconf == {"a": 0.9 + 0.8 + 0.5, "b": 0.6}
    dconf = known_label_confidences(["a", "c"], cfg)
    scores = bridged_scores(np.array([0.5, 0.5]), qconf, dconf, cfg)
    # Shared landmark a: bridged = min(2.2, 2.5) / 3; c shares none, so only the direct term remains.
    np.testing.assert_allclose(scores, [(2.2 / 3) ** 3 + 0.125, 0.125], rtol=1e-5)
