"""The watchdog: jobs whose worker died (no heartbeat for JOB_STALE_SECONDS) are sent again and resume
from what they finished; queued jobs whose message never arrived (the broker was down when they were
started) are sent again too; a chain whose step succeeded without its next step started (the process died
in between) goes on. Runs every minute on the workers' beat, or `manage.py watchdog`."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from webapp.jobs.chains import advance_stalled
from webapp.jobs.models import Job
from webapp.jobs.services import send_job

log = logging.getLogger(__name__)


def recover_jobs(stale_after: float | None = None) -> list[int]:
    """Send again every stale running job and every long-queued one, and start stalled chain steps; return
    their ids."""
    stale = timedelta(seconds=settings.JOB_STALE_SECONDS if stale_after is None else stale_after)
    cutoff = timezone.now() - stale
    jobs = Job.objects.filter(queued=True).filter(
        Q(state=Job.State.RUNNING, heartbeat_at__lt=cutoff)
        | Q(state=Job.State.QUEUED, heartbeat_at__lt=cutoff)
        | Q(state=Job.State.QUEUED, heartbeat_at__isnull=True, created_at__lt=cutoff))
    sent = []
    for job in jobs:
        why = "its worker stopped answering" if job.state == Job.State.RUNNING else "it was never picked up"
        note = f"{timezone.now():%Y-%m-%d %H:%M:%S} watchdog: sent again because {why}\n"
        # Mark first (heartbeat now): the next watchdog round waits a full period before sending again; and
        # release the job (no worker), so the message sent now may run it although its heartbeat is fresh.
        Job.objects.filter(pk=job.pk, state=job.state).update(heartbeat_at=timezone.now(), worker="",
                                                              log=job.log + note)
        if send_job(job):
            sent.append(job.pk)
            log.warning("job %s: %s", job.pk, note.strip())
    return sent + advance_stalled()
