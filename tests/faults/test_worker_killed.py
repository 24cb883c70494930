"""Kill a worker (SIGKILL, no warm shutdown) in the middle of a chunked job: the watchdog sends the job again
to a second worker, which resumes from the parts already on disk (not computed again) and ends with what an
uninterrupted run gives. Embedding chunks, index shards and cleaning verification chunks; and training,
from its last checkpoint."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command

from ml.clean import CleaningEvidence
from ml.embed import read_embedding_shards
from ml.index import IndexConfig, build_index, shard_complete, shard_name
from ml.regional import load_regions
from ml.weights import read_checkpoint
from tests.conftest import (
    clear_broker,
    clustered_vectors,
    start_worker,
    stop_worker,
    synthetic_embedding_set,
    wait_for,
)
from tests.curation.evidence import assert_same_evidence, verdict_rows
from tests.faults.private_services import start_worker_env
from tests.stages import done_parts
from webapp.curation.models import CleaningRun
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search.engine import current_engine
from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion
from worker.stages import work_of
from worker.watchdog import recover_jobs

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
PARAMS = {"splits": ["index"], "chunk_size": 12, "embed": {"image_size": 96, "scales": [1.0], "num_workers": 0}}
PIPELINE = "baseline"  # no DBA, no verification: the index holds the embedding set's vectors as they are


def kill_when(worker: subprocess.Popen, condition, log: Path, timeout: float = 300) -> None:
    """SIGKILL ``worker`` as soon as ``condition`` holds: no warm shutdown, the worker just dies."""
    try:
        assert wait_for(condition, timeout), log.read_text()[-3000:]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        stop_worker(worker)


def resume(settings, tmp_path: Path, job: Job) -> str:
    """The watchdog sending the dead job again, then a second worker; returns that worker's log once the job
    has ended. The watchdog goes first: a worker started first could finish the job from the parts still
    queued before the watchdog looked (when the first one died between two parts), and the watchdog would
    then rightly find nothing to send."""
    assert recover_jobs(stale_after=0) == [job.pk]
    log = tmp_path / "second.log"
    second = start_worker(settings, log, "second")
    try:
        assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 600), log.read_text()[-3000:]
    finally:
        stop_worker(second)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert "watchdog: sent again because its worker stopped answering" in job.log
    return log.read_text()


def logged_parts(log: str, job: Job, done: str) -> list[int]:
    """The parts of ``job`` a worker's log says it computed ('index part', 'verify part')."""
    return [int(n) for n in re.findall(rf"{job.kind}-{job.pk}-\w+: {done} (\d+): ", log)]


def kill_among_parts(worker: subprocess.Popen, job: Job, finished, at_least: int, tmp_path: Path):
    """SIGKILL ``worker`` once ``finished()`` (the parts of ``job`` on disk) holds ``at_least``; returns the
    parts that survived, having checked that the job is left running, neither done nor failed."""
    kill_when(worker, lambda: len(finished()) >= at_least, tmp_path / "first.log")
    survived = finished()
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and survived
    return survived


def assert_resumed(log: str, job: Job, survived, total: int, done: str) -> None:
    """The second worker computed the missing parts, none of the ``survived`` ones, and all ``total`` exist."""
    again = logged_parts(log, job, done)
    assert again and not set(again) & set(survived)  # finished parts were not computed again
    assert sorted(set(again) | set(survived)) == list(range(total))


def finished_chunks(job: Job) -> set[int]:
    """Embedding chunks done (their vectors and regions on disk)."""
    return done_parts(job, "embed")


