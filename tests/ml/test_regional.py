"""ml.regional: R-MAC regions, region descriptors that share the global descriptor's computation, the
all-pairs regional similarity and its score-level query expansion, and the pipeline step that re-scores
the shortlist with them, on real photos."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from ml.embed import EmbedConfig, embed_image, embed_images, l2_normalize
from ml.pipeline import PipelineConfig, get_pipeline, load_models, search_one
from ml.regional import (
    FILE_NAME,
    RegionalConfig,
    embed_database_regions,
    embed_image_regions,
    expanded_region_scores,
    region_count,
    region_similarity,
    rmac_boxes,
)
from ml.stages.index_build import build_database
from ml.weights import load_model
from ml.whitening import WhiteningConfig
from tests.conftest import MINI, mini_rows

CFG = EmbedConfig(image_size=256, scales=(1.0, 2**-0.5), num_workers=0)
REGIONS = RegionalConfig(levels=3)


@pytest.fixture(scope="module")
def lite0():
    return load_model("tf_efficientnet_lite0")


def _photo(image_id: str):
    return MINI / "images" / f"{image_id}.jpg"


def _index_rows(n: int) -> list[dict]:
    return [r for r in mini_rows() if r["split"] == "index"][:n]


def _side(box) -> float:
    return round(max(box[2] - box[0], box[3] - box[1]), 3)


def test_rmac_boxes_follow_cirtorch_grid():
    landscape = rmac_boxes(12, 16, 3)  # 4:3 feature grid: one extra step along the long side
    assert landscape[0] == (0.0, 0.0, 1.0, 1.0)
    sides = [_side(b) for b in landscape[1:]]
    # level l: l x (l + 1) squares of side 2 * 12 / (l + 1) cells: 12, 8 and 6 of the 12 rows
    assert (sides.count(1.0), sides.count(0.667), sides.count(0.5)) == (2, 6, 12) and len(landscape) == 21
    assert all(0.0 <= v <= 1.0 for b in landscape for v in b)
    assert all(b[2] > b[0] and b[3] > b[1] for b in landscape)
    portrait = rmac_boxes(16, 12, 3)
    assert sorted((y0, x0, y1, x1) for x0, y0, x1, y1 in portrait) == sorted(landscape)
    square = rmac_boxes(16, 16, 3)  # level 1 of a square grid is the whole image again: listed once
    assert len(square) == 1 + 4 + 9 and len(set(square)) == len(square)
    assert rmac_boxes(12, 16, 0) == [(0.0, 0.0, 1.0, 1.0)]


@pytest.mark.parametrize("flip", [False, True])
def test_region_zero_is_the_global_descriptor(lite0, flip):
    cfg = replace(CFG, flip=flip)
    image = Image.open(_photo("2057eb3037d018d4"))
    regions = embed_image_regions(lite0, image, cfg, REGIONS)
    glob = embed_image(lite0, Image.open(_photo("2057eb3037d018d4")), cfg)
    assert regions.shape[1] == glob.shape[0] and len(regions) > 10
    np.testing.assert_allclose(regions[0], glob, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(regions, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(regions[1:], regions[0], atol=1e-2)  # the regions do describe other parts


def test_database_regions_match_the_query_side_and_are_written_atomically(lite0, tmp_path):
    rows = [r for r in mini_rows() if int(r["width"]) > int(r["height"])][:1]
    rows += [r for r in mini_rows() if int(r["width"]) < int(r["height"])][:1]  # other aspect: fewer regions
    paths = [str(_photo(r["id"])) for r in rows]
    out = tmp_path / FILE_NAME
    stored = embed_database_regions([lite0], paths, CFG, REGIONS, out)
    assert isinstance(stored, np.memmap) and stored.dtype == np.float16
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temp file left behind
    in_memory = embed_database_regions([lite0], paths, CFG, REGIONS)
    np.testing.assert_array_equal(in_memory, stored)
    for i, path in enumerate(paths):
        query = embed_image_regions(lite0, Image.open(path), CFG, REGIONS)
        np.testing.assert_allclose(stored[i, : len(query)].astype(np.float32), query, atol=2e-3)
        assert not stored[i, len(query):].any()  # zero padding up to the most regions of any image
    np.testing.assert_allclose(stored[:, 0].astype(np.float32), embed_images(lite0, paths, CFG), atol=2e-3)


def test_database_regions_in_batches_with_a_decode_worker_equal_one_at_a_time(lite0):
    """Batched by shape (two photos of one size, a photo of another aspect between them), decoded in a
    worker process, BN fused: the same regions, in the order of the paths, as one photo at a time
    in-process. At 128 px the 1024 x 683 photos get 21 regions and the 975 x 861 one 10."""
    cfg = replace(CFG, image_size=128)
    wide = [r for r in mini_rows() if (r["width"], r["height"]) == ("1024", "683")][:2]
    squarer = [r for r in mini_rows() if (r["width"], r["height"]) == ("975", "861")][:1]
    paths = [str(_photo(r["id"])) for r in (wide[0], squarer[0], wide[1])]
    one_by_one = embed_database_regions([lite0], paths, replace(cfg, fuse_bn=False), REGIONS)
    batched = embed_database_regions([lite0], paths, replace(cfg, batch_size=3, num_workers=1), REGIONS)
    np.testing.assert_allclose(batched.astype(np.float32), one_by_one.astype(np.float32), atol=2e-3)
    counts = [region_count(path, cfg, REGIONS) for path in paths]
    assert counts == [21, 10, 21] and batched.shape[1] == 21
    assert not batched[1, 10:].any() and batched[1, 9].any()  # zero-padded after its own regions


def test_details_of_photos_find_them_better_by_regions(lite0):
    """The top-left quarter of each of ten photos, searched among the ten: its regional similarity to its
    source beats the global one on average, and regions put the source first at least as often."""
    paths = [str(_photo(r["id"])) for r in _index_rows(10)]
    database = embed_database_regions([lite0], paths, CFG, REGIONS)
    gains, found_regional, found_global = [], 0, 0
    for k, path in enumerate(paths):
        source = Image.open(path).convert("RGB")
        query = embed_image_regions(lite0, source.crop((0, 0, source.width // 2, source.height // 2)), CFG, REGIONS)
        regional = region_similarity(query, database)
        glob = database[:, 0].astype(np.float32) @ query[0]
        assert np.all(regional >= glob - 1e-3)  # the whole-image pair is one of the pairs
        gains.append(regional[k] - glob[k])
        found_regional += int(np.argmax(regional)) == k
        found_global += int(np.argmax(glob)) == k
    assert np.mean(gains) > 0.03
    assert found_regional >= found_global and found_regional >= 7


def test_expanded_scores_of_whole_images_are_cosines_to_the_alpha_qe_vector():
    rng = np.random.default_rng(0)
    q, a, b = l2_normalize(np.abs(rng.normal(size=(3, 32))).astype(np.float32))
    candidates = l2_normalize(np.abs(rng.normal(size=(7, 32))).astype(np.float32))
    expansion = [(q[None], 1.0), (a[None], 0.4), (b[None], 0.2)]
    expected = candidates @ l2_normalize(q + 0.4 * a + 0.2 * b)
    np.testing.assert_allclose(expanded_region_scores(expansion, candidates[:, None, :]), expected, atol=1e-5)
    np.testing.assert_allclose(expanded_region_scores([(q[None], 1.0)], candidates[:, None, :]), candidates @ q,
                               atol=1e-6)


def _regional_pipeline() -> PipelineConfig:
    return replace(get_pipeline("baseline"), name="regional-test", image_size=256,
                   regional=RegionalConfig(levels=3, shortlist=12))


def test_the_pipeline_rescores_its_shortlist_by_regions(tmp_path):
    pipeline = _regional_pipeline()
    rows = _index_rows(20)
    items = [(r["id"], _photo(r["id"])) for r in rows]
    models = load_models(pipeline)
    database = build_database(items, pipeline, tmp_path)
    assert (tmp_path / "index" / FILE_NAME).is_file()  # stored beside the index, as build_index does
    assert database.regions.shape[:2][0] == 20 and database.regions.shape[2] == 1280
    query = rows[5]
    result = search_one(database, models, _photo(query["id"]))
    assert result.hits[0].image_id == query["id"]  # a database photo finds itself
    shortlisted, rest = result.hits[:12], result.hits[12:]
    assert all(h.fused >= h.global_score - 1e-3 for h in shortlisted)
    assert any(h.fused > h.global_score + 0.01 for h in shortlisted)  # regions, not the global score
    assert all(abs(h.fused - h.global_score) < 1e-5 for h in rest)  # below the shortlist: global order
    assert min(h.fused for h in shortlisted) >= max(h.fused for h in rest) - 1e-6

    plain = replace(database, regions=None)  # an index built without regions: the step is skipped
    assert all(abs(h.fused - h.global_score) < 1e-5 for h in search_one(plain, models, _photo(query["id"])).hits)


def test_regions_and_learned_whitening_are_refused_together():
    with pytest.raises(ValueError, match="regional re-scoring does not support whitening learned from labels"):
        replace(_regional_pipeline(), whitening=WhiteningConfig(method="learned"))
