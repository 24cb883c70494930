"""Celery tasks: thin glue from a Job id to the job's function."""

import contextlib
import logging
import time

from celery import shared_task
from django.db import DatabaseError, close_old_connections, connection

import worker.registry  # noqa: F401 - registers the job functions
from worker import chunks, clean_chunks, cleaning, feature_chunks, shards
from worker.runner import TRANSIENT_ERRORS, execute_job
from worker.watchdog import recover_jobs

log = logging.getLogger(__name__)
# How long a chunk task waits in place for its database to come back before it gives up.
DB_WAIT_SECONDS = 600
# One part of a chord (an embedding chunk, an index shard, a verification chunk): redelivered when its
# worker dies, its result kept for the chord to count.
CHORD_PART = dict(acks_late=True, reject_on_worker_lost=True, ignore_result=False, autoretry_for=TRANSIENT_ERRORS,
                  retry_backoff=5, retry_backoff_max=300, max_retries=20)
# A chord's callback, which publishes the parts and closes the job.
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


@shared_task(name="worker.embed_chunk", **CHORD_PART)
def embed_chunk(job_id: int, chunk: int) -> int:
    """One chunk of an embedding job (idempotent: a chunk already on disk is not computed again)."""
    close_old_connections()
    return wait_out_database_errors(chunks.run_chunk, job_id, chunk)


@shared_task(name="worker.feature_chunk", **CHORD_PART)
def feature_chunk(job_id: int, chunk: int) -> int:
    """One chunk of a build_index job's RootSIFT and dense features (idempotent: a chunk done is not redone)."""
    close_old_connections()
    return wait_out_database_errors(feature_chunks.run_chunk, job_id, chunk)


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


@shared_task(name="worker.finish_embed", **CHORD_CALLBACK)
def finish_embed(_results, job_id: int) -> str:
    """The chord's callback: publish the chunks as one EmbeddingSet and close the job."""
    close_old_connections()
    return chunks.finish_job(job_id)


@shared_task(name="worker.resume_job", bind=True, **CHORD_CALLBACK)
def resume_job(self, _results, job_id: int, holder: str | None = None) -> str:
    """A chord's callback that hands the job back to its own function, which goes on from what is on disk
    (build_index after its embedding chunks: the set, regions, local features, then its index shards).
    ``holder``: the worker whose claim sent the chord; a callback of a chord sent before the watchdog
    re-sent the job does nothing (``runner.claimable``). Messages without it continue the job as before."""
    close_old_connections()
    try:
        if holder is None:
            return execute_job(job_id, retry=True).state
        return execute_job(job_id, retry=self.request.retries > 0, holder=holder).state
    finally:
        close_old_connections()


@shared_task(name="worker.index_shard", **CHORD_PART)
def index_shard(job_id: int, shard: int) -> int:
    """One shard of a build_index job (idempotent: a shard already on disk is not built again)."""
    close_old_connections()
    return wait_out_database_errors(shards.run_shard, job_id, shard)


@shared_task(name="worker.finish_index", **CHORD_CALLBACK)
def finish_index(_results, job_id: int) -> str:
    """The chord's callback: manifest, recall, rename into place, publish the IndexVersion, close the job."""
    close_old_connections()
    return shards.finish_job(job_id)


@shared_task(name="worker.clean_chunk", **CHORD_PART)
def clean_chunk(job_id: int, chunk: int) -> int:
    """One chunk of a clean job's spatial verification (idempotent: a chunk on disk is not verified again)."""
    close_old_connections()
    return wait_out_database_errors(clean_chunks.run_chunk, job_id, chunk)


@shared_task(name="worker.finish_clean", **CHORD_CALLBACK)
def finish_clean(_results, job_id: int) -> str:
    """The chord's callback: merge the chunks into the evidence, store the CleaningRun, close the job."""
    close_old_connections()
    return cleaning.finish_job(job_id)


@shared_task(name="worker.watchdog")
def watchdog() -> list[int]:
    close_old_connections()
    return recover_jobs()