def test_killed_embedding_resumes_from_finished_chunks(imported_mini, settings, tmp_path):
    """With region descriptors kept too (``embed --regions``): both come out as an uninterrupted run's."""
    call_command("embed", "--splits", "index", "--image-size", "96", "--chunk-size", "12", "--num-workers", "0",
                 "--regions", "2")
    reference = EmbeddingSet.objects.get()
    ref_ids, ref_vectors = read_embedding_shards(reference.path)

    clear_broker(settings)
    first = start_worker(settings, tmp_path / "first.log", "first")
    job = start_job(Job.Kind.EMBED, {**PARAMS, "regional": {"levels": 2}})
    survived = kill_among_parts(first, job, lambda: finished_chunks(job), 3, tmp_path)

    assert_resumed(resume(settings, tmp_path, job), job, survived, 13, "embed part")
    assert not work_of(job).path.exists()  # the chunks were dropped once published
    resumed = EmbeddingSet.objects.get(job=job)
    ids, vectors = read_embedding_shards(resumed.path)
    assert ids == ref_ids
    assert np.allclose(vectors.astype(np.float32), ref_vectors.astype(np.float32), atol=2e-3)
    regions, ref_regions = load_regions(resumed.path), load_regions(reference.path)
    assert regions.shape == ref_regions.shape and regions.shape[0] == len(ids)
    assert np.allclose(regions.astype(np.float32), ref_regions.astype(np.float32), atol=2e-3)


def test_killed_build_resumes_its_embedding_from_finished_chunks(imported_mini, settings, tmp_path):
    """build_index with no embedding set embeds in chunks on the workers; killed among them, it resumes from
    the chunks on disk and indexes what an uninterrupted build indexes."""
    params = {"pipeline": PIPELINE, "splits": ["query"], "chunk_size": 3}
    call_command("build_index", "--pipeline", PIPELINE, "--splits", "query")  # the uninterrupted run
    ref_ids, ref_vectors = read_embedding_shards(IndexVersion.objects.get(is_active=True).embedding_set.path)

    clear_broker(settings)
    first = start_worker(settings, tmp_path / "first.log", "first")
    job = start_job(Job.Kind.BUILD_INDEX, params)
    survived = kill_among_parts(first, job, lambda: finished_chunks(job), 2, tmp_path)

    assert_resumed(resume(settings, tmp_path, job), job, survived, 12, "embed part")
    iv = IndexVersion.objects.get(job=job)
    assert iv.is_active and iv.size == 34 and not work_of(job).path.exists()
    ids, vectors = read_embedding_shards(iv.embedding_set.path)
    assert ids == ref_ids and iv.embedding_set.params["chunks"] == 12
    assert np.allclose(vectors.astype(np.float32), ref_vectors.astype(np.float32), atol=2e-3)


