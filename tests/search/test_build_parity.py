"""What `evaluate` measures is what the product builds: the same stages make the index either way, so a
build_index of landmarks-mini's index photos searched through the web engine gives the very vectors,
regions, shortlists, rankings and answers that ml.evaluate gives on the same photos. The default pipeline
with every step on (multi-scale, mirrored views, regions, QE, RootSIFT and dense verification, labels), at
a smaller image size to keep the test short; at its own size with `-m slow`."""

from dataclasses import replace

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from ml.evaluate import run_evaluation
from ml.pipeline import get_pipeline, ranking_depth, search_one
from ml.spatial import LocalFeatureConfig
from ml.whitening import AdaptationConfig
from tests.conftest import MINI
from tests.pipelines import config_file
from webapp.search.engine import current_engine
from webapp.search.models import IndexVersion

pytestmark = pytest.mark.django_db
SMALL_DEFAULT = replace(get_pipeline("default"), name="default-256", image_size=256,
                        local_features=LocalFeatureConfig(max_side=512, max_keypoints=500))


@pytest.mark.parametrize("pipeline", [SMALL_DEFAULT, pytest.param(get_pipeline("default"), marks=pytest.mark.slow)],
                         ids=["default-256", "default"])
def test_evaluate_and_a_product_build_give_the_same_rankings(imported_mini, tmp_path, pipeline):
    call_command("build_index", "--config", config_file(tmp_path, pipeline), "--splits", "index")
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.pipeline_config() == pipeline
    product = current_engine()
    run = run_evaluation(MINI, pipeline, use_labels=True)
    built, measured = product.database, run.database
    assert sorted(built.ids) == sorted(measured.ids) and len(built.ids) == 145

    at = {image_id: n for n, image_id in enumerate(measured.ids)}
    order = [at[i] for i in built.ids]
    np.testing.assert_array_equal(np.asarray(built.index.vectors), np.asarray(measured.index.vectors)[order])
    np.testing.assert_array_equal(np.asarray(built.regions), np.asarray(measured.regions)[order])

    depth = ranking_depth(built.index.count)
    for query in run.layout.queries:
        mine = search_one(built, product.models, query.path, top_k=depth)
        theirs = run.results[query.query_id]
        assert [h.image_id for h in mine.hits] == [h.image_id for h in theirs.hits], query.query_id
        assert [(h.inliers, h.dense_inliers) for h in mine.hits] == [(h.inliers, h.dense_inliers) for h in theirs.hits]
        np.testing.assert_allclose([h.score for h in mine.hits], [h.score for h in theirs.hits], atol=1e-6)
        assert (mine.recognition.landmark_id is None) == (theirs.recognition.landmark_id is None)
        if theirs.recognition.landmark_id is not None:
            assert mine.recognition.landmark_id == str(theirs.recognition.landmark_id)
            assert mine.recognition.confidence == pytest.approx(theirs.recognition.confidence, abs=1e-6)


def test_an_adapted_build_records_its_whitening_and_searches_as_evaluate_does(imported_mini, tmp_path, client,
                                                                               viewer_user):
    """A pipeline that adapts to its collection: the product build learns the same whitening from the same
    verified pairs as evaluate, records how many, searches alike, and the models page says so."""
    pipeline = replace(get_pipeline("web-fast"), name="web-fast-adapted-256", image_size=256,
                       adaptation=AdaptationConfig(neighbours=10, min_inliers=15, shrinkage=0.1))
    call_command("build_index", "--config", config_file(tmp_path, pipeline), "--splits", "index")
    iv = IndexVersion.objects.get(is_active=True)
    adapted = iv.params["adaptation"]
    assert adapted["whitened"] and adapted["pairs"] >= pipeline.adaptation.min_pairs
    assert adapted["checked"] >= adapted["pairs"]
    product = current_engine()
    run = run_evaluation(MINI, pipeline, use_labels=True)
    built, measured = product.database, run.database
    np.testing.assert_array_equal(built.whitening.projection, measured.whitening.projection)
    at = {image_id: n for n, image_id in enumerate(measured.ids)}
    np.testing.assert_array_equal(np.asarray(built.index.vectors),
                                  np.asarray(measured.index.vectors)[[at[i] for i in built.ids]])
    for query in run.layout.queries[:8]:
        mine = search_one(built, product.models, query.path, top_k=ranking_depth(built.index.count))
        assert [h.image_id for h in mine.hits] == [h.image_id for h in run.results[query.query_id].hits]

    client.force_login(viewer_user)
    html = client.get(reverse("model-list")).content.decode()
    assert f"adapted to this collection: {adapted['pairs']} verified pairs" in html
