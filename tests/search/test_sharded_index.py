"""Index builds in shards: built in turn in the foreground or by a chord on a real worker, searched as one
index (k-way merge, the same top-k as one exact index), resumed without rebuilding finished shards, and
the recall of approximate indexes on the index versions page."""

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from ml.embed import read_embedding_shards, write_embedding_shards
from ml.index import (
    IndexConfig,
    ShardedIndex,
    build_index,
    build_shard,
    load_index,
    shard_complete,
    shard_name,
)
from ml.pipeline import get_pipeline
from ml.stages.protocol import compute_part
from ml.whitening import WhiteningConfig
from tests.conftest import clustered_vectors, synthetic_embedding_set, wait_for
from tests.stages import plan_until
from webapp.jobs.models import Job
from webapp.jobs.services import create_job, start_job
from webapp.search.engine import current_engine
from webapp.search.models import EmbeddingSet, IndexVersion
from webapp.search.services import packaged_model_version
from worker import building, stages
from worker.runner import execute_job
from worker.stages import work_of

pytestmark = pytest.mark.django_db
PIPELINE = "baseline"  # no DBA, no verification: the index holds the embedding set's vectors as they are


def test_foreground_shards_give_the_top_k_of_one_exact_index(tmp_path, settings):
    # The set is stored in files of 128 rows: the build streams them (read lazily) into its index shards.
    es, ids, x = synthetic_embedding_set(tmp_path, 300, 16, shard_size=128)
    call_command("build_index", "--pipeline", PIPELINE, "--embedding-set", str(es.pk), "--shard-size", "70")
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.kind == IndexVersion.Kind.FLAT and iv.size == 300 and iv.params["shards"] == 5
    assert iv.recall is None and iv.recall_summary == "exact"
    assert iv.job.result["shards"] == 5 and iv.job.state == Job.State.SUCCEEDED
    assert not (Path(settings.ARTIFACTS_ROOT) / "work").exists() or not any((Path(settings.ARTIFACTS_ROOT) / "work").iterdir())

    single = build_index(x, ids, tmp_path / "single", IndexConfig(kind="exact"))
    sharded = load_index(iv.path)
    assert isinstance(sharded, ShardedIndex) and len(sharded.shards) == 5
    assert [s.count for s in sharded.shards] == [70, 70, 70, 70, 20]
    queries = np.concatenate([clustered_vectors(10, 16, seed=9), x[[0, 69, 70, 299]]])
    for k in (1, 5, 100, 300):
        s_single, p_single = single.search_positions(queries, k)
        s_shard, p_shard = sharded.search_positions(queries, k)
        assert (p_shard == p_single).all(), k
        np.testing.assert_allclose(s_shard, s_single, rtol=1e-6, atol=1e-6)
    # The web app's engine loads the same folder, transparently, with memory-mapped shard vectors.
    database = current_engine().database
    assert isinstance(database.index, ShardedIndex) and database.ids == ids
    assert all(isinstance(s.vectors, np.memmap) for s in database.index.shards)
    assert (database.index.search_positions(queries, 20)[1] == single.search_positions(queries, 20)[1]).all()
    np.testing.assert_array_equal(database.index.vectors[[299, 3, 140]], x[[299, 3, 140]])


