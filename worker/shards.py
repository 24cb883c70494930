"""Index building in shards: the prepared vectors of a build_index job are cut into shards of
INDEX_SHARD_SIZE rows, each shard is indexed by its own task (a Celery chord on the workers, one after
another in the foreground), written to a temporary folder and published by rename, so a shard already on
disk is never built again and a job whose worker died resumes where it stopped. The chord's callback
measures recall (approximate shards), writes the manifest, renames the whole index into place and
publishes the IndexVersion in one transaction: the previous version answers searches until then.

A job sent again (the watchdog) while its first chord's parts are still queued or running sends a second
chord. That is safe and cheap: a part holds a lock file while it is computed, so its twin waits, then finds
it on disk and skips it; a second callback does nothing; the work folder is deleted once the job is closed,
by the callback and again by any part task that finds its job ended (a late twin may have written to it).
The locks are flock(2) locks: the work folder must be on one machine or a file system that honours them.

Files of job J (created at T)::

    ARTIFACTS_ROOT/work/index-J-T/plan.json      the fixed plan (count, index settings, ...), written once
                                 vectors.npy     float32 rows to index (after DBA), written once
                                 shard-NNNNN.ids.txt  the shard's image ids, one per line, written before the plan
                                 shard-NNNNN.lock     held by the task building that shard
                                 index/shard-NNNNN/   one complete index folder per finished shard
    ARTIFACTS_ROOT/indexes/<stamp>/              the published index (work/index-J-T/index renamed)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ml.atomic_files import write_bytes
from ml.index import (
    META,
    IndexConfig,
    build_shard,
    publish_sharded,
    shard_bounds,
    shard_complete,
    shard_name,
)
from webapp.jobs.models import Job
from webapp.search.models import IndexVersion
from worker.runner import TRANSIENT_ERRORS, JobDeferred

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 10.0  # a long shard build still tells the watchdog its worker is alive
PLAN = "plan.json"  # in every chord job's work folder, written before its parts are sent


def work_dir(job: Job) -> Path:
    """The job's folder; the creation time makes it unique even where ids are reused."""
    return Path(settings.ARTIFACTS_ROOT) / "work" / f"index-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def plan_path(job: Job) -> Path:
    return work_dir(job) / PLAN


def vectors_path(job: Job) -> Path:
    return work_dir(job) / "vectors.npy"


def building_dir(job: Job) -> Path:
    return work_dir(job) / "index"


def final_dir(p: dict) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "indexes" / p["stamp"]


def read_plan(job: Job) -> dict | None:
    """The job's plan, or None when none was written (or it was discarded)."""
    return read_json_or_none(plan_path(job))


def send_parts(job: Job, pending: list[int], part: str, callback: str, queue: str, what: str,
               callback_queue: str | None = None, callback_kwargs: dict | None = None) -> None:
    """A queued job with more than one part to do sends them to the workers as a Celery chord (the ``part``
    task per part on ``queue``, then ``callback`` with ``callback_kwargs``, on ``callback_queue`` or the
    same) and raises JobDeferred: they finish the job. Else this returns and the caller does the parts in
    turn."""
    if not (job.queued and len(pending) > 1):
        return
    from celery import chord

    from webapp.celery_app import app

    header = [app.signature(part, args=(job.pk, i), queue=queue) for i in pending]
    chord(header)(app.signature(callback, args=(job.pk,), kwargs=callback_kwargs or {}, queue=callback_queue or queue))
    raise JobDeferred(f"{len(pending)} {what} sent to the workers")


