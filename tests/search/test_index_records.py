"""An index version records the whole configuration it was built with, and everything that reads it later
(search, pruning) rebuilds from that record: a preset edited or deleted after a build changes nothing for
the index built with it. Versions from before the record are migrated from the presets as they were."""

import importlib
from dataclasses import replace

import pytest
from django.apps import apps
from django.core.management import call_command

from ml import pipeline as pipelines
from ml.embed import read_embedding_shards
from ml.images import load_rgb
from ml.pipeline import feature_cache_keys, get_pipeline
from ml.spatial import LocalFeatureConfig
from ml.weights import weights_digest
from tests.pipelines import REGIONAL, config_file
from webapp.catalog.models import Image
from webapp.search import engine
from webapp.search.models import EmbeddingSet, IndexVersion
from webapp.search.pruning import prune
from webapp.search.services import feature_dir, image_file_path, packaged_model_version

pytestmark = pytest.mark.django_db
MIGRATION = importlib.import_module("webapp.search.migrations.0006_index_version_records")


def _search(iv: IndexVersion, photo: Image) -> list[tuple[str, float, int]]:
    """The hits a web process that loads ``iv`` afresh gives for ``photo`` (as after a restart)."""
    loaded = engine._load(iv)
    result = pipelines.search_one(loaded.database, loaded.models, load_rgb(image_file_path(photo)))
    return [(h.image_id, round(h.score, 5), h.inliers) for h in result.hits[:20]]


def test_a_built_index_searches_the_same_after_its_preset_is_edited_or_deleted(imported_mini, monkeypatch):
    call_command("build_index", "--pipeline", "web-fast", "--splits", "query")
    iv = IndexVersion.objects.get(is_active=True)
    built = get_pipeline("web-fast")
    assert iv.params["pipeline"] == "web-fast" and iv.pipeline_config() == built
    assert iv.params["models"] == [{"spec": "tf_efficientnet_lite0", "digest": weights_digest("tf_efficientnet_lite0")}]
    assert iv.feature_caches == feature_cache_keys(built) and iv.params["regions"] is None
    photo = Image.objects.filter(split=Image.Split.QUERY).order_by("pk")[3]
    before = _search(iv, photo)
    assert before[0][0] == photo.external_id and before[0][2] > 0  # found itself, verified

    # Edited: another image size, other local features (another cache), no verification.
    edited = replace(built, image_size=256, local_features=LocalFeatureConfig(max_side=800),
                     verification=replace(built.verification, top_n=0))
    monkeypatch.setitem(pipelines.PIPELINES, "web-fast", edited)
    assert _search(iv, photo) == before
    sift = feature_dir() / built.local_features.cache_key()
    unused = feature_dir() / edited.local_features.cache_key()
    unused.mkdir()
    assert prune(0, dry_run=True).caches == [unused]  # the index's own cache is not pruned
    # Deleted: nothing names it any more.
    monkeypatch.delitem(pipelines.PIPELINES, "web-fast")
    assert _search(iv, photo) == before
    out = prune(0)
    assert out.caches == [unused] and sift.is_dir() and len(list(sift.iterdir())) == 34
    assert _search(IndexVersion.objects.get(pk=iv.pk), photo) == before


def test_an_index_without_a_record_says_so():
    es = EmbeddingSet.objects.create(model_version=packaged_model_version(), path="", dim=0)
    iv = IndexVersion.objects.create(embedding_set=es, path="/nowhere", params={"pipeline": "default"})
    with pytest.raises(ValueError, match=f"index #{iv.pk} records no pipeline configuration; build it again"):
        engine._load(iv)


def test_versions_from_before_the_record_are_filled_from_the_presets_as_they_were(imported_mini, tmp_path):
    """A version of a preset that is no longer one (lite2-ms-regional, now a benchmark variant), built from a
    128 px lite0 set: the migration records that preset's settings with the set's embedding settings, as
    the engine then read them, and the engine loads it from the record."""
    call_command("embed", "--splits", "query", "--image-size", "128", "--regions", "3")
    es = EmbeddingSet.objects.get()
    call_command("build_index", "--config", config_file(tmp_path, REGIONAL), "--embedding-set", str(es.pk))
    iv = IndexVersion.objects.get(is_active=True)
    old = {"pipeline": "lite2-ms-regional", "models": ["tf_efficientnet_lite0"], "image_size": 128, "scales": [1.0],
           "feature_dir": iv.params["feature_dir"], "dense": False, "shards": 1}
    IndexVersion.objects.filter(pk=iv.pk).update(params=old)
    old_default = IndexVersion.objects.create(embedding_set=es, path=iv.path, params={
        "pipeline": "default", "models": ["tf_efficientnet_lite2"], "image_size": 512, "dense": True,
        "feature_dir": iv.params["feature_dir"]})  # recorded no flip: made before flip TTA
    unknown = IndexVersion.objects.create(embedding_set=es, path=iv.path, params={"pipeline": "gone"})

    MIGRATION.fill_records(apps, None)
    iv.refresh_from_db()
    config = iv.pipeline_config()
    assert config == replace(REGIONAL, models=("tf_efficientnet_lite0",), image_size=128, scales=(1.0,),
                             description=config.description)
    assert iv.params["regions"] == {"levels": 3, "overlap": 0.4} and iv.feature_caches == set()
    assert iv.params["models"] == [{"spec": "tf_efficientnet_lite0", "digest": None}]
    loaded = engine._load(iv)
    ids, _ = read_embedding_shards(es.path)
    photo = Image.objects.get(external_id=ids[4])
    assert pipelines.search_one(loaded.database, loaded.models, image_file_path(photo)).hits[0].image_id == ids[4]

    old_default.refresh_from_db()
    default = old_default.pipeline_config()
    assert default.flip is False and default.dense == get_pipeline("default").dense
    assert old_default.feature_caches == feature_cache_keys(default)
    unknown.refresh_from_db()
    assert "config" not in unknown.params and unknown.feature_caches is None  # pruning keeps every cache for it