def test_a_shard_already_built_is_not_built_again_on_resume(tmp_path):
    es, ids, x = synthetic_embedding_set(tmp_path, 200, 8)
    job = create_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 50})
    # The first run got as far as shards 0 and 2, then its worker died.
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    index = plan_until(job, "index")
    assert index.folder.pending(index.plan) == [0, 1, 2, 3]
    # A shard task reads its own ids, not the whole collection's: the plan holds their count only.
    assert index.plan.items == 200 and "ids" not in json.loads((index.folder.path / "plan.json").read_text())["data"]
    assert index.folder.inputs(3) == ids[150:200]
    assert compute_part(index.stage, index.folder, index.plan, 0) and compute_part(index.stage, index.folder, index.plan, 2)
    assert not compute_part(index.stage, index.folder, index.plan, 0)  # done: skipped
    staging = index.staged.work.path / "staging"
    before = {i: (staging / shard_name(i) / "meta.json").stat() for i in (0, 2)}
    assert index.folder.pending(index.plan) == [1, 3]
    # ... in the middle of shard 1: its temporary folder holds a half-written index.
    half = staging / ".shard-00001.tmp-killed"
    half.mkdir()
    (half / "vectors.npy").write_bytes(b"\x93NUMPY half-written")

    job = execute_job(job.pk, foreground=True)  # resumed
    assert job.state == Job.State.SUCCEEDED, job.error
    iv = IndexVersion.objects.get(job=job)
    for i, stat in before.items():  # moved into the published folder, never rewritten
        after = (Path(iv.path) / f"shard-{i:05d}" / "meta.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not list(Path(iv.path).glob(".*tmp-*"))  # the half-built shard was not published with it
    loaded = load_index(iv.path)
    assert loaded.ids == ids and (loaded.search_positions(x[:5], 1)[1][:, 0] == np.arange(5)).all()
    assert execute_job(job.pk).state == Job.State.SUCCEEDED and IndexVersion.objects.count() == 1  # nothing twice


@pytest.mark.django_db(transaction=True)
def test_a_shard_task_sent_again_waits_for_its_twin_and_leaves_nothing_behind(tmp_path):
    es, ids, x = synthetic_embedding_set(tmp_path, 200, 8)
    job = create_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 50},
                     queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    index = plan_until(job, "index")
    for i in (1, 2, 3):
        compute_part(index.stage, index.folder, index.plan, i)

    def twin() -> None:  # shard 0's task, sent again by the watchdog, on another worker
        try:
            stages.run_part(job.pk, "index", 0)
        finally:
            connection.close()
    resent = threading.Thread(target=twin)
    with index.folder.lock("part-000000") as held:  # the first task is building shard 0
        assert held
        resent.start()
        resent.join(1.0)
        staging = index.staged.work.path / "staging"
        assert resent.is_alive() and not shard_complete(staging / shard_name(0))  # waiting, not building too
        vectors = np.load(index.staged.work.path / "global" / "vectors.npy")
        build_shard(vectors[:50], ids[:50], staging / shard_name(0), IndexConfig(**index.plan.data["index"]))
        (index.folder.path / "part-000000.done").write_bytes(b"")
        # The first chord's callback hands the job back: it joins the shards, publishes and closes the job.
        assert execute_job(job.pk, retry=True).state == Job.State.SUCCEEDED
    resent.join(30)

    assert not resent.is_alive()
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED and IndexVersion.objects.get().job_id == job.pk
    assert not work_of(job).path.exists()  # the late twin neither rebuilt shard 0 nor left files
    loaded = load_index(IndexVersion.objects.get().path)
    assert loaded.ids == ids and (loaded.search_positions(x[:5], 1)[1][:, 0] == np.arange(5)).all()


