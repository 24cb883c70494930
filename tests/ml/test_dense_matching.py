"""ml.dense_matching: spatial verification on lite2's block-4 feature maps, on real photos, including a
day/night pair that RootSIFT cannot verify; its on-disk cache; and the pipeline step that uses it."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from ml.dense_matching import (
    DenseCacheFill,
    DenseFeatureStore,
    DenseMatchConfig,
    DenseTap,
    dense_inliers,
    extract_dense,
)
from ml.embed import EmbedConfig, embed_image, embed_images, view_position
from ml.pipeline import (
    DEFAULT_PIPELINE,
    MULTI_SCALE,
    PipelineConfig,
    dense_store,
    get_pipeline,
    search_one,
)
from ml.regional import RegionalConfig, embed_database_regions
from ml.spatial import LocalFeatureStore
from ml.stages.index_build import build_database
from ml.weights import load_model
from tests.conftest import MINI, mini_rows

BERLIN_NIGHT, BERLIN_DAY = "52992f5255f55c69", "b9d6a79e1feb8601"  # WxBS berlin: illuminated at night, by day
LONDON_BRIDGE, TAJ_MAHAL = "233e2de188985424", "7cf2288df52029fc"


@pytest.fixture(scope="module")
def lite2():
    return load_model("tf_efficientnet_lite2")


def _photo(image_id: str) -> Image.Image:
    return Image.open(MINI / "images" / f"{image_id}.jpg")


@pytest.fixture(scope="module")
def features(lite2):
    ids = (BERLIN_NIGHT, BERLIN_DAY, LONDON_BRIDGE, TAJ_MAHAL)
    return {i: extract_dense(lite2, _photo(i)) for i in ids}


def test_keeps_half_the_positions_as_unit_descriptors(features):
    feats = features[BERLIN_DAY]
    # block 4 of lite2 has stride 16 and 120 channels; the photo's long side is 512 px
    width, height = _photo(BERLIN_DAY).size
    cells = round(512 / 16) * round(512 * min(width, height) / max(width, height) / 16)
    assert abs(len(feats) - cells // 2) <= cells * 0.05
    assert feats.descriptors.shape[1] == 120
    norms = (feats.descriptors**2).sum(axis=1)
    assert abs(norms - 1).max() < 1e-4
    assert feats.positions.min() >= 0


def test_a_photo_matches_itself_everywhere(features):
    feats = features[LONDON_BRIDGE]
    assert dense_inliers(feats, feats) == len(feats)


def test_a_shifted_crop_still_matches(lite2, features):
    photo = _photo(LONDON_BRIDGE).convert("RGB")
    width, height = photo.size
    crop = photo.crop((width // 8, height // 8, width, height))
    assert dense_inliers(features[LONDON_BRIDGE], extract_dense(lite2, crop)) >= 40


def test_day_and_night_photos_of_one_building_match_more_than_unrelated_ones(features):
    true_pair = dense_inliers(features[BERLIN_NIGHT], features[BERLIN_DAY])
    unrelated = [
        dense_inliers(features[BERLIN_NIGHT], features[TAJ_MAHAL]),
        dense_inliers(features[LONDON_BRIDGE], features[TAJ_MAHAL]),
        dense_inliers(features[BERLIN_DAY], features[LONDON_BRIDGE]),
    ]
    assert true_pair >= 20, true_pair
    assert max(unrelated) < 18, unrelated


def test_settings_and_blocks_out_of_range_are_refused(lite2):
    with pytest.raises(ValueError, match="keep"):
        DenseMatchConfig(keep=0)
    with pytest.raises(ValueError, match="block 9 is out of range"):
        extract_dense(lite2, _photo(BERLIN_DAY), DenseMatchConfig(block=9))


def test_the_embedding_pass_gives_the_same_features_with_no_forward_of_their_own(lite2, features):
    cfg = EmbedConfig(image_size=512, scales=MULTI_SCALE, flip=True)
    view = view_position(cfg.scales, cfg.flip)
    assert view == 2 and view_position((0.75,), True) is None  # the scale-1 unmirrored view; none without it
    calls = []
    hook = lite2.backbone.bn2.register_forward_hook(lambda *_: calls.append(1))
    try:
        with DenseTap(lite2, DenseMatchConfig(), view) as tap:
            # Another thread's search through the same model (a web process with threads) is not counted.
            other = threading.Thread(target=embed_image, args=(lite2, _photo(TAJ_MAHAL), cfg))
            other.start()
            other.join()
            embed_image(lite2, _photo(BERLIN_DAY), cfg)
    finally:
        hook.remove()
    assert len(calls) == 12  # two photos, three scales each mirrored: nothing was run for the dense features
    fresh, caught = features[BERLIN_DAY], tap.features
    assert caught.grid == fresh.grid and len(caught) == len(fresh)
    same = (caught.positions == fresh.positions).all(axis=1).mean()
    assert same > 0.98, same  # only ties at the kept/dropped border may swap
    assert abs(dense_inliers(features[BERLIN_NIGHT], caught) - dense_inliers(features[BERLIN_NIGHT], fresh)) <= 2
    assert not lite2.backbone.bn2._forward_hooks  # the hooks are gone once the pass is over
    with pytest.raises(ValueError, match="block 9 is out of range"):
        DenseTap(lite2, DenseMatchConfig(block=9), view)


def _agree(caught, fresh) -> float:
    """The share of kept positions two extractions of one photo agree on."""
    assert caught.grid == fresh.grid and len(caught) == len(fresh)
    return float((np.asarray(caught.positions) == np.asarray(fresh.positions)).all(axis=1).mean())


def test_database_photos_get_their_dense_features_from_their_batched_embedding(lite2, features, tmp_path):
    """As a worker embeds (batches, BN fused on the CPU), a DenseCacheFill caches each photo's dense features
    from its scale-1 view: the store's own pass then finds nothing left to extract."""
    ids = [BERLIN_DAY, BERLIN_NIGHT, LONDON_BRIDGE, TAJ_MAHAL]
    items = [(i, str(MINI / "images" / f"{i}.jpg")) for i in ids]
    paths = [p for _, p in items]
    cfg = EmbedConfig(image_size=512, scales=MULTI_SCALE, flip=True, batch_size=4, num_workers=0)
    store = DenseFeatureStore(tmp_path / "a", DenseMatchConfig(), "tf_efficientnet_lite2", 512, lite2)
    store.put(TAJ_MAHAL, features[TAJ_MAHAL])  # cached already: left as it is
    before = store.path(TAJ_MAHAL).stat().st_mtime_ns
    fill = DenseCacheFill.for_embedding(store, ids, cfg)
    vectors = embed_images(lite2, paths, cfg, tap=fill)
    assert fill.filled == 3 and store.path(TAJ_MAHAL).stat().st_mtime_ns == before
    assert store.ensure(items) == 0  # nothing left for the store's own pass
    assert np.allclose(vectors, embed_images(lite2, paths, cfg), atol=1e-5)  # the tap changes no vector
    assert not any(m._forward_hooks for m in lite2.modules())
    for i in ids:  # what extract_dense gives, but for ties at the kept/dropped border (BN fusion rounds)
        assert _agree(store.get(i), features[i]) > 0.95, i
    night = features[BERLIN_NIGHT]
    assert abs(dense_inliers(night, store.get(BERLIN_DAY)) - dense_inliers(night, features[BERLIN_DAY])) <= 3

    # The region pass (the default pipeline's database embedding) catches the same features.
    regions = DenseFeatureStore(tmp_path / "b", DenseMatchConfig(), "tf_efficientnet_lite2", 512)
    fill = DenseCacheFill.for_embedding(regions, ids, cfg)
    embed_database_regions([lite2], paths, cfg, RegionalConfig(levels=2), tap=fill)
    assert fill.filled == 4 and all(_agree(regions.get(i), store.get(i)) > 0.99 for i in ids[:3])

    # Views that cannot give them: no unmirrored scale-1 view, or another image size.
    assert DenseCacheFill.for_embedding(store, ids, replace(cfg, scales=(0.75, 1.5))) is None
    assert DenseCacheFill.for_embedding(store, ids, replace(cfg, image_size=384)) is None


