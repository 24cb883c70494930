"""Embedding in chunks: any number of workers embed chunks in parallel (a Celery chord), each chunk is
written to a temp file and published by rename, and a chunk already on disk is never computed again, so a
job whose worker died resumes where it stopped and ends with the same vectors as an uninterrupted run.

With ``regional`` in the params (R-MAC levels, as ``ml.regional.RegionalConfig``) each chunk also keeps its
images' region descriptors, from the same forward passes (region 0 is the whole image, so it gives the
vectors too); the EmbeddingSet then carries a ``regions.npy`` that ``build_index`` takes instead of making
the regions again in one process."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from ml.atomic_files import copy_rows, npy_bytes, write_bytes, write_npy
from ml.dense_matching import DenseCacheFill, DenseFeatureStore, DenseMatchConfig
from ml.embed import EmbedConfig, embed_images, write_embedding_blocks
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.regional import RegionalConfig, embed_database_regions, whole_image_vectors
from ml.weights import load_model
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, ModelVersion
from webapp.search.services import active_model_version, feature_dir, image_file_path, model_spec
from worker.params import config_from, images_in
from worker.shards import PLAN, drop, heartbeat, part_lock, read_json_or_none, run_part, stale_plan

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 512
_models: dict[str, object] = {}  # one loaded model per spec per worker process


def job_work_dir(job: Job, kind: str) -> Path:
    """A job's folder of intermediate files; the creation time makes it unique even where ids are reused."""
    return Path(settings.ARTIFACTS_ROOT) / "work" / f"{kind}-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"


def work_dir(job: Job) -> Path:
    """The job's chunk folder."""
    return job_work_dir(job, "embed")


def plan(job: Job) -> dict:
    """The job's fixed plan (images, model, settings), written once so every resume sees the same one."""
    written = read_plan(job)
    if written is not None:
        return written
    params = job.params
    mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
    images = list(images_in(params).only("pk", "external_id", "file", "path"))
    if not images:
        raise ValueError("no images to embed")
    embed = {**params.get("embed", {})}
    embed["scales"] = list(embed.get("scales", [1.0]))
    return write_plan(job, {
        "model_version": mv.pk, "spec": model_spec(mv), "embed": embed,
        "chunk": int(params.get("chunk_size") or DEFAULT_CHUNK), "regional": regional_params(params),
        "ids": [im.external_id for im in images], "paths": [image_file_path(im) for im in images]})


def write_plan(job: Job, data: dict) -> dict:
    """Write ``data`` as the job's plan unless one is there already (a resumed job keeps its first plan);
    returns the plan on disk. Also the embedding stage of build_index (``worker.indexing``), which adds
    ``set_params`` and ``image_filter`` for the EmbeddingSet it publishes.

    The ids and paths go to one small file per chunk, so a chunk task reads its own images, not the whole
    collection's (millions of paths); the plan, written last, holds their count and marks them complete."""
    written = read_plan(job)
    if written is not None:
        return written
    ids, paths = data.pop("ids"), data.pop("paths")
    return write_chunked_plan(work_dir(job), data, ids, paths)


def write_chunked_plan(folder: Path, data: dict, ids: list[str], paths: list[str]) -> dict:
    """``data`` with the count, written as ``folder``'s plan after one inputs file per chunk of
    ``data["chunk"]`` images (an older plan there is dropped first); returns it."""
    stale_plan(folder)
    data = {**data, "count": len(ids)}
    for i in range(chunk_count(data)):
        lo, hi = chunk_bounds(data, i)
        write_bytes(folder / inputs_name(i), json.dumps({"ids": ids[lo:hi], "paths": paths[lo:hi]}).encode())
    write_bytes(folder / PLAN, json.dumps(data).encode())
    return data


def regional_params(params: dict) -> dict | None:
    """The region grid the job keeps descriptors for (``RegionalConfig`` fields), or None for none."""
    cfg = config_from(RegionalConfig, params.get("regional") or {})
    return {"levels": cfg.levels, "overlap": cfg.overlap} if cfg.enabled else None


