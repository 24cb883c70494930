"""ml.evaluate and `manage.py evaluate` on small layouts built from landmarks-mini's real photos."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from ml.evaluate import RESULT_KEYS, EvalCache, LayoutError, evaluate, read_layout, run_evaluation
from ml.pipeline import PipelineConfig, get_pipeline
from ml.rerank import LabelRerankConfig, VerificationConfig
from ml.spatial import LocalFeatureConfig
from tests.conftest import MINI
from tests.layouts import EVAL_QUERIES, make_eval_layout

QUERIES = EVAL_QUERIES

# Small and fast, but every stage on: verification, verified QE, label re-ranking.
FAST = replace(
    get_pipeline("baseline"),
    name="fast-test",
    image_size=256,
    verification=VerificationConfig(top_n=6, min_inliers=15, mode="fused", qe_k=3),
    local_features=LocalFeatureConfig(max_side=512, max_keypoints=400),
    label_rerank=LabelRerankConfig(method="discriminative", threshold=0.1),
)


@pytest.fixture(scope="module")
def layout_dir(tmp_path_factory) -> Path:
    return make_eval_layout(tmp_path_factory.mktemp("eval") / "mini3")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> EvalCache:
    return EvalCache(tmp_path_factory.mktemp("features"))


def test_result_has_exactly_the_keys_and_complete_rankings(layout_dir, cache):
    result = evaluate(layout_dir, FAST, use_labels=True, cache=cache)
    assert tuple(result) == RESULT_KEYS
    db = json.loads((layout_dir / "gnd.json").read_text())["images"]
    assert set(result["rankings"]) == set(QUERIES)
    for ranking in result["rankings"].values():
        assert sorted(ranking) == sorted(db)  # every database image, once
    assert result["hard"] is None  # no query has hard positives
    assert 50 <= result["medium"] <= 100 and 0 <= result["map_at_100"] <= 100
    assert result["recall_at_1"] == 100.0
    assert 0 < result["gap"] <= 100  # recognition against the queries' landmarks (their positives' label)
    assert result["seconds_per_query"] > 0 and result["database_seconds"] > 0
    assert result["pipeline"]["name"] == "fast-test"
    assert result["pipeline"]["parameters"]["verification"]["top_n"] == 6
    json.dumps(result)  # JSON-serialisable as it is


def test_no_labels_never_reads_labels(layout_dir, tmp_path, cache):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(layout_dir, poisoned)
    gnd = json.loads((poisoned / "gnd.json").read_text())
    gnd["labels"] = "this is not a mapping: reading it would fail"
    (poisoned / "gnd.json").write_text(json.dumps(gnd))
    with pytest.raises(LayoutError, match="labels"):
        read_layout(poisoned, use_labels=True)
    assert read_layout(poisoned, use_labels=False).labels is None
    without = evaluate(poisoned, FAST, use_labels=False, cache=EvalCache(tmp_path / "f"))
    del gnd["labels"]
    (poisoned / "gnd.json").write_text(json.dumps(gnd))
    removed = evaluate(poisoned, FAST, use_labels=True, cache=EvalCache(tmp_path / "g"))
    assert without["rankings"] == removed["rankings"]
    assert without["gap"] is None and removed["gap"] is None  # no labels, no recognition to score


def test_bbx_crop_is_applied_and_queries_folder_comes_first(layout_dir, tmp_path, cache):
    """The query is pasted into a larger unrelated canvas in queries/; its bbx recovers it."""
    framed = tmp_path / "framed"
    shutil.copytree(layout_dir, framed)
    gnd = json.loads((framed / "gnd.json").read_text())
    qid = QUERIES[0]
    with Image.open(MINI / "images" / f"{qid}.jpg") as img:
        photo = img.convert("RGB")
    canvas = Image.new("RGB", (photo.width * 2, photo.height * 2), (30, 120, 200))
    noise = np.random.default_rng(0).integers(0, 255, (canvas.height, canvas.width, 3), dtype=np.uint8)
    canvas = Image.fromarray(noise)
    x0, y0 = photo.width // 2, photo.height // 3
    canvas.paste(photo, (x0, y0))
    (framed / "queries").mkdir()
    canvas.save(framed / "queries" / f"{qid}.jpg", quality=95)
    gnd["queries"] = {qid: {**gnd["queries"][qid], "bbx": [x0, y0, x0 + photo.width, y0 + photo.height]}}
    (framed / "gnd.json").write_text(json.dumps(gnd))

    plain_cfg = replace(FAST, verification=VerificationConfig(), label_rerank=LabelRerankConfig())
    original = run_evaluation(layout_dir, plain_cfg, use_labels=False, cache=cache).results[qid]
    cropped = run_evaluation(framed, plain_cfg, use_labels=False, cache=cache).results[qid]
    gnd["queries"][qid].pop("bbx")
    (framed / "gnd.json").write_text(json.dumps(gnd))
    uncropped = run_evaluation(framed, plain_cfg, use_labels=False, cache=cache).results[qid]

    def top_scores(result):
        return {h.image_id: h.global_score for h in result.hits}

    a, b, c = top_scores(original), top_scores(cropped), top_scores(uncropped)
    best = original.hits[0].image_id
    assert abs(a[best] - b[best]) < 0.03  # the crop is (up to JPEG re-encoding) the original photo
    assert a[best] - c[best] > 0.1  # the noisy frame, uncropped, looks much less like it


def test_layout_errors_are_clear(tmp_path):
    with pytest.raises(LayoutError, match="gnd.json"):
        read_layout(tmp_path)
    (tmp_path / "gnd.json").write_text(json.dumps({"images": ["abc"], "queries": {"q": {"easy": ["abc"]}}}))
    with pytest.raises(LayoutError, match="abc.jpg"):
        read_layout(tmp_path)


def test_command_writes_json_and_prints_summary(layout_dir, tmp_path, capsys):
    out = tmp_path / "out.json"
    call_command("evaluate", str(layout_dir), "--json", str(out), "--pipeline", "baseline", "--no-labels")
    result = json.loads(out.read_text())
    assert tuple(result) == RESULT_KEYS
    printed = capsys.readouterr().out
    assert "mAP medium" in printed and f"{result['medium']:.2f}" in printed


def test_command_evaluates_a_whole_configuration_given_as_json(layout_dir, tmp_path, cache):
    """`--config FILE`: what an index version records, or a benchmark's variant, evaluated as it is."""
    (tmp_path / "fast.json").write_text(json.dumps(FAST.as_dict()))
    out = tmp_path / "out.json"
    call_command("evaluate", str(layout_dir), "--json", str(out), "--config", str(tmp_path / "fast.json"),
                 "--no-labels")
    result = json.loads(out.read_text())
    assert result["pipeline"]["name"] == "fast-test" and result["pipeline"]["parameters"] == json.loads(json.dumps(FAST.as_dict()))
    assert result["rankings"] == evaluate(layout_dir, FAST, use_labels=False, cache=cache)["rankings"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(CommandError, match="bad.json: not a pipeline configuration"):
        call_command("evaluate", str(layout_dir), "--config", str(tmp_path / "bad.json"))


def test_command_rejects_a_folder_not_in_the_layout(tmp_path):
    with pytest.raises(CommandError, match="gnd.json"):
        call_command("evaluate", str(tmp_path), "--json", str(tmp_path / "x.json"))
    with pytest.raises(CommandError, match="unknown pipeline"):
        call_command("evaluate", str(tmp_path), "--pipeline", "nope")


def test_command_lists_pipelines(capsys):
    call_command("evaluate", "--list-pipelines")
    printed = capsys.readouterr().out
    assert "(default)" in printed and "baseline" in printed


def test_pipeline_config_is_plain_data():
    cfg = PipelineConfig()
    assert cfg.as_dict()["verification"]["top_n"] == cfg.verification.top_n
