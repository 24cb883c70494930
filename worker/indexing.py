"""The build_index job: embed the searchable images with the pipeline's models (or take the vectors of an
EmbeddingSet), augment, extract local features for verification, then index in shards (worker/shards.py:
a Celery chord on the workers, one shard after another in the foreground) and publish a new active
IndexVersion atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from ml.atomic_files import write_bytes, write_rows
from ml.dense_matching import DenseCacheFill
from ml.embed import read_embedding_shards, write_embedding_shards
from ml.index import RECALL_QUERIES, IndexConfig
from ml.pipeline import (
    DEFAULT_PIPELINE,
    database_regions,
    dense_fill,
    embed_database,
    embedded_as,
    get_pipeline,
    load_models,
    with_models,
)
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.regional import load_regions, whole_image_vectors
from ml.rerank import database_augmentation
from ml.whitening import learn_whitening
from webapp.catalog.labels import labels_of
from webapp.catalog.models import Image, by_external_ids
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion
from webapp.search.services import (
    active_model_version,
    feature_dir,
    image_file_path,
    model_spec,
    packaged_model_version,
)
from worker import chunks, feature_chunks, shards
from worker.params import config_from
from worker.runner import TRANSIENT_ERRORS, JobContext, JobDeferred, job_function

# The collection users search: every image but the evaluation queries and test photos.
DEFAULT_INDEX_SPLITS = [Image.Split.TRAIN, Image.Split.INDEX]
WRITE_BATCH = 65_536  # rows converted to float32 at a time when the input vectors are written
REGIONS_DIGEST = "regions.sha256"  # sha256 of the ids the regions file was made for, one per line


def index_pipeline(params: dict, mv: ModelVersion):
    """The preset named in ``params``, with a trained model's checkpoint in place of its packaged models."""
    pipeline = get_pipeline(params.get("pipeline") or DEFAULT_PIPELINE)
    return with_models(pipeline, mv.checkpoint) if mv.checkpoint else pipeline


def embeddings_pipeline(params: dict, es: EmbeddingSet):
    """The preset named in ``params`` with the models and embedding settings ``es`` was made with, so queries
    are embedded the way its vectors were."""
    embed = es.params.get("embed", {})
    recorded = {
        "models": es.params.get("models") or [model_spec(es.model_version)],
        "image_size": es.params.get("image_size") or embed.get("image_size"),
        "scales": es.scales,
        "flip": es.params.get("flip", embed.get("flip", False)),
    }
    return embedded_as(get_pipeline(params.get("pipeline") or DEFAULT_PIPELINE), recorded)


@job_function(Job.Kind.BUILD_INDEX)
def run_build_index(job: Job, ctx: JobContext) -> dict:
    """Prepare once (the plan), then build the shards not on disk yet and publish. A resumed job (its
    worker died) skips what it finished: the plan, and every shard already built."""
    done = IndexVersion.objects.filter(job=job).first()
    if done is not None:  # published before the worker died, only the job row was not closed
        _discard(job)
        return shards.result_of(done)
    try:
        return _build(job, ctx)
    except (JobDeferred, *TRANSIENT_ERRORS):
        raise  # the shards are on the workers / the task retries and resumes
    except Exception:
        _discard(job)  # failed or cancelled: nothing will resume it (a retry is a new job)
        raise


def _discard(job: Job) -> None:
    """Drop the job's unpublished work: its embedding and feature chunks, and its index plan, vectors and shards."""
    shards.drop(chunks.work_dir(job))
    shards.drop(feature_chunks.work_dir(job))
    shards.discard(job)


def _build(job: Job, ctx: JobContext) -> dict:
    p = plan(job, ctx)
    pending = shards.pending_shards(job, p)
    count, n_shards = p["count"], len(shards.bounds(p))
    shards.report(job, p, f"indexing {count} vectors in {n_shards} shard(s)")
    shards.send_parts(job, pending, "worker.index_shard", "worker.finish_index", "cpu", "index shards")
    for i in pending:
        shards.build(job, p, i)
        ctx.progress(shards.report(job, p, f"indexed shard {i + 1} of {n_shards}"), count)
    ctx.progress(count, count, "publishing the index")
    result = shards.result_of(shards.publish(job, p))
    shards.discard(job)  # the plan and input vectors are not needed any more
    return result


