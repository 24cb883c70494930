"""A chunked job sent again (by the watchdog) while its first message, and so its first chord's parts, are
still waiting in the broker: a real worker runs both chords, the second one's parts find their work on disk
and skip it, and the job publishes exactly once and leaves no work folder behind."""

import re
from pathlib import Path

import pytest

from ml.clean import CleaningEvidence
from ml.index import IndexConfig, build_index
from tests.conftest import (
    clear_broker,
    clustered_vectors,
    start_worker,
    stop_worker,
    synthetic_embedding_set,
    wait_for,
)
from webapp.curation.models import CleaningRun
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search.engine import current_engine
from webapp.search.models import IndexVersion
from worker.watchdog import recover_jobs

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("stale_at_once")]


@pytest.fixture
def stale_at_once(monkeypatch):
    monkeypatch.setenv("JOB_STALE_SECONDS", "0")  # read by the worker processes these tests start


def sent_twice(settings, kind: str, params: dict) -> Job:
    """The job started with no worker to take it, then sent again by the watchdog ("never picked up").

    The worker runs with JOB_STALE_SECONDS=0 (see ``stale_at_once``): the second message finds the job's
    first run silent, as after a stalled chord, and runs it again, so two chords race for the same parts.
    (With a live first run the second message does nothing: tests/jobs/test_claims.py.)"""
    clear_broker(settings)
    job = start_job(kind, params)
    assert recover_jobs(stale_after=0) == [job.pk]
    return job


def run_both_chords(settings, log: Path, job: Job, callback: str) -> str:
    """A worker that runs the job to its end and both chords' callbacks; returns its log."""
    worker = start_worker(settings, log)
    finished = re.compile(rf"Task {callback}\[[^\]]+\] succeeded")
    try:
        assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 300), log.read_text()[-3000:]
        assert wait_for(lambda: len(finished.findall(log.read_text())) == 2, 60), log.read_text()[-3000:]
    finally:
        stop_worker(worker)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    return log.read_text()


def parts(log: str, task: str, job: Job, done: str) -> tuple[int, list[int]]:
    """How many part tasks the worker received, and which parts its log says it computed."""
    return (len(re.findall(rf"Task {task}\[[^\]]+\] received", log)),
            sorted(int(n) for n in re.findall(rf"{job.kind}-{job.pk}-\w+: {done} (\d+): ", log)))


def no_work_left(settings) -> bool:
    work = Path(settings.ARTIFACTS_ROOT) / "work"
    return not work.exists() or not any(work.iterdir())


def test_a_sharded_build_sent_twice_is_built_and_published_once(settings, tmp_path):
    es, ids, x = synthetic_embedding_set(tmp_path, 300, 16)
    job = sent_twice(settings, Job.Kind.BUILD_INDEX, {"pipeline": "baseline", "embedding_set": es.pk,
                                                      "shard_size": 60})
    log = run_both_chords(settings, tmp_path / "worker.log", job, "worker.resume_job")

    received, built = parts(log, "worker.stage_part", job, "index part")
    assert received == 10 and built == [0, 1, 2, 3, 4]  # two chords of five shards; each shard built once
    iv = IndexVersion.objects.get()
    assert iv.job_id == job.pk and iv.is_active and iv.params["shards"] == 5 and job.result["index_version"] == iv.pk
    assert no_work_left(settings)
    queries = clustered_vectors(8, 16, seed=5)
    exact = build_index(x, ids, tmp_path / "exact", IndexConfig(kind="exact"))
    assert (current_engine().database.index.search_positions(queries, 10)[1]
            == exact.search_positions(queries, 10)[1]).all()


def test_a_clean_sent_twice_is_verified_and_stored_once(imported_mini, settings, tmp_path):
    job = sent_twice(settings, Job.Kind.CLEAN, {"splits": ["query"], "chunk_pairs": 60})
    log = run_both_chords(settings, tmp_path / "worker.log", job, "worker.resume_job")

    run = CleaningRun.objects.get()
    assert run.job_id == job.pk and job.result["cleaning_run"] == run.pk
    n = CleaningEvidence.load(run.evidence_path).meta["chunks"]
    received, verified = parts(log, "worker.stage_part", job, "verify part")
    assert n >= 4 and received == 2 * n and verified == list(range(n))  # two chords; each chunk verified once
    assert job.progress_done == job.progress_total > 0
    assert no_work_left(settings)