def test_killed_sharded_build_resumes_without_rebuilding_finished_shards(settings, tmp_path):
    es, ids, x = synthetic_embedding_set(tmp_path, 1600, 16)
    call_command("build_index", "--pipeline", PIPELINE, "--embedding-set", str(es.pk))
    serving = IndexVersion.objects.get(is_active=True)
    queries = clustered_vectors(12, 16, seed=5)
    exact = build_index(x, ids, tmp_path / "exact", IndexConfig(kind="exact")).search_positions(queries, 20)[1]

    clear_broker(settings)
    first = start_worker(settings, tmp_path / "first.log", "first")
    job = start_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": es.pk, "shard_size": 40})

    def built() -> dict[int, os.stat_result]:
        staging = work_of(job).path / "staging"
        return {i: (staging / shard_name(i) / "meta.json").stat() for i in range(40)
                if shard_complete(staging / shard_name(i))}
    survived = kill_among_parts(first, job, built, 1, tmp_path)
    # While the job is dead the index in service is untouched, the only one, and answers searches.
    assert list(IndexVersion.objects.values_list("pk", "is_active")) == [(serving.pk, True)]
    engine = current_engine()
    assert engine.index_version.pk == serving.pk
    assert (engine.database.index.search_positions(queries, 20)[1] == exact).all()

    assert_resumed(resume(settings, tmp_path, job), job, survived, 40, "index part")
    iv = IndexVersion.objects.get(job=job)
    assert iv.is_active and iv.size == 1600 and iv.params["shards"] == 40 and job.result["index_version"] == iv.pk
    assert not IndexVersion.objects.get(pk=serving.pk).is_active and IndexVersion.objects.count() == 2
    for i, stat in survived.items():  # moved into the published folder, never rewritten
        after = (Path(iv.path) / shard_name(i) / "meta.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not [p.name for p in Path(iv.path).iterdir() if p.name.startswith(".")]  # no half-built shard with it
    assert not work_of(job).path.exists()
    engine = current_engine()
    assert engine.index_version.pk == iv.pk
    assert (engine.database.index.search_positions(queries, 20)[1] == exact).all()


def test_killed_clean_resumes_from_finished_chunks(imported_mini, settings, tmp_path):
    call_command("clean", "--splits", "query")  # the uninterrupted run
    reference = CleaningRun.objects.get()
    reference_evidence = CleaningEvidence.load(reference.evidence_path)
    shutil.rmtree(reference.evidence_path)  # so the queued run verifies every pair again

    clear_broker(settings)
    first = start_worker(settings, tmp_path / "first.log", "first")
    job = start_job(Job.Kind.CLEAN, {**reference.job.params, "chunk_pairs": 8})

    survived = kill_among_parts(first, job, lambda: done_parts(job, "verify"), 1, tmp_path)
    n = work_of(job).stage("verify").read_plan().parts

    assert_resumed(resume(settings, tmp_path, job), job, survived, n, "verify part")
    run = CleaningRun.objects.get(job=job)
    assert verdict_rows(run) == verdict_rows(reference) and run.stats == reference.stats
    evidence = CleaningEvidence.load(run.evidence_path)
    assert_same_evidence(evidence, reference_evidence)
    assert evidence.meta["chunks"] == n and not work_of(job).path.exists()


TRAIN_ARGS = ["--splits", "index", "--max-steps", "30", "--batch-size", "8", "--image-size", "128",
              "--augmentation", "none", "--num-workers", "0"]


def test_killed_training_resumes_from_its_last_checkpoint(imported_mini, settings, tmp_path, monkeypatch):
    """A training job checkpoints every TRAIN_CHECKPOINT_EVERY steps into a folder of its own; killed, it
    is sent again and resumes from the newest one: the same curve, one row per step, and the same weights
    as an uninterrupted run (exact resume). Every run computes with one thread: with two, the order of
    float sums varies from run to run, and 30 SGD steps drift apart by more than 1e-3."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' (they take this process's environment)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        call_command("train", *TRAIN_ARGS, "--name", "whole")  # the uninterrupted run, here
    finally:
        torch.set_num_threads(threads)
    whole = read_checkpoint(ModelVersion.objects.get(name="whole").checkpoint)

    clear_broker(settings)
    first = start_worker_env(settings, tmp_path / "first.log", "first", env={"TRAIN_CHECKPOINT_EVERY": "2"})
    call_command("train", *TRAIN_ARGS, "--name", "resumed", "--queue")
    job = Job.objects.filter(kind=Job.Kind.TRAIN).latest("pk")
    checkpoints = Path(settings.ARTIFACTS_ROOT) / "models" / "resumed" / "checkpoints"

    def newest_step() -> int:
        found = sorted(checkpoints.glob("job-*/step-*.pt"))
        return int(found[-1].stem.removeprefix("step-")) if found else 0

    kill_when(first, lambda: newest_step() >= 4, tmp_path / "first.log")
    at = newest_step()
    # Only the newest is kept (the one before it too, when the kill fell between writing and deleting).
    assert 4 <= at < 30 and len(list(checkpoints.glob("job-*/step-*.pt"))) <= 2

    resume(settings, tmp_path, job)
    assert f"resuming resumed from its checkpoint at step {at}" in job.log and job.result["steps"] == 30
    mv = ModelVersion.objects.get(name="resumed")
    assert [row["step"] for row in mv.metrics["steps"]] == list(range(1, 31))  # none twice, none missing
    assert not list(checkpoints.glob("job-*"))  # the job's own checkpoints go once the model is out
    resumed = read_checkpoint(mv.checkpoint)
    for key, value in whole["model"].items():
        gap = float((resumed["model"][key].float() - value.float()).abs().max()) if value.numel() else 0.0
        assert gap <= 1e-5, (key, gap)
