"""The clean job's spatial verification in chunks (ml/stages/verify.py): merged chunks give exactly the
evidence of one build_evidence call, a queued clean verifies its chunks as a chord on a real worker with the
verdicts of a foreground run, and a chunk already on disk is never verified again. The 34 query photos of
landmarks-mini keep each test short (about 220 pairs)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ml.clean import CleaningEvidence
from ml.spatial import LocalFeatureStore
from ml.stages.protocol import compute_part, plan_stage
from ml.stages.verify import pair_inputs
from tests.conftest import wait_for
from tests.curation.evidence import assert_same_evidence, single_task_evidence, verdict_rows
from tests.stages import plan_until
from webapp.curation.models import CleaningRun, Verdict
from webapp.jobs.models import Job
from webapp.jobs.services import create_job, start_job
from webapp.search.services import feature_dir
from worker import stages
from worker.runner import execute_job
from worker.stages import work_of

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
    assert not work_of(job).path.exists()  # plan, graph and chunks dropped once stored
    assert run.stats["keep"] + run.stats["suspect"] + run.stats["drop"] == 34 == Verdict.objects.filter(run=run).count()


def test_a_chunk_on_disk_is_not_verified_again_on_resume(imported_mini):
    job = create_job(Job.Kind.CLEAN, {"splits": SPLITS, "chunk_pairs": 50})
    # The first run wrote its plan and verified chunks 0 and 2, then its worker died.
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    verify = plan_until(job, "verify")
    folder, plan = verify.folder, verify.plan
    n = plan.parts
    assert n >= 4 and folder.pending(plan) == list(range(n))
    # A chunk task reads its own pairs, by id, not the catalogue: the plan holds settings and counts.
    assert len(verify.staged.work.ids()) == 34 and "ids" not in (folder.path / "plan.json").read_text()
    ids = verify.staged.work.ids()
    pairs = np.load(folder.file("pairs.npy"))
    lo, hi = 50, 100
    inputs = pair_inputs(pairs[lo:hi], ids)
    assert folder.inputs(1) == inputs
    assert len(inputs["pairs"]) == 50 and len(inputs["ids"]) < 34
    assert [[inputs["ids"][a], inputs["ids"][b]] for a, b in inputs["pairs"]] == [
        [ids[a], ids[b]] for a, b in pairs[lo:hi].tolist()]
    assert compute_part(verify.stage, folder, plan, 0) and compute_part(verify.stage, folder, plan, 2)
    before = {i: folder.file(f"chunk-{i:06d}.npy").stat() for i in (0, 2)}
    plan_before = (folder.path / "plan.json").stat()

    # Their tasks delivered again (acks_late) and the job resumed: nothing on disk is verified again.
    assert not compute_part(verify.stage, folder, plan, 0)
    assert stages.run_part(job.pk, "verify", 2) == 2
    assert plan_stage(verify.stage, folder) == plan
    for i, stat in before.items():
        after = folder.file(f"chunk-{i:06d}.npy").stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    after = (folder.path / "plan.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (plan_before.st_ino, plan_before.st_mtime_ns)
    assert folder.pending(plan) == [1] + list(range(3, n))
    stored = {i: np.load(folder.file(f"chunk-{i:06d}.npy")) for i in (0, 2)}

    job = execute_job(job.pk, foreground=True)
    assert job.state == Job.State.SUCCEEDED, job.error
    assert f"spatial verification: resumed, 2 of {n} parts already done" in job.log
    run = CleaningRun.objects.get(job=job)
    evidence = CleaningEvidence.load(run.evidence_path)
    assert_same_evidence(evidence, single_task_evidence(run, evidence))
    verified = evidence.pair_inliers()
    for i in (0, 2):  # kept chunks went in as they were
        rows = pairs[i * 50:(i + 1) * 50].tolist()
        assert stored[i].dtype == np.int32 and [verified[tuple(ab)] for ab in rows] == stored[i].tolist()
    assert execute_job(job.pk).state == Job.State.SUCCEEDED and CleaningRun.objects.count() == 1  # nothing twice


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
    assert log.count("worker.stage_part") >= evidence.meta["chunks"] and "worker.resume_job" in log
    assert job.progress_done == job.progress_total == evidence.meta["pairs_verified"]

    assert verdict_rows(queued) == verdict_rows(foreground)
    assert queued.stats == foreground.stats and job.result == {**foreground.job.result, "cleaning_run": queued.pk}
    assert not work_of(job).path.exists()
    assert not any(Path(queued.evidence_path).parent.glob(".*tmp*"))

    # An unreadable local-feature file (cut short) fails the job at its chunk with the reason, rather than
    # leaving it running for the watchdog to send again forever; its plan and chunks are deleted.
    store = LocalFeatureStore(feature_dir())
    damaged = store.path(evidence.ids[0])
    damaged.write_bytes(damaged.read_bytes()[:100])
    bad = start_job(Job.Kind.CLEAN, {**job.params, "evidence": {"k": 29}})  # new settings: not the cached evidence
    assert wait_for(lambda: Job.objects.get(pk=bad.pk).is_finished, 120)
    bad.refresh_from_db()
    assert bad.state == Job.State.FAILED and bad.message.startswith("spatial verification part "), bad.message
    assert f"unreadable local features of {evidence.ids[0]} ({damaged})" in bad.message
    assert CleaningRun.objects.filter(job=bad).count() == 0
    assert wait_for(lambda: not work_of(bad).path.exists(), 30)