def test_recall_of_an_approximate_index_is_on_the_versions_page(tmp_path, client, viewer_user):
    es, ids, x = synthetic_embedding_set(tmp_path, 2000, 32)
    call_command("build_index", "--pipeline", PIPELINE, "--embedding-set", str(es.pk))
    exact = IndexVersion.objects.get(is_active=True)
    ivf_params = {"kind": "ivfpq", "pq_m": 8, "pq_nbits": 6, "nlist": 16, "nprobe": 2, "refine_factor": 0}
    job = create_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 1000,
                                            "index": ivf_params})
    assert execute_job(job.pk, foreground=True).state == Job.State.SUCCEEDED
    ivf = IndexVersion.objects.get(is_active=True)
    assert ivf.kind == IndexVersion.Kind.IVFPQ and ivf.params["shards"] == 2 and ivf.recall_queries == 200
    assert 0.2 < ivf.recall < 1.0  # few probes, no re-scoring: visibly approximate
    assert load_index(ivf.path).meta["recall"]["recall"] == ivf.recall

    client.force_login(viewer_user)
    html = client.get(reverse("model-list")).content.decode()
    assert f"recall@100 vs exact: {ivf.recall:.2f} (200 sampled queries)" in html
    assert f"#{exact.pk} Exact (flat inner product)" in html and '<span class="recall">exact</span>' in html


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_queued_build_runs_its_shards_as_a_chord_and_publishes(celery_worker_process, tmp_path):
    es, ids, x = synthetic_embedding_set(tmp_path, 300, 16)
    job = start_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 60})
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["shards"] == 5 and job.worker.endswith(f":{celery_worker_process.pid}")
    log = (tmp_path / "worker.log").read_text()
    assert log.count("worker.stage_part") >= 5 and "worker.resume_job" in log

    iv = IndexVersion.objects.get(is_active=True)
    assert iv.job_id == job.pk and iv.params["shards"] == 5
    queries = clustered_vectors(8, 16, seed=5)
    reference = build_index(x, ids, tmp_path / "single", IndexConfig(kind="exact"))
    database = current_engine().database
    assert isinstance(database.index, ShardedIndex)
    assert (database.index.search_positions(queries, 10)[1] == reference.search_positions(queries, 10)[1]).all()

    # A shard that cannot be built fails the job with the reason (not left running for the watchdog to send
    # again forever); the published index keeps serving and the failed job's work is dropped.
    bad = start_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 60,
                                           "index": {"kind": "ivfpq", "pq_m": 64}})
    assert wait_for(lambda: Job.objects.get(pk=bad.pk).is_finished, 120)
    bad.refresh_from_db()
    assert bad.state == Job.State.FAILED and "must divide the dimension 16" in bad.message
    assert bad.message.startswith("index shards part ") and IndexVersion.objects.get(is_active=True) == iv
    assert wait_for(lambda: not work_of(bad).path.exists(), 30)


def test_whitening_pipeline_is_learned_from_the_catalogue_labels_and_applied_to_queries(imported_mini, tmp_path):
    from ml.pipeline import rank
    from ml.whitening import Whitening
    from webapp.catalog.models import Image

    images = list(Image.objects.filter(split=Image.Split.INDEX).order_by("pk"))
    ids = [im.external_id for im in images]
    x = clustered_vectors(len(ids), 16, seed=3)
    path = write_embedding_shards(tmp_path / "emb-lw", ids, x)
    es = EmbeddingSet.objects.create(model_version=packaged_model_version("tf_efficientnet_lite0"), path=str(path),
                                     dim=16, image_count=len(ids), scales=[1.0],
                                     params={"models": ["tf_efficientnet_lite0"], "image_size": 128})
    lw = replace(get_pipeline("baseline"), name="lw", whitening=WhiteningConfig(method="learned", shrinkage=0.1))
    (tmp_path / "lw.json").write_text(json.dumps(lw.as_dict()))
    call_command("build_index", "--config", str(tmp_path / "lw.json"), "--embedding-set", str(es.pk),
                 "--shard-size", "60")
    iv = IndexVersion.objects.get(is_active=True)
    whitening = Whitening.load(iv.path)
    assert whitening is not None and whitening.projection.shape == (16, 16)
    engine = current_engine()
    assert engine.database.whitening is not None
    x16 = read_embedding_shards(path, dtype=np.float32)[1]
    assert np.allclose(engine.database.index.vectors[:], whitening.apply(x16), atol=1e-5)
    # A query is whitened the same way: a database vector, whitened, finds itself first.
    hit = rank(engine.database, whitening.apply(x16[7]), None, depth=1).hits[0]
    assert hit.image_id == ids[7]


def test_the_files_of_an_embedding_set_are_looked_up_in_chunks(imported_mini, monkeypatch, django_assert_num_queries):
    # One query of a million ids failed on SQLite ("too many SQL variables"): build_index --embedding-set
    # with a pipeline that verifies reads the set's image files ID_CHUNK ids a query.
    from webapp.catalog.models import Image

    expected = dict(Image.objects.values_list("external_id", "path"))
    ids = sorted(expected)[::-1]
    monkeypatch.setattr("webapp.catalog.models.ID_CHUNK", 50)
    pipeline = get_pipeline("web-fast")
    with django_assert_num_queries(-(-len(ids) // 50)):
        paths = building._paths_of(ids, pipeline)
    assert paths == [expected[i] for i in ids]
    with pytest.raises(ValueError, match=r"1 embedded images are not in the catalogue \(e.g. \['gone'\]\)"):
        building._paths_of([*ids[:3], "gone"], pipeline)
