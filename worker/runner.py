"""Running a Job: the same function in the foreground (a manage.py command) and on a Celery worker.

The runner claims the row, calls the job's function with a context that reports progress into the row
(throttled, so a fast loop does not hammer the database) and records the result or the error.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from tqdm import tqdm

from webapp.jobs.chains import advance
from webapp.jobs.models import Job

log = logging.getLogger(__name__)
JobFunction = Callable[[Job, "JobContext"], dict]
JOB_FUNCTIONS: dict[str, JobFunction] = {}
MAX_LOG_CHARS = 200_000


class JobCancelled(Exception):
    """Raised inside a job when someone cancelled it."""


class JobDeferred(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a job function that handed its work to other tasks (a chord); they finish the job."""


# Database errors that pass (a restart, a failover): the task is retried later rather than the job failed.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def job_function(kind: str):
    """Register the function that does the work of jobs of ``kind``."""
    def register(fn: JobFunction) -> JobFunction:
        JOB_FUNCTIONS[kind] = fn
        return fn
    return register


class JobContext:
    """Progress, notes and cancellation for a running job."""

    def __init__(self, job: Job, show_bar: bool, min_interval: float = 0.5):
        self.job = job
        self.min_interval = min_interval
        self._last_write = 0.0
        self._pending_log: list[str] = []
        self._bar = tqdm(desc=job.get_kind_display(), unit="item") if show_bar else None

    def progress(self, done: int, total: int | None = None, message: str | None = None,
                 stage: str | None = None) -> None:
        """``stage``: the stage a job of several stages has reached (its progress counts that stage's items);
        a new stage is written at once."""
        if self._bar is not None:
            if stage is not None and stage != self._bar.desc:
                self._bar.set_description(stage)
            if total is not None and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        now = time.monotonic()
        finished = total is not None and done >= total
        new_stage = stage is not None and stage != self.job.stage
        if now - self._last_write < self.min_interval and not finished and not new_stage:
            return
        self._last_write = now
        fields = {"progress_done": done, "heartbeat_at": timezone.now()}
        if stage is not None:
            fields["stage"] = stage[:200]
        if total is not None:
            fields["progress_total"] = total
        if message is not None:
            fields["message"] = message[:500]
        self._write(fields)

    def note(self, line: str) -> None:
        """A line for the job's log (a bad file, a skipped row); also shown under the progress bar."""
        self._pending_log.append(line)
        if self._bar is not None:
            self._bar.write(line)
        else:
            log.warning("job %s: %s", self.job.pk, line)

    def flush(self) -> None:
        self._write({})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def take_log(self) -> str | None:
        """The job's whole log with the pending lines added, or None if nothing is pending."""
        if not self._pending_log:
            return None
        self.job.log = (self.job.log + "\n".join(self._pending_log) + "\n")[-MAX_LOG_CHARS:]
        self._pending_log.clear()
        return self.job.log

    def _write(self, fields: dict) -> None:
        new_log = self.take_log()
        if new_log is not None:
            fields["log"] = new_log
        # Only a running job is updated: a cancel in between wins, and the job stops here.
        if fields and not Job.objects.filter(pk=self.job.pk, state=Job.State.RUNNING).update(**fields):
            raise JobCancelled()
        for name, value in fields.items():
            setattr(self.job, name, value)


def claimable(jobs, retry: bool = False, holder: str | None = None):
    """The jobs a message may run: queued ones, and running ones whose worker is gone: released by the
    watchdog (``worker`` cleared) or silent for JOB_STALE_SECONDS. A second message for a job that a live
    worker is running (the watchdog re-sent it while it waited in a long queue) must not run it again; a
    ``retry`` of the message that ran it (a transient error stopped it) continues it.

    ``holder``: the message is a chord's callback handing the job back (``worker.resume_job``), and
    ``holder`` the worker that sent the chord: it runs the job only while that claim stands. When the
    watchdog re-sent the job meanwhile, the new claim sends a chord of its own, whose callback goes on;
    the old chord's callback does nothing, rather than continue the same build twice."""
    if holder is not None and not retry:
        return jobs.filter(state=Job.State.RUNNING, worker=holder)
    if retry:
        return jobs.filter(state__in=[Job.State.QUEUED, Job.State.RUNNING])
    stale = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS)
    return jobs.filter(
        Q(state=Job.State.QUEUED)
        | Q(state=Job.State.RUNNING) & (Q(worker="") | Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale)))


def execute_job(job_id: int, foreground: bool = False, retry: bool = False, holder: str | None = None) -> Job:
    """Run job ``job_id`` to its end and return the row as it finished. ``retry``: this is Celery retrying
    the task that ran the job; ``holder``: a chord's callback resuming it (see ``claimable``)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    claimed = claimable(Job.objects.filter(pk=job_id), retry, holder).update(
        state=Job.State.RUNNING, started_at=Coalesce(F("started_at"), Value(timezone.now())),
        heartbeat_at=timezone.now(), worker=worker, error="")
    job = Job.objects.get(pk=job_id)
    if not claimed:
        log.info("job %s is %s (worker %s); nothing to run", job_id, job.state, job.worker or "-")
        return job
    import worker.registry  # noqa: F401 - every kind's function (the modules import this one)

    fn = JOB_FUNCTIONS.get(job.kind)
    ctx = JobContext(job, show_bar=foreground)
    final: dict = {"finished_at": timezone.now()}
    try:
        if fn is None:
            raise ValueError(f"no function runs jobs of kind {job.kind!r}")
        result = fn(job, ctx) or {}
        ctx.flush()
        # A job that finished with problems (rows it rejected) says so in its result's "warning".
        final.update(state=Job.State.SUCCEEDED, result=result, message=result.get("warning") or "done")
    except JobCancelled:
        log.info("job %s was cancelled", job_id)
    except JobDeferred as deferred:
        ctx.close()
        ctx.progress(job.progress_done, job.progress_total, str(deferred))
        return Job.objects.get(pk=job_id)
    except TRANSIENT_ERRORS:
        ctx.close()
        raise  # the task retries with backoff; the job resumes then
    except Exception as exc:
        log.exception("job %s failed", job_id)
        final.update(state=Job.State.FAILED, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"[-20_000:],
                     message=str(exc)[:500])
    finally:
        ctx.close()
    final["finished_at"] = timezone.now()
    new_log = ctx.take_log()
    if new_log is not None:
        final["log"] = new_log
    recorded = Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(**final)
    job = Job.objects.get(pk=job_id)
    if recorded and job.chain_id and job.state == Job.State.SUCCEEDED:
        _next_step(job)
    return job


def _next_step(job: Job) -> None:
    """Start the next step of the job's chain; if that fails here, the watchdog starts it later."""
    try:
        advance(job)
    except Exception:
        log.exception("job %s succeeded, but the next step of chain %s did not start yet", job.pk, job.chain_id)
