"""Jobs that run in turn. A JobChain lists its steps; the first starts at once, and each later one starts when
the one before it has succeeded (the runner calls ``advance`` as it records the success; the watchdog calls
``advance_stalled`` for a success whose process died before it could), with the values it ``takes`` from
that job's result added to its parameters. A step that fails or is cancelled stops the chain, and the
chain's page says where and why; retrying that job (the job page's Retry) goes on from it."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from webapp.jobs.models import Job, JobChain
from webapp.jobs.services import create_job, start_job

log = logging.getLogger(__name__)
STALLED_AFTER = timedelta(seconds=30)  # the runner advances at once; the watchdog only after this
LOOKBACK = timedelta(days=2)


def start_chain(title: str, steps: list[dict], user=None) -> JobChain:
    """Create the chain and start its first step on the workers."""
    if not steps:
        raise ValueError("a chain needs at least one step")
    for step in steps:
        if step.get("kind") not in Job.Kind.values:
            raise ValueError(f"unknown job kind {step.get('kind')!r}")
    with transaction.atomic():
        chain = JobChain.objects.create(title=title, steps=steps, created_by=user if user and user.pk else None)
        start_job(steps[0]["kind"], steps[0].get("params", {}), chain.created_by, chain=chain, step=0)
    return chain


def advance(job: Job) -> Job | None:
    """Start the step after ``job`` (which succeeded), once: None when it was the last or is started already."""
    if job.chain_id is None or job.state != Job.State.SUCCEEDED:
        return None
    with transaction.atomic():
        chain = JobChain.objects.select_for_update().get(pk=job.chain_id)  # one advance per step
        step = job.chain_step + 1
        if step >= len(chain.steps) or chain.jobs.filter(chain_step=step).exists():
            return None
        spec = chain.steps[step]
        missing = [key for key in spec.get("takes", {}).values() if job.result.get(key) is None]
        params = {**spec.get("params", {}), **{p: job.result.get(k) for p, k in spec.get("takes", {}).items()}}
        if missing:  # the chain stops here, saying why, rather than run the step without its input
            failed = create_job(spec["kind"], params, chain.created_by, chain=chain, step=step)
            message = f"job #{job.pk} ({job.get_kind_display()}) reported no {', '.join(missing)}"
            Job.objects.filter(pk=failed.pk).update(state=Job.State.FAILED, message=message, error=message,
                                                    finished_at=timezone.now())
            return Job.objects.get(pk=failed.pk)
        return start_job(spec["kind"], params, chain.created_by, chain=chain, step=step)


def advance_stalled() -> list[int]:
    """Start the next step of every chain whose step succeeded a while ago without one (the process that
    recorded the success died first); returns the jobs started."""
    cutoff = timezone.now() - STALLED_AFTER
    done = Job.objects.filter(chain__isnull=False, state=Job.State.SUCCEEDED, finished_at__lt=cutoff,
                              finished_at__gt=cutoff - LOOKBACK)
    started = []
    for job in done:
        try:
            nxt = advance(job)
        except Exception:  # one chain's trouble must not stop the watchdog's other work
            log.exception("chain %s: could not start the step after job %s", job.chain_id, job.pk)
            continue
        if nxt is not None:
            log.warning("chain %s: started step %s (job %s) the runner did not", job.chain_id, nxt.chain_step, nxt.pk)
            started.append(nxt.pk)
    return started
