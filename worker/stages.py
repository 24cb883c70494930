"""A job's stages (``ml.stages``) on the Celery workers: the stages run in the job's own process until one has
more than one part to do; those parts go to the workers as a chord (``worker.stage_part`` per part, on the
stage's queue), whose callback (``worker.resume_job``) runs the job's function again: every stage and part
done is found on disk and skipped, the stage is joined and the next one goes on. In the foreground (a
``manage.py`` command) every part runs in turn in the command's process.

A job sent again (the watchdog: its worker died) resumes the same way. A re-send while its first chord's
parts are still queued sends a second chord: a part computes under a lock, so its twin waits, then finds
it done and skips it; only the callback of the chord its current claim sent goes on
(``runner.claimable``); whichever task finds the job ended drops its work folder.

Each kind of job registers how to open its stages (``stages_of``); the job's function calls ``run_staged``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from ml.stages.protocol import Plan, Stage, StageFolder, Work, compute_part, run_stages, stage_label
from webapp.jobs.models import Job
from worker.runner import TRANSIENT_ERRORS, JobContext, JobDeferred, execute_job

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 10.0  # a long part still tells the watchdog its worker is alive
PART_TASK = "worker.stage_part"
RESUME_TASK = "worker.resume_job"


@dataclass
class StagedJob:
    """A job's work folder and the stages it runs there, in order."""

    work: Work
    stages: list[Stage]


# kind -> function(job, create) opening the job's stages; with ``create`` false it returns None when the job
# has no work folder (not planned yet, or dropped because the job ended).
Opener = Callable[[Job, bool], StagedJob | None]
OPENERS: dict[str, Opener] = {}


def stages_of(kind: str):
    """Register the function that opens the stages of jobs of ``kind``."""
    def register(fn: Opener) -> Opener:
        OPENERS[kind] = fn
        return fn
    return register


def work_of(job: Job) -> Work:
    """The job's work folder; the creation time makes it unique even where ids are reused."""
    return Work(Path(settings.ARTIFACTS_ROOT) / "work" / f"{job.kind}-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}")


def embed_runtime() -> dict:
    """How this worker embeds (it changes how fast, never the vectors): EMBED_BATCH_SIZE, EMBED_DECODE_WORKERS."""
    return {"batch_size": settings.EMBED_BATCH_SIZE, "num_workers": settings.EMBED_DECODE_WORKERS}


def run_staged(job: Job, ctx: JobContext, staged: StagedJob, finish: Callable[[dict[str, dict]], dict]) -> dict:
    """Run the job's stages (on the workers when it is queued, raising JobDeferred while they compute), then
    ``finish(outputs)`` (record what they made: idempotent), then drop the work folder. A job that fails or
    is cancelled drops it too: nothing resumes an ended job (a retry is a new job)."""
    try:
        outputs = run_stages(staged.stages, staged.work.path, _progress(ctx), _sender(job), ctx.note)
        result = finish(outputs)
    except (JobDeferred, *TRANSIENT_ERRORS):
        raise  # the parts are on the workers / the task retries and resumes
    except Exception:
        staged.work.drop()
        raise
    staged.work.drop()
    return result


def _progress(ctx: JobContext):
    def report(label: str, done: int, total: int) -> None:
        if total:
            ctx.progress(done, total, label, stage=label)
        else:  # planning, or a stage with nothing to count (recording a row): the counts so far stay
            ctx.progress(ctx.job.progress_done, ctx.job.progress_total, label, stage=label)
    return report


def _sender(job: Job):
    """What hands a stage's pending parts to the workers: a queued job with more than one part to do sends
    them as a chord and stops (JobDeferred); otherwise the parts run here, in turn."""
    def send(n: int, stage: Stage, folder: StageFolder, plan: Plan, pending: list[int]) -> None:
        if not (job.queued and len(pending) > 1):
            return
        from celery import chord

        from webapp.celery_app import app

        queue = stage.queue_of(plan)
        header = [app.signature(PART_TASK, args=(job.pk, stage.name, i), queue=queue) for i in pending]
        chord(header)(app.signature(RESUME_TASK, args=(job.pk,), kwargs={"holder": job.worker}, queue="cpu"))
        raise JobDeferred(f"{len(pending)} parts of {stage.title} sent to the workers")
    return send


def run_part(job_id: int, stage_name: str, i: int) -> int:
    """One part task of a chord: part ``i`` of the job's stage, unless the job has ended or its work folder
    was dropped. A part that cannot be done (bad settings, an unreadable image) fails the job with the
    reason, rather than leaving it running for the watchdog to send again and again; transient errors
    propagate. A part that outlived its job (a twin chord finished it) deletes what it may have written."""
    import worker.registry  # noqa: F401 - every kind's stages (the modules import this one)

    job = Job.objects.get(pk=job_id)
    staged = OPENERS[job.kind](job, False)
    stage = next((s for s in staged.stages if s.name == stage_name), None) if staged is not None else None
    try:
        if job.state == Job.State.RUNNING and stage is not None:
            folder = staged.work.stage(stage_name)
            plan = folder.read_plan()
            if plan is not None:
                compute_part(stage, folder, plan, i, heartbeat(job))  # logs it, named by the job's folder
                _report_part(job, staged, stage, folder, plan)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        if work_of(job).spec() is not None:  # else the work was dropped under this task: the job has ended
            log.exception("job %s: %s part %s failed", job_id, stage_name, i)
            fail(job, exc, f"{stage.title} part {i}")
    if Job.objects.filter(pk=job_id, state__in=Job.FINISHED_STATES).exists():
        work_of(job).drop()
    return i


def resume(job_id: int, holder: str | None, retry: bool) -> Job:
    """A chord's callback: the job's function again (``runner.claimable`` says whether this claim may run
    it); when the job has ended meanwhile (failed at a part, cancelled), its work folder goes."""
    job = execute_job(job_id, retry=True) if holder is None else execute_job(job_id, retry=retry, holder=holder)
    if job.is_finished:
        work_of(job).drop()
    return job


def _report_part(job: Job, staged: StagedJob, stage: Stage, folder: StageFolder, plan: Plan) -> None:
    """Progress of a stage on the workers = the items in its parts done (whoever computed them)."""
    label = stage_label(staged.stages.index(stage), len(staged.stages), stage)
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        progress_done=folder.items_done(plan), progress_total=plan.items, stage=label, message=label,
        heartbeat_at=timezone.now())


def heartbeat(job: Job):
    """A progress callback that refreshes the job's heartbeat every HEARTBEAT_SECONDS while a long part runs,
    so the watchdog does not take its worker for dead."""
    last = [time.monotonic()]

    def beat(_done: int, _total: int) -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
            last[0] = time.monotonic()
            Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(heartbeat_at=timezone.now())
    return beat


def fail(job: Job, exc: Exception, where: str) -> None:
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.FAILED, message=f"{where}: {exc}"[:500], finished_at=timezone.now(),
        error=f"{type(exc).__name__} in {where}: {exc}\n\n{traceback.format_exc()}"[-20_000:])
