"""Learned whitening (Lw) from database labels: it shrinks the directions photos of one landmark vary in."""

import numpy as np
import pytest

from ml.whitening import Whitening, WhiteningConfig, learn_whitening, same_label_pairs


def _nuisance_data(seed: int = 0, per_class: int = 6, classes: int = 8, dim: int = 16):
    """Classes separated along a few small directions, and one large nuisance direction (say, lighting) that
    varies within every class: raw cosine neighbours follow the nuisance, whitened ones the class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.1
    centres[:, 0] = 0.0
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + rng.normal(size=(len(labels), dim)) * 0.05
    x[:, 0] += rng.uniform(-3.0, 3.0, size=len(labels))  # the nuisance
    x += 5.0 * np.eye(dim)[1]  # a shared offset, as real (non-negative) descriptors have
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def _nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return float((labels[sims.argmax(1)] == labels).mean())


def test_learned_whitening_makes_neighbours_share_the_landmark():
    x, labels = _nuisance_data()
    white = learn_whitening(x, labels.tolist(), WhiteningConfig(method="learned", shrinkage=0.01))
    assert white is not None
    assert _nn_accuracy(x, labels) < 0.6
    assert _nn_accuracy(white.apply(x), labels) == 1.0
    out = white.apply(x)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(white.apply(x[3]), out[3], atol=1e-6)  # one vector or a batch: the same map


def test_no_whitening_without_config_or_enough_pairs():
    x, labels = _nuisance_data()
    assert learn_whitening(x, labels.tolist(), WhiteningConfig()) is None
    distinct = list(range(len(x)))  # every image its own landmark: no pair to learn from
    assert learn_whitening(x, distinct, WhiteningConfig(method="learned")) is None
    unknown = [None] * len(x)
    assert learn_whitening(x, unknown, WhiteningConfig(method="learned")) is None
    with pytest.raises(ValueError, match="whitening method"):
        WhiteningConfig(method="pca")


def test_pairs_and_round_trip(tmp_path):
    assert same_label_pairs(["a", "b", "a", None, "a", None]).tolist() == [[0, 2], [0, 4], [2, 4]]
    x, labels = _nuisance_data()
    white = learn_whitening(x, labels.tolist(), WhiteningConfig(method="learned"))
    white.save(tmp_path)
    again = Whitening.load(tmp_path)
    assert np.allclose(again.apply(x), white.apply(x), atol=1e-6)
    assert Whitening.load(tmp_path / "elsewhere") is None