# ------------------------------------------------------------------------------------------- the cache


def test_the_cache_keeps_features_compact_and_apart_per_model_and_setting(lite2, features, tmp_path):
    cfg = DenseMatchConfig()
    store = DenseFeatureStore(tmp_path, cfg, "tf_efficientnet_lite2", 512, lite2)
    assert store.ensure([(BERLIN_DAY, MINI / "images" / f"{BERLIN_DAY}.jpg")]) == 1
    reader = DenseFeatureStore(tmp_path, cfg, "tf_efficientnet_lite2", 512)  # a search process: no model
    loaded = reader.get(BERLIN_DAY)
    assert loaded.descriptors.dtype == np.float16 and loaded.grid == features[BERLIN_DAY].grid
    assert np.array_equal(loaded.positions, features[BERLIN_DAY].positions)
    # float16 storage costs nothing measurable: the day/night pair verifies as from fresh features
    assert abs(dense_inliers(features[BERLIN_NIGHT], loaded) - dense_inliers(features[BERLIN_NIGHT],
                                                                             features[BERLIN_DAY])) <= 3
    others = [DenseFeatureStore(tmp_path, cfg, "/models/v2/checkpoint.pt", 512),
              DenseFeatureStore(tmp_path, DenseMatchConfig(keep=0.25), "tf_efficientnet_lite2", 512),
              DenseFeatureStore(tmp_path, cfg, "tf_efficientnet_lite2", 384)]
    assert len({store.folder, *(o.folder for o in others)}) == 4
    assert all(BERLIN_DAY not in o for o in others)
    with pytest.raises(ValueError, match=f"no dense features cached for .*{LONDON_BRIDGE}.* no model"):
        reader.ensure([(LONDON_BRIDGE, MINI / "images" / f"{LONDON_BRIDGE}.jpg")])
    reader.path(TAJ_MAHAL).write_bytes(b"cut short")
    with pytest.raises(ValueError, match=f"unreadable dense features of {TAJ_MAHAL}"):
        reader.get(TAJ_MAHAL)