def read_plan(job: Job) -> dict | None:
    """The job's plan, or None when none was written (or it was dropped)."""
    return read_json_or_none(work_dir(job) / PLAN)


def chunk_count(p: dict) -> int:
    return (p["count"] + p["chunk"] - 1) // p["chunk"]


def chunk_bounds(p: dict, i: int) -> tuple[int, int]:
    return i * p["chunk"], min((i + 1) * p["chunk"], p["count"])


def inputs_name(i: int) -> str:
    return f"inputs-{i:06d}.json"


def inputs_path(job: Job, i: int) -> Path:
    return work_dir(job) / inputs_name(i)


def chunk_inputs(job: Job, i: int) -> dict:
    """{"ids": [...], "paths": [...]} of chunk ``i``."""
    return json.loads(inputs_path(job, i).read_text())


def chunk_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"chunk-{i:06d}.npy"


def regions_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"chunk-{i:06d}.regions.npy"


def pending_chunks(job: Job, p: dict) -> list[int]:
    return [i for i in range(chunk_count(p)) if not chunk_path(job, i).exists()]


def embed_config(p: dict) -> EmbedConfig:
    """The plan's embedding settings; batching and decoding, when the plan leaves them open (build_index's
    plans do), are this worker's own (EMBED_BATCH_SIZE, EMBED_DECODE_WORKERS): they do not change the vectors."""
    local = {"batch_size": settings.EMBED_BATCH_SIZE, "num_workers": settings.EMBED_DECODE_WORKERS}
    return config_from(EmbedConfig, {**local, **p["embed"], "scales": tuple(p["embed"]["scales"])})


def compute_chunk(job: Job, p: dict, i: int, progress=None) -> None:
    """Embed chunk ``i`` unless it is on disk already (a twin task embedding it is waited for, not repeated)."""
    path = chunk_path(job, i)
    with part_lock(path.with_suffix(".lock")) as held:
        if not held or path.exists():
            return
        model = loaded_model(p["spec"])
        inputs = chunk_inputs(job, i)
        paths = inputs["paths"]
        dense = dense_fill(p, inputs["ids"])
        if p.get("regional"):  # regions first (their own temp + rename), then the vectors that mark it done
            regions = embed_database_regions([model], paths, embed_config(p),
                                             RegionalConfig(**p["regional"]), regions_path(job, i),
                                             progress=progress, tap=dense)
            vectors = whole_image_vectors(regions)
        else:
            vectors = embed_images(model, paths, embed_config(p), progress=progress, tap=dense)
        write_bytes(path, npy_bytes(vectors.astype(np.float32)))
    caught = f", dense features of {dense.filled} caught" if dense is not None else ""
    log.info("job %s: embedded chunk %s (%s images%s)", job.pk, i, len(paths), caught)


def dense_fill(p: dict, ids: list[str]) -> DenseCacheFill | None:
    """For build_index's chunks (their plan has the pipeline's ``dense`` settings): the images' dense features
    cached from the chunk's own passes, so its feature stage (``worker.feature_chunks``) finds them."""
    if not p.get("dense"):
        return None
    return DenseCacheFill.for_embedding(dense_cache(p["dense"], p["spec"], p["embed"]["image_size"]), ids,
                                        embed_config(p))


def dense_cache(dense: dict, spec: str, image_size: int, model=None) -> DenseFeatureStore:
    """The product's cache of dense features made with ``dense`` settings (a plan's) by model ``spec``."""
    return DenseFeatureStore(feature_dir(), config_from(DenseMatchConfig, dense), spec, image_size, model)


def loaded_model(spec: str):
    """The model of ``spec``, loaded once per worker process (embedding and feature chunks share it)."""
    if spec not in _models:
        _models[spec] = load_model(spec)
    return _models[spec]


