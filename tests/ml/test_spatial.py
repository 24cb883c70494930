"""ml.spatial: RootSIFT features on real photos, the on-disk cache, and verification of real pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ml.spatial import (
    LocalFeatureConfig,
    LocalFeatureStore,
    MatchConfig,
    extract_local_features,
    putative_matches,
    verify_many,
    verify_pair,
)
from tests.conftest import MINI

CFG = LocalFeatureConfig(max_side=640, max_keypoints=600)


@pytest.fixture(scope="module")
def pair_and_other():
    """(query, same-landmark image, other-landmark image) paths from landmarks-mini."""
    gnd = json.loads((MINI / "gnd.json").read_text())
    labels = gnd["labels"]
    # A Phototourism-style query with several positives; its first positive shares a facade with it.
    qid = "0ccf2e2a3f817675"
    positive = gnd["queries"][qid]["easy"][0]
    other = next(i for i in gnd["images"] if labels[i] != labels[positive])
    return [MINI / "images" / f"{i}.jpg" for i in (qid, positive, other)]


def test_features_are_capped_strongest_and_in_original_pixels(pair_and_other):
    path = pair_and_other[0]
    feats = extract_local_features(path, CFG)
    with Image.open(path) as img:
        width, height = img.size
    assert feats.image_size == (width, height)
    assert 100 < len(feats) <= CFG.max_keypoints
    assert feats.descriptors.dtype == np.uint8 and feats.descriptors.shape == (len(feats), 128)
    # Keypoints span the original image, not the 640 px rendition the detector saw.
    assert max(width, height) > CFG.max_side  # so the scaling back is exercised
    assert feats.keypoints[:, 0].max() > 0.7 * width and feats.keypoints[:, 1].max() > 0.7 * height
    assert feats.keypoints[:, 0].max() <= width and feats.keypoints[:, 1].max() <= height
    root = feats.root_sift()
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, atol=1e-4)


def test_keypoints_scale_back_to_original_coordinates(pair_and_other):
    """The same image at half size gives keypoints at the same original-pixel places."""
    with Image.open(pair_and_other[0]) as img:
        big = img.convert("RGB")
    small = big.resize((big.width // 2, big.height // 2), Image.Resampling.LANCZOS)
    cfg = LocalFeatureConfig(max_side=max(small.size), max_keypoints=300)
    a = extract_local_features(big, cfg)  # shrunk to the small size internally
    b = extract_local_features(small, cfg)
    b_in_big = (b.keypoints + 0.5) * 2 - 0.5
    # Most strong keypoints of one are within 2 px (of the big image) of one of the other.
    dist = np.linalg.norm(a.keypoints[:100, None, :] - b_in_big[None, :, :], axis=2).min(axis=1)
    assert np.median(dist) < 2.0


def test_same_landmark_verifies_other_does_not(pair_and_other):
    query, positive, other = (extract_local_features(p, CFG) for p in pair_and_other)
    cfg = MatchConfig()
    good = verify_pair(query, positive, cfg)
    bad = verify_pair(query, other, cfg)
    assert good.inliers >= 15 > bad.inliers
    assert good.query_points.shape == good.database_points.shape == (good.inliers, 2)
    # Inlier points lie inside their own images (original-pixel coordinates).
    assert (good.database_points <= np.array(positive.image_size) + 1).all()
    assert good.putative >= good.inliers


def test_fundamental_model_also_verifies(pair_and_other):
    query, positive, _ = (extract_local_features(p, CFG) for p in pair_and_other)
    assert verify_pair(query, positive, MatchConfig(model="fundamental")).inliers >= 15


def test_ratio_test_and_mutual_check():
    rng = np.random.default_rng(0)
    db = rng.random((50, 128)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    query = db[[3, 7]] + 0.01 * rng.random((2, 128)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    assert putative_matches(query, db, ratio=0.8).tolist() == [[0, 3], [1, 7]]
    # A database with two copies of the target: the nearest and second nearest are equal, ratio fails.
    twins = np.concatenate([db, db[[3]]])
    assert [0, 3] not in putative_matches(query, twins, ratio=0.8).tolist()


def test_store_caches_on_disk_atomically(tmp_path, pair_and_other):
    store = LocalFeatureStore(tmp_path, CFG)
    items = [("q", pair_and_other[0]), ("p", pair_and_other[1])]
    assert store.ensure(items) == 2
    assert store.ensure(items) == 0  # cached: nothing recomputed
    files = sorted(p.name for p in store.folder.iterdir())
    assert files == ["p.npz", "q.npz"]  # no temp files left behind
    fresh = LocalFeatureStore(tmp_path, CFG)  # a new process reads the same files
    np.testing.assert_array_equal(fresh.get("q").keypoints, store.get("q").keypoints)
    with pytest.raises(ValueError):
        store.path("../escape")


def test_verify_many_equals_pairwise(pair_and_other):
    query, positive, other = (extract_local_features(p, CFG) for p in pair_and_other)
    database = [positive, other, positive]
    # A small batch limit forces several matrix products; results must not depend on the grouping.
    many = verify_many(query, database, MatchConfig(), batch_keypoints=len(positive) + 1)
    single = [verify_pair(query, d, MatchConfig()) for d in database]
    assert [v.inliers for v in many] == [v.inliers for v in single]
    assert many[0].inliers >= 15
    np.testing.assert_array_equal(many[0].query_points, single[0].query_points)
