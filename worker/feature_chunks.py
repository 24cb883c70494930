"""build_index's per-image features (RootSIFT, and dense features when the pipeline matches them) in chunks:
the images whose features are not cached yet are cut into chunks, each chunk is extracted by its own task
(a Celery chord on the workers, one after another in the foreground) whose callback hands the job back to
build_index, as its embedding chunks do. Each image's features are written to the shared cache by rename
(``ml.spatial.FeatureStore``), so a chunk a dead worker left half done is finished, not redone, and a
chunk marked done is never extracted again.

Files of job J (created at T)::

    ARTIFACTS_ROOT/work/features-J-T/plan.json          settings, count, chunk size; written last
                                     inputs-NNNNNN.json one chunk's ids and paths
                                     chunk-NNNNNN.lock  held by the task extracting that chunk
                                     chunk-NNNNNN.done  written once the chunk's features are all cached
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from django.utils import timezone

from ml.atomic_files import write_bytes
from ml.spatial import FeatureStore, LocalFeatureConfig, LocalFeatureStore
from webapp.jobs.models import Job
from webapp.search.services import feature_dir
from worker.chunks import (
    DEFAULT_CHUNK,
    chunk_bounds,
    chunk_count,
    dense_cache,
    inputs_name,
    job_work_dir,
    loaded_model,
    write_chunked_plan,
)
from worker.params import config_from
from worker.runner import JobContext
from worker.shards import (
    PLAN,
    drop,
    heartbeat,
    part_lock,
    read_json_or_none,
    run_part,
    send_parts,
)

log = logging.getLogger(__name__)


def work_dir(job: Job) -> Path:
    return job_work_dir(job, "features")


def cache_features(job: Job, ctx: JobContext, ids: list[str], paths: list[str], pipeline) -> None:
    """Cache the features ``pipeline`` verifies with for every image of ``ids``: in chunks on the workers
    (raises JobDeferred: the chord's callback resumes the job) or here, for the images not cached yet."""
    p = plan(job, ids, paths, pipeline)
    if p is None:
        return
    pending = pending_chunks(job, p)
    queue = "gpu" if p["dense"] else "cpu"  # dense features run the model; RootSIFT is OpenCV on the CPU
    send_parts(job, pending, "worker.feature_chunk", "worker.resume_job", queue, "feature chunks",
               callback_queue="cpu", callback_kwargs={"holder": job.worker})
    for i in pending:
        lo = chunk_bounds(p, i)[0]
        compute_chunk(job, p, i, progress=lambda d, _t, lo=lo: ctx.progress(lo + d, p["count"], "features"))
    drop(work_dir(job))


def plan(job: Job, ids: list[str], paths: list[str], pipeline) -> dict | None:
    """The job's plan (written once: a resumed job keeps it): the settings, and the images of ``ids`` whose
    features are not all cached yet, in chunks. None when every image's are."""
    written = read_plan(job)
    if written is not None:
        return written
    settings_ = {"sift": asdict(pipeline.local_features) if pipeline.uses_local_features else None,
                 "dense": asdict(pipeline.dense) if pipeline.uses_dense else None,
                 "spec": pipeline.models[0], "image_size": pipeline.image_size}
    stores = _stores(settings_, with_model=False)
    todo, lacking = [], set()  # the images to extract; the kinds of features any of them lacks
    for k, image_id in enumerate(ids):
        missing = [kind for kind, store in stores.items() if image_id not in store]
        if missing:
            todo.append(k)
            lacking.update(missing)
    if not todo:
        return None
    # A cache already full needs no pass: when the embedding chunks caught the dense features, the
    # chunks only run RootSIFT, on the CPU queue.
    settings_.update({kind: None for kind in stores if kind not in lacking})
    chunk = int(job.params.get("chunk_size") or DEFAULT_CHUNK)
    return write_chunked_plan(work_dir(job), {**settings_, "chunk": chunk}, [ids[k] for k in todo],
                              [paths[k] for k in todo])


def _stores(s: dict, with_model: bool) -> dict[str, FeatureStore]:
    """The caches the plan's settings fill, by kind; with ``with_model`` the dense one can extract."""
    stores: dict[str, FeatureStore] = {}
    if s["sift"] is not None:
        stores["sift"] = LocalFeatureStore(feature_dir(), config_from(LocalFeatureConfig, s["sift"]))
    if s["dense"] is not None:
        stores["dense"] = dense_cache(s["dense"], s["spec"], s["image_size"],
                                      loaded_model(s["spec"]) if with_model else None)
    return stores


def read_plan(job: Job) -> dict | None:
    return read_json_or_none(work_dir(job) / PLAN)


def done_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"chunk-{i:06d}.done"


def pending_chunks(job: Job, p: dict) -> list[int]:
    return [i for i in range(chunk_count(p)) if not done_path(job, i).exists()]


def compute_chunk(job: Job, p: dict, i: int, progress=None) -> None:
    """Extract chunk ``i``'s missing features unless it is done (a twin task on it is waited for)."""
    done = done_path(job, i)
    with part_lock(done.with_suffix(".lock")) as held:
        if not held or done.exists():
            return
        chunk = json.loads((work_dir(job) / inputs_name(i)).read_text())
        items = list(zip(chunk["ids"], chunk["paths"], strict=True))
        kinds = _stores(p, with_model=True)
        stores = list(kinds.values())
        for n, store in enumerate(stores):
            step = None if progress is None else (
                lambda d, t, n=n: progress((n * t + d) // len(stores), t))
            store.ensure(items, progress=step)
        write_bytes(done, b"")
    log.info("job %s: %s features of chunk %s (%s images)", job.pk, "+".join(kinds), i, len(items))


def report(job: Job, p: dict, message: str) -> None:
    """Progress = the images in chunks done (whoever extracted them)."""
    done = sum(hi - lo for lo, hi in (chunk_bounds(p, i) for i in range(chunk_count(p)) if done_path(job, i).exists()))
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        progress_done=done, progress_total=p["count"], message=message, heartbeat_at=timezone.now())


def run_chunk(job_id: int, i: int) -> int:
    """One chunk task of the chord (idempotent: a chunk done is not extracted again). An image that cannot
    be read fails the job with the reason (``shards.run_part``)."""
    def work(job: Job) -> None:
        p = read_plan(job)
        if p is None:
            return  # dropped by a twin that finished the job
        compute_chunk(job, p, i, progress=heartbeat(job))
        report(job, p, f"features of chunk {i + 1} of {chunk_count(p)}")
    return run_part(job_id, i, "feature chunk", work, work_dir)
