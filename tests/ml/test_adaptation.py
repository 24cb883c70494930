"""Adapting to a collection without labels (ml/stages/adapt.py): the pairs of nearest photos that RootSIFT
verifies teach a whitening, which the build applies to the vectors and the region descriptors alike and
search applies to every query."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from ml.pipeline import get_pipeline, search_one
from ml.regional import RegionalConfig
from ml.spatial import LocalFeatureConfig
from ml.stages.adapt import neighbour_pairs
from ml.stages.index_build import build_database
from ml.weights import shared_models
from ml.whitening import AdaptationConfig, Whitening, whitening_from_pairs
from tests.conftest import MINI, mini_rows

ADAPTED = replace(get_pipeline("baseline"), name="adapted", image_size=256, regional=RegionalConfig(levels=2),
                  local_features=LocalFeatureConfig(max_side=512, max_keypoints=500),
                  adaptation=AdaptationConfig(neighbours=5, min_inliers=12, min_pairs=5))


def test_each_neighbour_pair_is_checked_once():
    neighbours = np.array([[1, 2], [0, 2], [1, -1]])
    assert neighbour_pairs(neighbours).tolist() == [[0, 1], [0, 2], [1, 2]]


def test_whitening_from_pairs_keeps_region_padding_empty():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    pairs = np.array([[i, i + 1] for i in range(0, 58, 2)])
    assert whitening_from_pairs(x, pairs[:3], shrinkage=0.1, min_pairs=5) is None  # too few to learn from
    whitening = whitening_from_pairs(x, pairs, shrinkage=0.1, min_pairs=5)
    regions = np.stack([x[:3], np.zeros((3, 8), np.float32)], axis=1)  # (3 photos, 2 regions, 8): row 1 padding
    out = whitening.apply_regions(regions)
    np.testing.assert_allclose(out[:, 0], whitening.apply(x[:3]), atol=1e-6)
    assert not out[:, 1].any()


def test_a_build_adapts_its_vectors_and_regions_and_search_its_queries(tmp_path: Path):
    rows = [r for r in mini_rows() if r["split"] == "index"][:40]
    items = [(r["id"], str(MINI / "images" / f"{r['id']}.jpg")) for r in rows]
    database = build_database(items, ADAPTED, tmp_path)
    whitening = Whitening.load(tmp_path / "index")
    assert whitening is not None and database.whitening is not None
    # The indexed vectors and region 0 of each photo are the set's, whitened alike.
    from ml.embed import read_embedding_shards

    ids, raw = read_embedding_shards(tmp_path / "embeddings", dtype=np.float32)
    np.testing.assert_allclose(np.asarray(database.index.vectors), whitening.apply(raw), atol=2e-3)
    np.testing.assert_allclose(np.asarray(database.regions[:, 0], np.float32), whitening.apply(raw), atol=3e-3)
    models = shared_models(ADAPTED.models)
    for image_id, path in items[:5]:
        hit = search_one(database, models, path).hits[0]
        assert hit.image_id == image_id and hit.global_score > 0.99