def read_json_or_none(path: Path, required: str = "count") -> dict | None:
    """A plan written once by rename: its content, or None when it is not there (not yet, or dropped) or
    lacks ``required``: then an older version wrote it, listing every id in the plan, which this version
    does not read. Such a job is planned again from scratch (``stale_plan``), and its parts do nothing."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data if required in data else None


def stale_plan(folder: Path) -> bool:
    """True (and the folder dropped) when ``folder`` holds a plan that ``read_json_or_none`` did not accept:
    the parts computed under it may not match the new plan (the catalogue may have changed meanwhile)."""
    if not (folder / PLAN).is_file():
        return False
    log.warning("%s: a plan in an older format; planning again", folder)
    drop(folder)
    return True


def write_plan(job: Job, data: dict, ids: list[str]) -> dict:
    """Write the job's plan, each shard's ids in a file of their own first: a shard task reads its own ids,
    not the whole collection's (millions); the plan, written last, holds their count and marks them complete."""
    data = {**data, "count": len(ids)}
    for i, (lo, hi) in enumerate(bounds(data)):
        write_bytes(ids_path(job, i), "".join(f"{image_id}\n" for image_id in ids[lo:hi]).encode())
    write_bytes(plan_path(job), json.dumps(data).encode())
    return data


def ids_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"{shard_name(i)}.ids.txt"


def bounds(p: dict) -> list[tuple[int, int]]:
    return shard_bounds(p["count"], p["shard_size"])


def shard_path(job: Job, i: int) -> Path:
    return building_dir(job) / shard_name(i)


def pending_shards(job: Job, p: dict) -> list[int]:
    if shard_complete(final_dir(p)):  # already renamed into place: nothing left to build
        return []
    return [i for i in range(len(bounds(p))) if not shard_complete(shard_path(job, i))]


def build(job: Job, p: dict, i: int) -> bool:
    """Index shard ``i`` unless it is on disk (or published) already; True when this call built it. A twin
    task building the same shard is waited for, not repeated."""
    with part_lock(work_dir(job) / f"{shard_name(i)}.lock") as held:
        if not held or shard_complete(final_dir(p)):
            return False
        lo, hi = bounds(p)[i]
        vectors = np.load(vectors_path(job), mmap_mode="r")
        built = build_shard(vectors[lo:hi], ids_path(job, i).read_text().splitlines(), shard_path(job, i), IndexConfig(**p["index"]),
                            progress=heartbeat(job))
    if built:
        log.info("job %s: built shard %s (%s vectors)", job.pk, i, hi - lo)
    return built


@contextmanager
def part_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (a file in the job's work folder) while one part is computed, so a
    task sent again for the same part waits for the first instead of computing it too. Yields False when
    the work folder is gone (the job ended). The kernel releases the lock of a process that dies."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def heartbeat(job: Job):
    """A progress callback that refreshes the job's heartbeat every HEARTBEAT_SECONDS while a long part runs,
    so the watchdog does not take its worker for dead."""
    last = [time.monotonic()]

    def beat(_done: int, _total: int) -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
            last[0] = time.monotonic()
            Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(heartbeat_at=timezone.now())
    return beat


def report(job: Job, p: dict, message: str) -> int:
    """Progress of a sharded build = the vectors in shards on disk (whoever built them)."""
    pending = set(pending_shards(job, p))
    done = p["count"] - sum(hi - lo for i, (lo, hi) in enumerate(bounds(p)) if i in pending)
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        progress_done=done, progress_total=p["count"], message=message, heartbeat_at=timezone.now())
    return done


def run_part(job_id: int, i: int, what: str, work: Callable[[Job], None], folder: Callable[[Job], Path]) -> int:
    """One part task of a chord (an index shard, a verification chunk): ``work(job)`` unless the job has
    ended or its work ``folder(job)`` was dropped. A part that cannot be done (bad settings, unreadable
    input) fails the job with the reason, rather than leaving it running for the watchdog to send again and
    again; transient errors propagate. A part that outlived its job (a twin chord finished it meanwhile)
    deletes what it may have written: nothing else would."""
    job = Job.objects.get(pk=job_id)
    plan = folder(job) / PLAN
    try:
        if job.state == Job.State.RUNNING and plan.is_file():
            work(job)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        if plan.is_file():  # else the job's work was dropped under this task: the job has ended, nothing to fail
            log.exception("job %s: %s %s failed", job_id, what, i)
            fail(job, exc, f"{what} {i}")
    if Job.objects.filter(pk=job_id, state__in=Job.FINISHED_STATES).exists():
        drop(folder(job))
    return i


