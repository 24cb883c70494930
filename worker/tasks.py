"""Celery tasks: thin glue from a Job id to the job's function."""

from celery import shared_task
from django.db import close_old_connections

import worker.registry  # noqa: F401 - registers the job functions
from worker import chunks
from worker.runner import TRANSIENT_ERRORS, execute_job
from worker.watchdog import recover_jobs


@shared_task(name="worker.run_job", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=5, retry_backoff_max=300, max_retries=20)
def run_job(job_id: int) -> str:
    close_old_connections()  # a worker lives long: drop connections the database has since closed
    try:
        return execute_job(job_id).state
    finally:
        close_old_connections()


@shared_task(name="worker.embed_chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=False,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=5, retry_backoff_max=300, max_retries=20)
def embed_chunk(job_id: int, chunk: int) -> int:
    """One chunk of an embedding job (idempotent: a chunk already on disk is not computed again)."""
    close_old_connections()
    return chunks.run_chunk(job_id, chunk)


@shared_task(name="worker.finish_embed", acks_late=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=5,
             max_retries=20)
def finish_embed(_results, job_id: int) -> str:
    """The chord's callback: publish the chunks as one EmbeddingSet and close the job."""
    close_old_connections()
    return chunks.finish_job(job_id)


@shared_task(name="worker.watchdog")
def watchdog() -> list[int]:
    close_old_connections()
    return recover_jobs()
