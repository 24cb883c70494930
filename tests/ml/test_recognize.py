"""Recognition: landmark + calibrated confidence from the nearest labelled images, "no landmark" for photos
that match nothing (scikit-image's bundled sample photos: coffee, a cat, an astronaut, a rocket)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml.metrics import global_average_precision
from ml.pipeline import DEFAULT_PIPELINE, get_pipeline, load_models, search_one
from ml.recognize import RecognitionConfig, gap_predictions, recognize
from ml.rerank import LabelVoteConfig, VerificationConfig
from ml.spatial import LocalFeatureConfig
from ml.stages.index_build import build_database
from tests.conftest import MINI

NON_LANDMARKS = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")


def non_landmark_photos() -> list[Path]:
    """scikit-image's sample photos, read from the installed wheel's files (nothing is downloaded)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-image is a test dependency: pip install scikit-image==0.26.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = [folder / name for name in NON_LANDMARKS]
    missing = [p.name for p in paths if not p.is_file()]
    assert not missing, f"not bundled in this scikit-image wheel: {missing}"
    return paths


def test_vote_confidence_and_no_landmark_threshold():
    cfg = RecognitionConfig(vote=LabelVoteConfig(k=3), threshold=0.3)
    # A verified neighbour (70 inliers) with a high similarity: sure.
    sure = recognize(["a", "b", "b"], np.array([0.9, 0.6, 0.55]), np.array([70, 0, 0]), cfg)
    assert sure.landmark_id == "a" and sure.confidence > 0.8 and sure.is_landmark
    assert [c[0] for c in sure.candidates] == ["a", "b"]
    # Unverified, dissimilar neighbours: no landmark, but candidates are still listed.
    unsure = recognize(["a", "b", "c"], np.array([0.55, 0.5, 0.45]), np.array([3, 2, 0]), cfg)
    assert unsure.landmark_id is None and unsure.confidence < 0.3 and unsure.candidates
    assert gap_predictions({"x": sure, "y": unsure}) == {"x": ("a", sure.confidence), "y": None}


def _small_labelled_db(tmp_path: Path, pipeline):
    gnd = json.loads((MINI / "gnd.json").read_text())
    labels = gnd["labels"]
    queries = ["2057eb3037d018d4", "0ccf2e2a3f817675", "a50cef9da7542f21"]
    db = [i for q in queries for i in gnd["queries"][q]["easy"][:3]]
    used = {labels[i] for i in db}
    db += [i for i in gnd["images"] if labels[i] not in used][:8]
    models = load_models(pipeline)
    items = [(i, MINI / "images" / f"{i}.jpg") for i in db]
    database = build_database(items, pipeline, tmp_path, {i: labels[i] for i in db})
    truth = {q: labels[gnd["queries"][q]["easy"][0]] for q in queries}
    return database, models, truth


def test_landmarks_recognised_and_non_landmarks_rejected_fast(tmp_path):
    """A small labelled database, lite0 at 256 px: the same rule the default pipeline uses."""
    default = get_pipeline(DEFAULT_PIPELINE)
    pipeline = replace(
        default, models=("tf_efficientnet_lite0",), model_weights=None, image_size=256, scales=(1.0,),
        verification=replace(default.verification, top_n=8),
        local_features=LocalFeatureConfig(max_side=640, max_keypoints=600),
    )
    database, models, truth = _small_labelled_db(tmp_path, pipeline)
    for qid, landmark in truth.items():
        rec = search_one(database, models, MINI / "images" / f"{qid}.jpg").recognition
        assert rec.landmark_id == landmark, (qid, rec)
        assert rec.confidence >= pipeline.recognition.threshold
    for photo in non_landmark_photos():
        result = search_one(database, models, photo)
        assert result.recognition.landmark_id is None, (photo.name, result.recognition)
        assert result.hits  # results are still ranked; only the landmark answer is withheld


@pytest.mark.slow
def test_default_pipeline_on_landmarks_mini(tmp_path):
    """The product default on the whole set: GAP, most queries recognised, every non-landmark rejected."""
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    gnd = json.loads((MINI / "gnd.json").read_text())
    models = load_models(pipeline)
    items = [(i, MINI / "images" / f"{i}.jpg") for i in gnd["images"]]
    database = build_database(items, pipeline, tmp_path, gnd["labels"])
    recognitions = {}
    for qid in gnd["queries"]:
        recognitions[qid] = search_one(database, models, MINI / "images" / f"{qid}.jpg").recognition
    truth = {qid: {gnd["labels"][entry["easy"][0]]} for qid, entry in gnd["queries"].items()}
    correct = sum(r.landmark_id in truth[q] for q, r in recognitions.items())
    for n, photo in enumerate(non_landmark_photos()):
        rec = search_one(database, models, photo).recognition
        assert rec.landmark_id is None, (photo.name, rec)
        recognitions[f"non-landmark-{n}"] = rec
        truth[f"non-landmark-{n}"] = set()
    gap = global_average_precision(gap_predictions(recognitions), truth)
    print(f"GAP {gap:.3f}, {correct}/{len(gnd['queries'])} landmark queries recognised")
    assert correct > 0.5 * len(gnd["queries"])  # most landmark queries keep their landmark
    assert gap >= 0.5


def test_verification_switch_changes_evidence():
    cfg = RecognitionConfig(vote=LabelVoteConfig(k=2), threshold=0.0)
    with_inliers = recognize(["a", "b"], np.array([0.7, 0.75]), np.array([60, 0]), cfg)
    without = recognize(["a", "b"], np.array([0.7, 0.75]), None, cfg)
    assert with_inliers.landmark_id == "a" and without.landmark_id == "b"
    assert VerificationConfig().top_n == 0  # verification is opt-in per pipeline