def test_the_bonus_counts_only_photos_with_enough_inliers():
    cfg = DenseMatchConfig(top_n=10, min_inliers=20, inlier_cap=60, weight=0.5)
    assert np.allclose(cfg.bonus(np.array([0, 19, 20, 60, 200])), [0, 0, 0.5 * 20 / 60, 0.5, 0.5])
    assert not DenseMatchConfig().enabled and cfg.enabled


# ------------------------------------------------------------------------------------ the pipeline step


def _dense_pipeline(top_n: int = 8) -> PipelineConfig:
    return replace(get_pipeline("baseline"), name="dense-test", models=("tf_efficientnet_lite2",),
                   dense=DenseMatchConfig(top_n=top_n))


def test_the_pipeline_lifts_the_day_photo_for_the_night_query(lite2, tmp_path):
    pipeline = _dense_pipeline()
    ids = [BERLIN_DAY] + [r["id"] for r in mini_rows() if r["split"] == "index" and r["id"] != BERLIN_DAY][:11]
    items = [(i, MINI / "images" / f"{i}.jpg") for i in ids]
    database = build_database(items, pipeline, tmp_path / "build", feature_dir=tmp_path)
    assert all(i in database.dense for i in ids)  # cached once, beside the RootSIFT cache
    result = search_one(database, [lite2], _photo(BERLIN_NIGHT))
    hits = result.hits
    assert "dense_features" not in result.timings  # caught from the embedding's pass (DenseTap)
    day = next(h for h in hits if h.image_id == BERLIN_DAY)
    assert day.dense_inliers >= 20
    assert day.fused == pytest.approx(day.global_score + float(pipeline.dense.bonus(np.array([day.dense_inliers]))[0]),
                                      abs=1e-5)
    assert all(h.dense_inliers == 0 for h in hits[pipeline.dense.top_n:])  # only the top N is matched
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # Embedded without a scale-1 view, the query's dense features take a pass of their own.
    no_scale_one = replace(database, pipeline=replace(pipeline, scales=(2**-0.5,)))
    result = search_one(no_scale_one, [lite2], _photo(BERLIN_NIGHT))
    assert "dense_features" in result.timings
    assert abs(next(h for h in result.hits if h.image_id == BERLIN_DAY).dense_inliers - day.dense_inliers) <= 2

    plain = search_one(replace(database, dense=None), [lite2], _photo(BERLIN_NIGHT)).hits  # an older index
    assert all(h.dense_inliers == 0 and h.fused == pytest.approx(h.global_score, abs=1e-5) for h in plain)
    rank = [h.image_id for h in hits].index(BERLIN_DAY)
    assert rank < [h.image_id for h in plain].index(BERLIN_DAY) or rank == 0
    assert sum(h.dense_inliers >= 20 for h in hits) <= 2  # unrelated buildings stay unverified


def test_a_lost_or_damaged_cache_file_leaves_its_photo_unverified_not_the_search_failed(lite2, tmp_path, caplog):
    """A database photo's cached features gone (a disk error, a hand-made cleanup) or cut short: searches
    still answer, that photo is ranked as unverified, and the log names it."""
    pipeline = replace(_dense_pipeline(), verification=get_pipeline(DEFAULT_PIPELINE).verification)
    ids = [BERLIN_DAY] + [r["id"] for r in mini_rows() if r["split"] == "index" and r["id"] != BERLIN_DAY][:11]
    database = build_database([(i, MINI / "images" / f"{i}.jpg") for i in ids], pipeline, tmp_path / "build",
                              feature_dir=tmp_path)
    before = {h.image_id: h for h in search_one(database, [lite2], _photo(BERLIN_NIGHT)).hits}
    assert before[BERLIN_DAY].dense_inliers >= 20 and before[BERLIN_DAY].verified

    database.features.path(BERLIN_DAY).unlink()
    database.dense.path(BERLIN_DAY).write_bytes(b"cut short")
    reopened = replace(database, features=LocalFeatureStore(tmp_path, pipeline.local_features),
                       dense=dense_store(pipeline, tmp_path))  # a fresh process: nothing in memory
    hits = {h.image_id: h for h in search_one(reopened, [lite2], _photo(BERLIN_NIGHT)).hits}
    assert set(hits) == set(before)
    assert not hits[BERLIN_DAY].verified and hits[BERLIN_DAY].inliers == 0 and hits[BERLIN_DAY].dense_inliers == 0
    assert hits[BERLIN_DAY].fused == pytest.approx(hits[BERLIN_DAY].global_score, abs=1e-5)
    others = [i for i in ids if i != BERLIN_DAY]
    assert all(hits[i].verification is not None and hits[i].dense_inliers == before[i].dense_inliers for i in others)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"local features of {BERLIN_DAY} cannot be read" in m for m in warned), warned
    assert any(f"dense features of {BERLIN_DAY} cannot be read" in m for m in warned), warned