def plan(job: Job, ctx: JobContext) -> dict:
    """The job's fixed plan: vectors to index (embedded and augmented), their ids, the index settings.

    Written once (vectors first, plan.json last, each by rename), so every resume and every shard task
    sees the same one."""
    written = shards.read_plan(job)
    if written is not None:
        return written
    shards.stale_plan(shards.work_dir(job))
    params = job.params
    es, ids, vectors, pipeline, paths = _embeddings(job, ctx)
    if pipeline.uses_local_features or pipeline.uses_dense:  # on the workers in chunks (JobDeferred) or here
        paths = paths or _paths_of(ids, pipeline)
        feature_chunks.cache_features(job, ctx, ids, paths, pipeline)
    if pipeline.regional.enabled:
        _regions(job, ctx, ids, paths, pipeline, es=es)
    vectors = _whiten(job, ids, vectors, pipeline)
    if pipeline.dba.k > 1:
        ctx.progress(0, None, "database-side augmentation")
        vectors = database_augmentation(vectors, pipeline.dba)
    write_rows(shards.vectors_path(job), vectors, np.float32, WRITE_BATCH)
    index_cfg = config_from(IndexConfig, {**asdict(pipeline.index), **(params.get("index") or {})})
    kind = index_cfg.resolved_kind(len(ids))  # on the whole count: every shard has the same kind
    data = {
        "stamp": f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}", "embedding_set": es.pk,
        "pipeline": pipeline.name, "models": list(pipeline.models), "image_size": pipeline.image_size,
        "scales": list(pipeline.scales), "flip": pipeline.flip, "feature_dir": str(feature_dir()), "kind": kind,
        "dense": pipeline.uses_dense,
        "index": asdict(replace(index_cfg, kind=kind)),
        "shard_size": int(params.get("shard_size") or settings.INDEX_SHARD_SIZE),
        "recall_queries": int(params.get("recall_queries") or RECALL_QUERIES),
    }
    return shards.write_plan(job, data, ids)


def _paths_of(ids: list[str], pipeline) -> list[str]:
    """The image files of embedded ``ids`` (an EmbeddingSet holds vectors, not paths), read in chunks of ids:
    one query for a million ids failed on SQLite ("too many SQL variables")."""
    found = {}
    for _, rows in by_external_ids(Image.objects.only("external_id", "file", "path"), ids):
        found.update((im.external_id, image_file_path(im)) for im in rows)
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"{len(missing)} embedded images are not in the catalogue (e.g. {missing[:3]}); "
                         f"pipeline {pipeline.name} needs their files for local features and regions")
    return [found[i] for i in ids]


def _regions(job: Job, ctx: JobContext, ids: list[str], paths: list[str] | None, pipeline, models=None,
             es: EmbeddingSet | None = None, dense: DenseCacheFill | None = None) -> np.ndarray:
    """Region descriptors of the images to index, in index order, in the index folder (they move with the
    shards into place), memory-mapped: those of the embedding set when it carries them for the pipeline's
    grid (a chunked ``embed --regions`` job made them on many workers), else made here. A file left by an
    earlier run of this job is kept when it was made for the same images in the same order (a digest of
    the ids, written after it, says so)."""
    out = shards.building_dir(job) / REGIONS_FILE
    digest_file = out.parent / REGIONS_DIGEST
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    existing = load_regions(out.parent)
    if existing is not None and digest_file.is_file() and digest_file.read_text() == digest:
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    ready = _set_regions(es, pipeline)
    if ready is not None:  # the set's ids are the ids indexed here, in the same order
        _link_atomic(ready, out)
        regions = load_regions(out.parent)
    else:
        regions = database_regions(models or load_models(pipeline), paths or _paths_of(ids, pipeline), pipeline,
                                   out, progress=lambda d, t: ctx.progress(d, t, "region descriptors"), dense=dense)
    write_bytes(digest_file, digest.encode())
    return regions


def _set_regions(es: EmbeddingSet | None, pipeline) -> Path | None:
    """The regions file an embedding set carries, when they were made on the pipeline's region grid."""
    if es is None:
        return None
    path = Path(es.path) / REGIONS_FILE
    return path if es.params.get("regional") == _grid(pipeline) and path.is_file() else None


def _grid(pipeline) -> dict:
    return {"levels": pipeline.regional.levels, "overlap": pipeline.regional.overlap}


