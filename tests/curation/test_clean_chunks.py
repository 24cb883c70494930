"""The clean job's spatial verification in chunks (worker/clean_chunks.py): merged chunks give exactly the
evidence of one build_evidence call, a queued clean verifies its chunks as a chord on a real worker with the
verdicts of a foreground run, and a chunk already on disk is never verified again. The 34 query photos of
landmarks-mini keep each test short (about 220 pairs)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ml.clean import CleaningEvidence
from ml.spatial import LocalFeatureStore
from tests.conftest import wait_for
from tests.curation.evidence import assert_same_evidence, single_task_evidence, verdict_rows
from webapp.curation.models import CleaningRun, Verdict
from webapp.jobs.models import Job
from webapp.jobs.services import create_job, start_job
from webapp.search.services import feature_dir
from worker import clean_chunks, cleaning
from worker.runner import JobContext, execute_job

pytestmark = pytest.mark.django_db
SPLITS = ["query"]


def test_chunked_evidence_equals_the_single_task_evidence(imported_mini, settings):
    job = create_job(Job.Kind.CLEAN, {"splits": SPLITS, "chunk_pairs": 40})
    job = execute_job(job.pk, foreground=True)
    assert job.state == Job.State.SUCCEEDED, job.error
    run = CleaningRun.objects.get(job=job)
    chunked = CleaningEvidence.load(run.evidence_path)
    pairs = chunked.meta["pairs_verified"]
    assert len(chunked) == 34 and pairs > 150 and chunked.meta["chunks"] == -(-pairs // 40)
    assert (chunked.inliers >= 20).sum() > 0  # some pairs really verify
    assert_same_evidence(chunked, single_task_evidence(run, chunked))
    assert not clean_chunks.work_dir(job).exists()  # plan, graph and chunks dropped once stored
    assert run.stats["keep"] + run.stats["suspect"] + run.stats["drop"] == 34 == Verdict.objects.filter(run=run).count()


def test_a_chunk_on_disk_is_not_verified_again_on_resume(imported_mini):
    job = create_job(Job.Kind.CLEAN, {"splits": SPLITS, "chunk_pairs": 50})
    # The first run wrote its plan and verified chunks 0 and 2, then its worker died.
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    p = cleaning.plan(job, JobContext(job, show_bar=False))
    n = len(clean_chunks.bounds(p))
    assert n >= 4 and clean_chunks.pending_chunks(job, p) == list(range(n))
    # A chunk task reads its own pairs, by id, not the catalogue: the plan holds settings and counts.
    assert p["count"] == 34 and "ids" not in clean_chunks.read_plan(job)
    ids = clean_chunks.catalogue(job)["ids"]
    lo, hi = clean_chunks.bounds(p)[1]
    inputs = clean_chunks.chunk_inputs_of(np.asarray(clean_chunks.load(job, "pairs")[lo:hi]), ids)
    assert json.loads(clean_chunks.inputs_path(job, 1).read_text()) == inputs
    assert len(inputs["pairs"]) == 50 and len(inputs["ids"]) < 34
    assert [[inputs["ids"][a], inputs["ids"][b]] for a, b in inputs["pairs"]] == [
        [ids[a], ids[b]] for a, b in clean_chunks.load(job, "pairs")[lo:hi].tolist()]
    assert clean_chunks.compute_chunk(job, p, 0) and clean_chunks.compute_chunk(job, p, 2)
    before = {i: clean_chunks.chunk_path(job, i).stat() for i in (0, 2)}
    plan_before = clean_chunks.plan_path(job).stat()

    # Their tasks delivered again (acks_late) and the job resumed: nothing on disk is verified again.
    assert not clean_chunks.compute_chunk(job, p, 0)
    assert clean_chunks.run_chunk(job.pk, 2) == 2
    assert cleaning.plan(job, JobContext(job, show_bar=False)) == p
    for i, stat in before.items():
        after = clean_chunks.chunk_path(job, i).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    after = clean_chunks.plan_path(job).stat()
    assert (after.st_ino, after.st_mtime_ns) == (plan_before.st_ino, plan_before.st_mtime_ns)
    assert clean_chunks.pending_chunks(job, p) == [1] + list(range(3, n))
    stored = {i: np.load(clean_chunks.chunk_path(job, i)) for i in (0, 2)}
    pairs = np.asarray(clean_chunks.load(job, "pairs"))

    job = execute_job(job.pk, foreground=True)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert f"resumed: 2 of {n} verification chunks already on disk" in job.log
    run = CleaningRun.objects.get(job=job)
    evidence = CleaningEvidence.load(run.evidence_path)
    assert_same_evidence(evidence, single_task_evidence(run, evidence))
    verified = evidence.pair_inliers()
    for i, (lo, hi) in ((i, clean_chunks.bounds(p)[i]) for i in (0, 2)):  # kept chunks went in as they were
        assert stored[i].dtype == np.int32 and [verified[tuple(ab)] for ab in pairs[lo:hi].tolist()] == stored[i].tolist()
    assert execute_job(job.pk).state == Job.State.SUCCEEDED and CleaningRun.objects.count() == 1  # nothing twice


def test_a_clean_planned_by_an_older_version_is_planned_again(imported_mini):
    """Upgraded with a clean in flight: its plan lists every id and label and has no count. A chunk task
    of its old chord does nothing; the resumed job drops the old chunks (whose pairs may differ) and plans
    again, with the evidence of one build_evidence call."""
    job = create_job(Job.Kind.CLEAN, {"splits": SPLITS, "chunk_pairs": 80})
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    clean_chunks.work_dir(job).mkdir(parents=True)
    clean_chunks.plan_path(job).write_text(json.dumps({"ids": ["a", "b"], "labels": ["1", "1"], "pairs": 1, "chunk": 1}))
    np.save(clean_chunks.chunk_path(job, 0), np.full(80, 999, np.int32))  # not this plan's inlier counts
    assert clean_chunks.read_plan(job) is None and clean_chunks.run_chunk(job.pk, 0) == 0
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING

    job = execute_job(job.pk, foreground=True)
    assert job.state == Job.State.SUCCEEDED, job.error
    evidence = CleaningEvidence.load(CleaningRun.objects.get(job=job).evidence_path)
    assert 999 not in evidence.inliers
    assert_same_evidence(evidence, single_task_evidence(CleaningRun.objects.get(job=job), evidence))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_queued_clean_verifies_chunks_on_a_worker_with_the_foreground_verdicts(celery_worker_process, imported_mini,
                                                                               tmp_path):
    call_command("clean", "--splits", *SPLITS)
    foreground = CleaningRun.objects.get()
    assert foreground.job.state == Job.State.SUCCEEDED
    shutil.rmtree(foreground.evidence_path)  # so the queued run verifies every pair again

    job = start_job(Job.Kind.CLEAN, {**foreground.job.params, "chunk_pairs": 60})
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.worker.endswith(f":{celery_worker_process.pid}")
    queued = CleaningRun.objects.get(job=job)
    evidence = CleaningEvidence.load(queued.evidence_path)
    assert queued.evidence_path == foreground.evidence_path and evidence.meta["chunks"] >= 4
    log = (tmp_path / "worker.log").read_text()
    assert log.count("worker.clean_chunk") >= evidence.meta["chunks"] and "worker.finish_clean" in log
    assert job.progress_done == job.progress_total == evidence.meta["pairs_verified"]

    assert verdict_rows(queued) == verdict_rows(foreground)
    assert queued.stats == foreground.stats and job.result == {**foreground.job.result, "cleaning_run": queued.pk}
    assert not clean_chunks.work_dir(job).exists()
    assert not any(Path(queued.evidence_path).parent.glob(".*tmp*"))

    # An unreadable local-feature file (cut short) fails the job at its chunk with the reason, rather than
    # leaving it running for the watchdog to send again forever; its plan and chunks are deleted.
    store = LocalFeatureStore(feature_dir())
    damaged = store.path(evidence.ids[0])
    damaged.write_bytes(damaged.read_bytes()[:100])
    bad = start_job(Job.Kind.CLEAN, {**job.params, "evidence": {"k": 29}})  # new settings: not the cached evidence
    assert wait_for(lambda: Job.objects.get(pk=bad.pk).is_finished, 120)
    bad.refresh_from_db()
    assert bad.state == Job.State.FAILED and bad.message.startswith("verification chunk "), bad.message
    assert f"unreadable local features of {evidence.ids[0]} ({damaged})" in bad.message
    assert CleaningRun.objects.filter(job=bad).count() == 0
    assert wait_for(lambda: not clean_chunks.work_dir(bad).exists(), 30)