def run_shard(job_id: int, i: int) -> int:
    """One shard task (idempotent: a shard already on disk is not built again)."""
    def work(job: Job) -> None:
        p = read_plan(job)
        if p is None:
            return  # discarded by a twin callback that finished the job
        build(job, p, i)
        report(job, p, f"indexed shard {i + 1} of {len(bounds(p))}")
    return run_part(job_id, i, "shard", work, work_dir)


def fail(job: Job, exc: Exception, where: str) -> None:
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.FAILED, message=f"{where}: {exc}"[:500], finished_at=timezone.now(),
        error=f"{type(exc).__name__} in {where}: {exc}\n\n{traceback.format_exc()}"[-20_000:])


def finish_job(job_id: int) -> str:
    """The chord's callback: publish the shards and close the job (idempotent: a second call does nothing)."""
    job = Job.objects.get(pk=job_id)
    if job.state != Job.State.RUNNING:
        discard(job)  # nothing resumes an ended job (a retry is a new job); a twin may have left files
        return job.state
    iv = IndexVersion.objects.filter(job=job).first()
    if iv is None:
        p = read_plan(job)
        missing = pending_shards(job, p) if p is not None else ["plan"]
        if missing:  # a shard task died for good: leave the job running for the watchdog to resume
            return f"waiting for shards {missing[:5]}"
        try:
            iv = publish(job, p)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            log.exception("job %s: publishing the index failed", job_id)
            fail(job, exc, "publishing")
            return Job.State.FAILED
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.SUCCEEDED, result=result_of(iv), message="done", finished_at=timezone.now(),
        progress_done=iv.size, progress_total=iv.size)
    discard(job)  # after closing: a twin part that finishes later finds the job ended and drops what it wrote
    return Job.State.SUCCEEDED


def publish(job: Job, p: dict) -> IndexVersion:
    """Manifest, rename into place, then the IndexVersion made active in one transaction (idempotent).
    The caller discards the job's work once the job is closed."""
    out = final_dir(p)
    if not shard_complete(out):
        for stale in building_dir(job).glob(".shard-*.tmp-*"):  # left by a worker killed in a shard build
            shutil.rmtree(stale, ignore_errors=True)
        try:
            publish_sharded(building_dir(job), out, p["recall_queries"],
                            extra={"shard_size": p["shard_size"], "job": job.pk})
        except (OSError, ValueError):
            if not shard_complete(out):  # not a twin callback that got there first
                raise
    meta = json.loads((out / META).read_text())
    recall = meta.get("recall") or {}
    with transaction.atomic():
        Job.objects.select_for_update().filter(pk=job.pk).first()  # one publisher per job at a time
        iv = IndexVersion.objects.filter(job=job).first()
        if iv is None:
            IndexVersion.objects.filter(is_active=True).update(is_active=False)
            iv = IndexVersion.objects.create(
                embedding_set_id=p["embedding_set"], kind={"exact": "flat"}.get(p["kind"], p["kind"]),
                path=str(out), size=meta["count"], is_active=True, published_at=timezone.now(), job=job,
                recall=recall.get("recall"), recall_queries=recall.get("queries"),
                params={"pipeline": p["pipeline"], "models": p["models"], "image_size": p["image_size"],
                        "scales": p["scales"], "flip": p.get("flip", False), "feature_dir": p["feature_dir"], "dense": p.get("dense", False),
                        "shards": len(meta["shards"]),
                        "shard_size": p["shard_size"], "recall_k": recall.get("k")})
    return iv


def discard(job: Job) -> None:
    """Drop the job's unpublished work (plan, input vectors, shards)."""
    drop(work_dir(job))


def drop(folder: Path) -> None:
    """Delete a job's work folder, its plan first: a part task that then finds no plan knows the job's work
    was dropped under it, and neither computes nor fails the job."""
    (folder / PLAN).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def result_of(iv: IndexVersion) -> dict:
    return {"index_version": iv.pk, "embedding_set": iv.embedding_set_id, "images": iv.size,
            "pipeline": iv.params.get("pipeline"), "shards": iv.params.get("shards"), "kind": iv.kind,
            "recall_at_100": iv.recall}
