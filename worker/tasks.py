"""Celery tasks: thin glue from a Job id to the job's function."""

import contextlib
import logging
import time

from celery import shared_task
from django.db import DatabaseError, close_old_connections, connection

import worker.registry  # noqa: F401 - registers the job functions
from worker import stages
from worker.runner import TRANSIENT_ERRORS, execute_job
from worker.watchdog import recover_jobs

log = logging.getLogger(__name__)
# How long a chunk task waits in place for its database to come back before it gives up.
DB_WAIT_SECONDS = 600
# One part of a stage's chord (an embedding chunk, an index shard, a verification chunk): redelivered when
# its worker dies, its result kept for the chord to count.
CHORD_PART = dict(acks_late=True, reject_on_worker_lost=True, ignore_result=False, autoretry_for=TRANSIENT_ERRORS,
                  retry_backoff=5, retry_backoff_max=300, max_retries=20)
# A chord's callback, which hands the job back to its function (the next stage).
CHORD_CALLBACK = dict(acks_late=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=5, max_retries=20)


@shared_task(name="worker.run_job", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=5, retry_backoff_max=300, max_retries=20)
def run_job(self, job_id: int) -> str:
    close_old_connections()  # a worker lives long: drop connections the database has since closed
    try:
        # A retry continues the job this message was running; a new message never runs a job a live
        # worker has (a duplicate the watchdog sent while the job waited in the queue).
        return execute_job(job_id, retry=self.request.retries > 0).state
    finally:
        close_old_connections()


@shared_task(name=stages.PART_TASK, **CHORD_PART)
def stage_part(job_id: int, stage: str, part: int) -> int:
    """One part of a job's stage (idempotent: a part done is not computed again)."""
    close_old_connections()
    return wait_out_database_errors(stages.run_part, job_id, stage, part)


def wait_out_database_errors(fn, *args):
    """Run ``fn``; while the database is unreachable, wait with backoff and run it again, in this task.

    Why not Celery's autoretry here: a task that keeps its result (a chord's chunk) writes the RETRY state
    to the django-db result backend, that is, into the database that is down; that write fails outside
    the task body and Celery's tracer lets it kill the worker process. Waiting here writes nothing until
    the database answers again. ``fn`` must be idempotent (a finished chunk is never computed again)."""
    delay, deadline = 1.0, time.monotonic() + DB_WAIT_SECONDS
    while True:
        try:
            return fn(*args)
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); trying again in %.0f s", exc, delay)
            with contextlib.suppress(DatabaseError):
                connection.close()  # a broken connection never recovers: the next try opens a new one
            time.sleep(delay)
            delay = min(delay * 2, 30)


@shared_task(name=stages.RESUME_TASK, bind=True, **CHORD_CALLBACK)
def resume_job(self, _results, job_id: int, holder: str | None = None) -> str:
    """A stage's chord callback that hands the job back to its own function, which goes on from what is on
    disk: the stages and parts done are skipped, the stage is joined and the next one starts.
    ``holder``: the worker whose claim sent the chord; a callback of a chord sent before the watchdog
    re-sent the job does nothing (``runner.claimable``). Messages without it continue the job as before."""
    close_old_connections()
    try:
        return stages.resume(job_id, holder, self.request.retries > 0).state
    finally:
        close_old_connections()


@shared_task(name="worker.watchdog")
def watchdog() -> list[int]:
    close_old_connections()
    return recover_jobs()
