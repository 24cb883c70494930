"""Celery tasks: thin glue from a Job id to the job's function."""

from celery import shared_task
from django.db import close_old_connections

import worker.registry  # noqa: F401 - registers the job functions
from worker.runner import execute_job


@shared_task(name="worker.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: int) -> str:
    close_old_connections()  # a worker lives long: drop connections the database has since closed
    try:
        return execute_job(job_id).state
    finally:
        close_old_connections()
