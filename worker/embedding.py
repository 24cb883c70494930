"""The embed job: images embedded with a model into an EmbeddingSet, by the build's own embedding stage (in
chunks shared by the workers, resumable), then recorded. With ``regional`` levels the set also keeps the
region descriptors the default pipeline re-scores with, from the same forward passes, so a later
``build_index --embedding-set`` takes them instead of making them again."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings

from ml.pipeline import PipelineConfig
from ml.regional import RegionalConfig
from ml.stages.embed import EmbedStage
from ml.stages.index_build import DEFAULT_CHUNK
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, ModelVersion
from webapp.search.services import active_model_version, image_file_path, model_spec
from worker.params import config_from, images_in
from worker.records import RecordEmbeddingSet
from worker.runner import JobContext, job_function
from worker.stages import StagedJob, embed_runtime, run_staged, stages_of, work_of

RUNTIME = ("batch_size", "num_workers")  # embed settings of how to compute, not of what


@job_function(Job.Kind.EMBED)
def run_embed(job: Job, ctx: JobContext) -> dict:
    done = EmbeddingSet.objects.filter(job=job).first()
    if done is not None:  # recorded before the worker died, only the job row was not closed
        work_of(job).drop()
        return result_of(done)
    staged = open_embed(job, create=True)
    return run_staged(job, ctx, staged, lambda outputs: result_of(
        EmbeddingSet.objects.get(pk=outputs[RecordEmbeddingSet.name]["embedding_set"])))


@stages_of(Job.Kind.EMBED)
def open_embed(job: Job, create: bool = False) -> StagedJob | None:
    work = work_of(job)
    spec = work.spec()
    if spec is None:
        if not create:
            return None
        spec = plan_embed(job)
    pipeline = PipelineConfig.from_dict(spec["pipeline"])
    runtime = {**embed_runtime(), **spec["runtime"]}
    return StagedJob(work, [
        EmbedStage(work, pipeline, spec["out"], None, spec["chunk_size"], runtime),
        RecordEmbeddingSet(job, work, pipeline, spec["model_version"], spec["image_filter"]),
    ])


def plan_embed(job: Job) -> dict:
    """The job's settings and images, written once (a resumed job keeps them)."""
    params = job.params
    mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
    images = list(images_in(params).only("pk", "external_id", "file", "path"))
    if not images:
        raise ValueError("no images to embed")
    embed = params.get("embed", {})
    pipeline = PipelineConfig(
        name="embed", models=(model_spec(mv),), image_size=int(embed.get("image_size") or 512),
        scales=tuple(embed.get("scales") or (1.0,)), flip=bool(embed.get("flip", False)),
        regional=config_from(RegionalConfig, params.get("regional") or {}))
    out = Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"job-{job.pk}-{uuid.uuid4().hex[:8]}"
    spec = {"pipeline": pipeline.as_dict(), "out": str(out), "model_version": mv.pk,
            "chunk_size": int(params.get("chunk_size") or DEFAULT_CHUNK),
            "runtime": {k: embed[k] for k in RUNTIME if embed.get(k) is not None},
            "image_filter": {"splits": params.get("splits") or "all"}}
    return work_of(job).create(spec, [im.external_id for im in images], [image_file_path(im) for im in images])


def result_of(es: EmbeddingSet) -> dict:
    return {"embedding_set": es.pk, "images": es.image_count, "dim": es.dim, "path": es.path,
            "chunks": es.params.get("chunks")}