def report(job: Job, p: dict, message: str) -> None:
    """Progress of a chunked job = the images in chunks on disk (whoever computed them)."""
    finished = (chunk_bounds(p, i) for i in range(chunk_count(p)) if chunk_path(job, i).exists())
    done = sum(hi - lo for lo, hi in finished)
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        progress_done=done, progress_total=p["count"], message=message, heartbeat_at=timezone.now())


def run_chunk(job_id: int, i: int) -> int:
    """One chunk task of the chord (idempotent: a chunk on disk is not computed again). A chunk that cannot
    be embedded (an image that cannot be read) fails the job with the reason (``shards.run_part``)."""
    def work(job: Job) -> None:
        p = read_plan(job)
        if p is None:
            return  # dropped by a twin callback that closed the job
        compute_chunk(job, p, i, progress=heartbeat(job))  # a chunk of the default pipeline takes minutes
        report(job, p, f"embedding chunk {i + 1} of {chunk_count(p)}")
    return run_part(job_id, i, "embedding chunk", work, work_dir)


def finish_job(job_id: int) -> str:
    """Publish the chunks as one EmbeddingSet and mark the job done (idempotent: a second call does nothing)."""
    job = Job.objects.get(pk=job_id)
    if job.state != Job.State.RUNNING:
        drop(work_dir(job))  # nothing resumes an ended job (a retry is a new job)
        return job.state
    p = plan(job)
    missing = pending_chunks(job, p)
    if missing:  # a chunk task died for good: leave the job running for the watchdog to resume
        return f"waiting for chunks {missing[:5]}"
    result = publish(job, p)
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.SUCCEEDED, result=result, message="done", finished_at=timezone.now(),
        progress_done=p["count"], progress_total=p["count"])
    drop(work_dir(job))  # the chunks are in the EmbeddingSet now; a copy of every vector is not kept
    return Job.State.SUCCEEDED


def publish(job: Job, p: dict) -> dict:
    """The chunks as one EmbeddingSet, written chunk by chunk (memory holds one shard, not the collection).
    A twin callback waits for the lock and then finds the set published."""
    with part_lock(work_dir(job) / "publish.lock") as held:
        es = EmbeddingSet.objects.filter(job=job).first()
        if es is None:
            if not held:
                raise RuntimeError(f"job {job.pk}: its embedding chunks are gone (the job ended)")
            es = _publish_set(job, p)
    return {"embedding_set": es.pk, "images": es.image_count, "dim": es.dim, "path": es.path,
            "chunks": chunk_count(p)}


def _publish_set(job: Job, p: dict) -> EmbeddingSet:
    n = chunk_count(p)
    dim = np.load(chunk_path(job, 0), mmap_mode="r").shape[1]
    blocks = ((chunk_inputs(job, i)["ids"], np.load(chunk_path(job, i), mmap_mode="r")) for i in range(n))
    params = {"embed": asdict(embed_config(p)), "chunks": n, **p.get("set_params", {})}
    add_regions = None
    if p.get("regional"):
        params["regional"] = p["regional"]

        def add_regions(folder: Path) -> None:  # into the set's folder before it is published
            join_regions(job, p, folder / REGIONS_FILE)

    out = Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"job-{job.pk}-{uuid.uuid4().hex[:8]}"
    write_embedding_blocks(out, blocks, dim, extra=add_regions)
    return EmbeddingSet.objects.create(
        model_version_id=p["model_version"], path=str(out), dim=dim, image_count=p["count"],
        scales=p["embed"]["scales"], image_filter=p.get("image_filter") or {"splits": job.params.get("splits") or "all"},
        params=params, job=job)


def join_regions(job: Job, p: dict, out: Path) -> None:
    """The chunks' regions as one (N, R, D) float16 file (R: the most regions of any chunk, zero-padded as
    within a chunk), copied chunk by chunk into a memory-mapped temp file and renamed into place."""
    parts = [np.load(regions_path(job, i), mmap_mode="r") for i in range(chunk_count(p))]
    shape = (sum(len(r) for r in parts), max(r.shape[1] for r in parts), parts[0].shape[2])
    write_npy(out, shape, np.float16, lambda joined: copy_rows(joined, parts))
