"""ml.dense_matching: spatial verification on lite2's block-4 feature maps, on real photos, including a
day/night pair that RootSIFT cannot verify."""

from __future__ import annotations

import pytest
from PIL import Image

from ml.dense_matching import DenseMatchConfig, dense_inliers, extract_dense
from ml.weights import load_model
from tests.conftest import MINI

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
