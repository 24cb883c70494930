"""Base for batch commands: run the job in the foreground (still recorded as a Job, with a progress
bar), or with ``--queue`` hand it to the workers and print its id."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

import worker.registry  # noqa: F401 - registers the job functions
from webapp.jobs.models import Job
from webapp.jobs.services import create_job, start_job
from worker.runner import execute_job


class JobCommand(BaseCommand):
    job_kind: str = ""

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="store_true", help="Run on the workers; print the job id and return.")

    def run_job(self, params: dict, options: dict) -> Job:
        if options.get("queue"):
            job = start_job(self.job_kind, params)
            self.stdout.write(f"queued job {job.pk}")
            return job
        job = create_job(self.job_kind, params)
        job = execute_job(job.pk, foreground=True)
        if job.state != Job.State.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.state}: {job.message or job.error.splitlines()[0]}")
        self.stdout.write(self.style.SUCCESS(f"job {job.pk} succeeded: {json.dumps(job.result)}"))
        return job