def _link_atomic(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (a hard link, a copy across file systems), by rename."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _whiten(job: Job, ids: list[str], vectors: np.ndarray, pipeline) -> np.ndarray:
    """Whitening learned from the current labels, when the pipeline asks for it: applied to the vectors to
    index and saved in the index folder (it moves with the shards into place), so queries get it too."""
    if pipeline.whitening.method == "none":
        return vectors
    whitening = learn_whitening(vectors, labels_of(ids), pipeline.whitening)
    if whitening is None:
        return vectors
    shards.building_dir(job).mkdir(parents=True, exist_ok=True)
    whitening.save(shards.building_dir(job))
    return whitening.apply(vectors)


def _embeddings(job: Job, ctx: JobContext):
    """(EmbeddingSet, ids, vectors, pipeline, image paths or None): the set named in the params, the one
    this job made (before its worker died, or before its embedding chunks came back), or a new one."""
    params = job.params
    es_pk = params.get("embedding_set")
    es = (EmbeddingSet.objects.select_related("model_version").get(pk=es_pk) if es_pk
          else EmbeddingSet.objects.select_related("model_version").filter(job=job).first())
    if es is None:
        es = _embed_catalogue(job, ctx)  # may hand the chunks to the workers (JobDeferred)
    shards.drop(chunks.work_dir(job))  # the chunks are in the set (left when a worker died after publishing)
    ids, vectors = read_embedding_shards(es.path, lazy=True)  # streamed into the plan's vectors, not loaded
    return es, ids, vectors, embeddings_pipeline(params, es), None


def _embed_catalogue(job: Job, ctx: JobContext) -> EmbeddingSet:
    """Embed the images to index with the pipeline's model (and their regions, when it uses them) into an
    EmbeddingSet of this job: in chunks, as the embed job does, so the workers share them and a resumed
    job skips the chunks on disk; an ensemble in this process (a chunk holds one model)."""
    params = job.params
    p = chunks.read_plan(job)  # a resumed job keeps its plan (and does not list the catalogue again)
    if p is None:
        mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
        pipeline = index_pipeline(params, mv)
        if not mv.checkpoint:  # untrained: the pipeline's own packaged models are what embeds
            mv = packaged_model_version("+".join(pipeline.models))
        images = list(Image.objects.filter(split__in=params.get("splits") or DEFAULT_INDEX_SPLITS).order_by("pk"))
        if not images:
            raise ValueError("no images to index (import a data set first, or check --splits)")
        ids = [im.external_id for im in images]
        paths = [image_file_path(im) for im in images]
        set_params = {"models": list(pipeline.models), "image_size": pipeline.image_size, "flip": pipeline.flip}
        image_filter = {"splits": params.get("splits") or DEFAULT_INDEX_SPLITS}
        if len(pipeline.models) > 1:
            return _embed_here(job, ctx, mv, pipeline, ids, paths, set_params, image_filter)
        p = chunks.write_plan(job, {
            "model_version": mv.pk, "spec": pipeline.models[0], "ids": ids, "paths": paths,
            "embed": {"image_size": pipeline.image_size, "scales": list(pipeline.scales), "flip": pipeline.flip},
            "chunk": int(params.get("chunk_size") or chunks.DEFAULT_CHUNK),
            "regional": _grid(pipeline) if pipeline.regional.enabled else None,
            "dense": asdict(pipeline.dense) if pipeline.uses_dense else None,  # caught from the same passes
            "set_params": set_params, "image_filter": image_filter,
        })
    pending = chunks.pending_chunks(job, p)
    shards.send_parts(job, pending, "worker.embed_chunk", "worker.resume_job", "gpu", "embedding chunks",
                      callback_queue="cpu", callback_kwargs={"holder": job.worker})  # hands the job back
    for i in pending:
        lo = chunks.chunk_bounds(p, i)[0]  # per image within the chunk: a small collection is one chunk
        chunks.compute_chunk(job, p, i, progress=lambda d, _t, lo=lo: ctx.progress(lo + d, p["count"], "embedding"))
        chunks.report(job, p, f"embedding chunk {i + 1} of {chunks.chunk_count(p)}")
        ctx.progress(chunks.chunk_bounds(p, i)[1], p["count"])  # raises if cancelled
    chunks.publish(job, p)
    return EmbeddingSet.objects.select_related("model_version").filter(job=job).order_by("pk").first()


def _embed_here(job: Job, ctx: JobContext, mv: ModelVersion, pipeline, ids: list[str], paths: list[str],
                set_params: dict, image_filter: dict) -> EmbeddingSet:
    models = load_models(pipeline)
    dense = dense_fill(pipeline, feature_dir(), ids)  # the dense features from the same passes
    if pipeline.regional.enabled:  # region 0 is the whole image: one pass gives the vectors and the regions
        vectors = whole_image_vectors(_regions(job, ctx, ids, paths, pipeline, models, dense=dense))
    else:
        vectors = embed_database(models, paths, pipeline, progress=lambda d, t: ctx.progress(d, t, "embedding"),
                                 dense=dense)
    out = Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    emb_dir = write_embedding_shards(out, ids, vectors)
    if pipeline.regional.enabled:  # the set keeps them too: a later build from it does not make them again
        _link_atomic(shards.building_dir(job) / REGIONS_FILE, Path(emb_dir) / REGIONS_FILE)
        set_params = {**set_params, "regional": _grid(pipeline)}
    return EmbeddingSet.objects.create(model_version=mv, path=str(emb_dir), dim=vectors.shape[1], image_count=len(ids),
                                       scales=list(pipeline.scales), job=job, image_filter=image_filter,
                                       params=set_params)

