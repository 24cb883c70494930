"""build_index with the default pipeline caches the database's dense features (ml.dense_matching) beside
the RootSIFT ones and records it: caught from its embedding chunks' own passes, or, for images embedded
before, in feature chunks that the workers share when the job is queued; the web engine then matches every
search's top 50 with them. An index whose build did not cache them is searched without the step."""

import logging
from dataclasses import replace

import pytest
from django.core.management import call_command

from ml.images import load_rgb
from ml.pipeline import DEFAULT_PIPELINE, dense_store, feature_cache_keys, get_pipeline
from ml.spatial import LocalFeatureStore
from ml.stages.features import LocalFeatureStage
from ml.stages.protocol import Work, compute_part, plan_stage, run_stages
from tests.conftest import wait_for
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search.engine import current_engine, search_photo
from webapp.search.models import IndexVersion
from webapp.search.services import feature_dir, image_file_path
from worker.stages import work_of

pytestmark = pytest.mark.django_db


def test_the_default_build_caches_dense_features_and_search_matches_them(imported_mini, caplog):
    caplog.set_level(logging.INFO, logger="ml.stages")
    call_command("build_index", "--splits", "query")  # the default pipeline over the 34 query photos
    # Caught from the embedding's own passes: the feature stage has only RootSIFT left to extract.
    assert "embed part 0: 34 images, dense features of 34 caught" in caplog.text
    assert "features part 0: sift features of 34 images" in caplog.text
    assert "sift+dense features" not in caplog.text
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.params["pipeline"] == DEFAULT_PIPELINE and iv.params["dense"] is True
    store = dense_store(get_pipeline(DEFAULT_PIPELINE), iv.params["feature_dir"])
    ids = list(Image.objects.filter(split=Image.Split.QUERY).values_list("external_id", flat=True))
    assert len(ids) == 34 and all(i in store for i in ids)
    assert all(not p.name.startswith(".") for p in store.folder.iterdir())  # no temp file left behind
    assert not work_of(Job.objects.get(kind=Job.Kind.BUILD_INDEX)).path.exists()

    engine = current_engine()
    assert engine.database.dense is not None
    # Pruning keeps the caches the index recorded: exactly those the engine opened.
    pipeline = iv.pipeline_config()
    opened = {engine.database.features.folder.name, engine.database.dense.folder.name}
    assert opened == feature_cache_keys(pipeline) == iv.feature_caches
    photo = Image.objects.get(external_id=ids[3])
    hits = search_photo(load_rgb(image_file_path(photo))).hits
    assert hits[0].image_id == photo.external_id and hits[0].dense_inliers >= 100  # itself, everywhere
    assert any(h.dense_inliers > 0 for h in hits[1:50]) and all(h.dense_inliers == 0 for h in hits[50:])

    # An index version built before dense matching (no "dense" in its params): searched without the step.
    IndexVersion.objects.filter(pk=iv.pk).update(params={k: v for k, v in iv.params.items() if k != "dense"})
    old = IndexVersion.objects.get(pk=iv.pk)
    old.pk = None
    old.job = None
    IndexVersion.objects.filter(is_active=True).update(is_active=False)
    old.save()
    database = current_engine().database
    assert database.dense is None and {database.features.folder.name} == feature_cache_keys(pipeline, dense=False)
    assert all(h.dense_inliers == 0 for h in search_photo(load_rgb(image_file_path(photo))).hits)


