"""Creating and enqueueing jobs. The web process sends tasks by name only: it never imports worker/."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from webapp.celery_app import app as celery_app
from webapp.jobs.models import Job

log = logging.getLogger(__name__)
RUN_JOB_TASK = "worker.run_job"
# Which Celery queue each kind of job goes to: model work on the GPU queue, the rest on CPU workers.
QUEUES = {Job.Kind.TRAIN: "gpu", Job.Kind.EMBED: "gpu"}


def create_job(kind: str, params: dict | None = None, user=None, queued: bool = False, chain=None,
               step: int | None = None) -> Job:
    """``chain``, ``step``: the job is that step of a JobChain (``webapp/jobs/chains.py``)."""
    return Job.objects.create(kind=kind, params=params or {}, created_by=user if user and user.pk else None,
                              queued=queued, chain=chain, chain_step=step)


def enqueue(job: Job) -> None:
    """Hand ``job`` to the workers once the surrounding transaction has committed (never before: a
    worker could otherwise look for a row that does not exist yet)."""
    transaction.on_commit(lambda: send_job(job))


def send_job(job: Job) -> bool:
    """Publish the job's task. If the broker is unreachable the job stays queued, says so, and the
    watchdog sends it again later: starting a job never fails because the broker is down."""
    try:
        celery_app.send_task(RUN_JOB_TASK, args=[job.pk], queue=QUEUES.get(job.kind, "cpu"))
    except Exception as exc:  # kombu raises several kinds for an unreachable broker
        log.warning("job %s: broker unreachable (%s); the watchdog will send it again", job.pk, exc)
        Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(
            message="waiting for the message broker (unreachable); it will be sent again automatically")
        return False
    Job.objects.filter(pk=job.pk, state=Job.State.QUEUED).update(heartbeat_at=timezone.now())
    return True


def start_job(kind: str, params: dict | None = None, user=None, chain=None, step: int | None = None) -> Job:
    with transaction.atomic():
        job = create_job(kind, params, user, queued=True, chain=chain, step=step)
        enqueue(job)
    return job


def cancel_job(job: Job) -> bool:
    """Ask a job to stop: a queued job is cancelled at once, a running one at its next progress report."""
    updated = Job.objects.filter(pk=job.pk, state__in=[Job.State.QUEUED, Job.State.RUNNING]).update(
        state=Job.State.CANCELLED, finished_at=timezone.now())
    return bool(updated)


class NotRetryable(ValueError):
    """Only failed or cancelled jobs are retried."""


def retry_job(job: Job, user=None) -> Job:
    """Start a new job with the same kind and parameters as a failed or cancelled one (the same step of its
    chain: the chain goes on from it)."""
    if not job.can_retry:
        raise NotRetryable(f"job #{job.pk} is {job.state}: only a failed or cancelled job can be retried")
    return start_job(job.kind, job.params, user or job.created_by, chain=job.chain, step=job.chain_step)
