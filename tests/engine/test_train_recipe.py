"""`train --recipe NAME`: the recipe seeds the job, the options given override it, the model it trains becomes
the active one, and `evaluate --model active` evaluates that model."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import worker.registry  # noqa: F401 - registers the job functions, as the worker does
from ml.recipes import RECIPES
from tests.layouts import make_eval_layout
from webapp.jobs.models import Job
from webapp.search.models import ModelVersion
from webapp.search.services import active_model_version

pytestmark = pytest.mark.django_db


def test_an_unknown_recipe_is_refused_with_the_known_ones(imported_mini):
    with pytest.raises(CommandError, match="unknown recipe 'nope'; known: current, recommended"):
        call_command("train", "--recipe", "nope", "--max-steps", "1")
    assert not Job.objects.filter(kind=Job.Kind.TRAIN).exists()


def _evaluate_active(layout, out) -> dict:
    call_command("evaluate", str(layout), "--model", "active", "--pipeline", "baseline", "--no-labels",
                 "--json", str(out))
    return json.loads(out.read_text())


def test_recipe_seeds_the_job_options_override_and_evaluate_active_uses_the_trained_model(imported_mini, tmp_path):
    layout = make_eval_layout(tmp_path / "layout")
    untrained = _evaluate_active(layout, tmp_path / "before.json")
    assert untrained["pipeline"]["parameters"]["models"] == ["tf_efficientnet_lite0"]  # the preset's own model

    call_command("train", "--recipe", "recommended", "--splits", "index", "--max-steps", "1", "--batch-size", "4",
                 "--image-size", "64", "--warmup-steps", "1", "--name", "rec")
    job = Job.objects.get(kind=Job.Kind.TRAIN)
    recipe = RECIPES["recommended"]
    assert job.state == Job.State.SUCCEEDED and job.params["recipe"] == "recommended"
    assert job.params["model"] == recipe.model
    given = {"max_steps": 1, "batch_size": 4, "image_size": 64, "warmup_steps": 1}
    assert job.params["train"] == {**recipe.train, **given}
    mv = ModelVersion.objects.get(name="rec")
    assert mv.backbone == "tf_efficientnet_lite2" and mv.params["provenance"]["recipe"] == "recommended"
    assert mv.params["train"]["freeze_blocks"] == recipe.train["freeze_blocks"]
    assert "distill" in mv.metrics["steps"][0]
    assert active_model_version() == mv

    trained = _evaluate_active(layout, tmp_path / "after.json")
    assert trained["pipeline"]["parameters"]["models"] == [mv.checkpoint]
    assert trained["rankings"] != untrained["rankings"] or trained["medium"] != untrained["medium"]
