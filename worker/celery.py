"""The worker's entry point: ``celery -A worker.celery worker -Q cpu,gpu,interactive``.

The same Celery app the web process sends with, plus the task modules that only workers load.
"""

import logging
import os

from celery.signals import worker_init

from webapp.celery_app import app

app.conf.imports = ("worker.tasks",)

__all__ = ["app"]
log = logging.getLogger(__name__)


@worker_init.connect
def share_cores(sender=None, **_) -> None:
    """Give each prefork child its share of the cores (``OMP_NUM_THREADS``, read by ``ml.embed``): N
    children each running torch on every core oversubscribe the machine. Two worker processes with one
    thread each embedded 2.0x faster than one process with two threads (docs/benchmarks.md). A budget the
    operator set wins; a solo worker keeps every core."""
    if os.environ.get("OMP_NUM_THREADS") or sender is None:
        return
    processes = getattr(sender, "concurrency", 1)
    if "prefork" not in str(getattr(sender, "pool_cls", "")).lower() or not isinstance(processes, int):
        return
    if processes > 1:
        cores = len(os.sched_getaffinity(0))
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // processes))
        log.warning("%s pool processes on %s cores: OMP_NUM_THREADS=%s each", processes, cores,
                    os.environ["OMP_NUM_THREADS"])