def test_a_resumed_feature_stage_skips_done_chunks_and_finishes_half_done_ones(imported_mini, tmp_path):
    """A worker died while extracting features: the resumed stage keeps its plan, does not touch a chunk
    marked done, and in a half-done chunk extracts only the images not cached yet."""
    images = list(Image.objects.filter(split=Image.Split.QUERY).order_by("pk"))[:4]
    ids, paths = [im.external_id for im in images], [image_file_path(im) for im in images]
    pipeline = replace(get_pipeline(DEFAULT_PIPELINE), models=("tf_efficientnet_lite0",), image_size=128)
    sift, dense = LocalFeatureStore(feature_dir(), pipeline.local_features), dense_store(pipeline, feature_dir())
    work = Work(tmp_path / "work")
    work.create({}, ids, paths)
    stage = LocalFeatureStage.for_pipeline(work, pipeline, str(feature_dir()), chunk_size=2)
    folder = work.stage(stage.name)

    plan = plan_stage(stage, folder)
    assert plan.items == 4 and folder.pending(plan) == [0, 1] and stage.queue_of(plan) == "gpu"
    compute_part(stage, folder, plan, 0)  # the first chunk finished, then the worker died in the second:
    sift.ensure([(ids[2], paths[2])])  # one of its images got its RootSIFT features only
    done = {i: (sift.path(i).stat().st_mtime_ns, dense.path(i).stat().st_mtime_ns) for i in ids[:2]}
    half = sift.path(ids[2]).stat().st_mtime_ns
    for path in (sift.path(ids[0]), dense.path(ids[1])):
        path.unlink()  # gone from the caches after its chunk was marked done: the resumed stage must not look

    run_stages([stage], work.path)  # resumed
    assert all(i in sift and i in dense for i in ids[2:4])
    assert sift.path(ids[2]).stat().st_mtime_ns == half  # only what was missing was extracted
    assert ids[0] not in sift and ids[1] not in dense  # chunk 0 was not extracted again
    assert dense.path(ids[0]).stat().st_mtime_ns == done[ids[0]][1]
    # All cached: a new stage over those images plans no part; only RootSIFT lacking: on the CPU.
    again = Work(tmp_path / "again")
    again.create({}, ids[2:4], paths[2:4])
    assert plan_stage(LocalFeatureStage.for_pipeline(again, pipeline, str(feature_dir()), 2), again.stage("f")).parts == 0
    sift.path(ids[3]).unlink()
    third = Work(tmp_path / "third")
    third.create({}, ids[2:4], paths[2:4])
    only_sift = plan_stage(LocalFeatureStage.for_pipeline(third, pipeline, str(feature_dir()), 2), third.stage("f"))
    assert only_sift.items == 1 and only_sift.data == {"sift": True, "dense": False}
    assert stage.queue_of(only_sift) == "cpu"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_queued_build_extracts_the_features_in_chunks_on_the_workers(celery_worker_process, imported_mini,
                                                                       tmp_path):
    """A queued build sends the images' RootSIFT features to the workers in chunks (a chord, as its
    embedding chunks, which caught the dense features), whose callback hands the job back to build_index:
    it indexes and publishes."""
    job = start_job(Job.Kind.BUILD_INDEX, {"splits": ["query"], "chunk_size": 12})
    log = tmp_path / "worker.log"
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 400), log.read_text()[-3000:]
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    text = log.read_text()
    assert text.count("worker.stage_part") >= 6 and text.count("worker.resume_job") >= 2
    # The embedding chunks caught the dense features; the feature chunks extracted RootSIFT only.
    assert text.count("dense features of 12 caught") == 2 and "dense features of 10 caught" in text
    assert text.count("sift features of 12 images") == 2 and "sift+dense features" not in text
    ids = list(Image.objects.filter(split=Image.Split.QUERY).values_list("external_id", flat=True))
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    stores = [LocalFeatureStore(feature_dir(), pipeline.local_features), dense_store(pipeline, feature_dir())]
    assert all(i in store for store in stores for i in ids)
    assert not work_of(job).path.exists()
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.job_id == job.pk and iv.params["dense"] is True
    photo = Image.objects.get(external_id=ids[7])
    hits = search_photo(load_rgb(image_file_path(photo))).hits
    assert hits[0].image_id == photo.external_id and hits[0].inliers > 0 and hits[0].dense_inliers >= 100
