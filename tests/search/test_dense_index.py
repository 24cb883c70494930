"""build_index with the default pipeline caches the database's dense features (ml.dense_matching) beside
the RootSIFT ones and records it: caught from its embedding chunks' own passes, or, for images embedded
before, in feature chunks that the workers share when the job is queued; the web engine then matches every
search's top 50 with them. An index whose build did not cache them is searched without the step."""

import logging
from dataclasses import replace

import pytest
from django.core.management import call_command

from ml.images import load_rgb
from ml.pipeline import DEFAULT_PIPELINE, dense_store, embedded_as, feature_cache_keys, get_pipeline
from ml.spatial import LocalFeatureStore
from tests.conftest import wait_for
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.jobs.services import create_job, start_job
from webapp.search.engine import current_engine, search_photo
from webapp.search.models import IndexVersion
from webapp.search.services import feature_dir, image_file_path
from worker import feature_chunks
from worker.runner import JobContext

pytestmark = pytest.mark.django_db


def test_the_default_build_caches_dense_features_and_search_matches_them(imported_mini, caplog):
    caplog.set_level(logging.INFO, logger="worker")
    call_command("build_index", "--splits", "query")  # the default pipeline over the 34 query photos
    # Caught from the embedding's own passes: the feature stage has only RootSIFT left to extract.
    assert "embedded chunk 0 (34 images, dense features of 34 caught)" in caplog.text
    assert "sift features of chunk 0 (34 images)" in caplog.text and "dense features of chunk" not in caplog.text
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.params["pipeline"] == DEFAULT_PIPELINE and iv.params["dense"] is True
    store = dense_store(get_pipeline(DEFAULT_PIPELINE), iv.params["feature_dir"])
    ids = list(Image.objects.filter(split=Image.Split.QUERY).values_list("external_id", flat=True))
    assert len(ids) == 34 and all(i in store for i in ids)
    assert all(not p.name.startswith(".") for p in store.folder.iterdir())  # no temp file left behind
    assert not feature_chunks.work_dir(Job.objects.get(kind=Job.Kind.BUILD_INDEX)).exists()

    engine = current_engine()
    assert engine.database.dense is not None
    # Pruning keeps the caches feature_cache_keys names: exactly those the engine opened.
    pipeline = embedded_as(get_pipeline(DEFAULT_PIPELINE), iv.params)
    opened = {engine.database.features.folder.name, engine.database.dense.folder.name}
    assert opened == feature_cache_keys(pipeline)
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


def test_a_resumed_feature_stage_skips_done_chunks_and_finishes_half_done_ones(imported_mini):
    """A worker died while extracting features: the resumed job keeps its plan, does not touch a chunk
    marked done, and in a half-done chunk extracts only the images not cached yet."""
    job = create_job(Job.Kind.BUILD_INDEX, {"splits": ["query"], "chunk_size": 2})
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    images = list(Image.objects.filter(split=Image.Split.QUERY).order_by("pk"))[:4]
    ids, paths = [im.external_id for im in images], [image_file_path(im) for im in images]
    pipeline = replace(get_pipeline(DEFAULT_PIPELINE), models=("tf_efficientnet_lite0",), image_size=128)
    sift, dense = LocalFeatureStore(feature_dir(), pipeline.local_features), dense_store(pipeline, feature_dir())

    p = feature_chunks.plan(job, ids, paths, pipeline)
    assert p["count"] == 4 and feature_chunks.pending_chunks(job, p) == [0, 1]
    feature_chunks.compute_chunk(job, p, 0)  # the first chunk finished, then the worker died in the second:
    sift.ensure([(ids[2], paths[2])])  # one of its images got its RootSIFT features only
    done = {i: (sift.path(i).stat().st_mtime_ns, dense.path(i).stat().st_mtime_ns) for i in ids[:2]}
    half = sift.path(ids[2]).stat().st_mtime_ns
    for path in (sift.path(ids[0]), dense.path(ids[1])):
        path.unlink()  # gone from the caches after its chunk was marked done: the resumed job must not look

    feature_chunks.cache_features(job, JobContext(job, show_bar=False), ids, paths, pipeline)
    assert all(i in sift and i in dense for i in ids[2:4])
    assert sift.path(ids[2]).stat().st_mtime_ns == half  # only what was missing was extracted
    assert ids[0] not in sift and ids[1] not in dense  # chunk 0 was not extracted again
    assert dense.path(ids[0]).stat().st_mtime_ns == done[ids[0]][1]
    assert not feature_chunks.work_dir(job).exists()
    assert feature_chunks.plan(job, ids[2:4], paths[2:4], pipeline) is None  # all cached: nothing to plan


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
    assert text.count("worker.feature_chunk") >= 3 and text.count("worker.resume_job") >= 2
    # The embedding chunks caught the dense features; the feature chunks extracted RootSIFT only.
    assert text.count("dense features of 12 caught") == 2 and "dense features of 10 caught" in text
    assert "sift features of chunk" in text and "dense features of chunk" not in text
    ids = list(Image.objects.filter(split=Image.Split.QUERY).values_list("external_id", flat=True))
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    stores = [LocalFeatureStore(feature_dir(), pipeline.local_features), dense_store(pipeline, feature_dir())]
    assert all(i in store for store in stores for i in ids)
    assert not feature_chunks.work_dir(job).exists()
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.job_id == job.pk and iv.params["dense"] is True
    photo = Image.objects.get(external_id=ids[7])
    hits = search_photo(load_rgb(image_file_path(photo))).hits
    assert hits[0].image_id == photo.external_id and hits[0].inliers > 0 and hits[0].dense_inliers >= 100
