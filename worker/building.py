"""The build_index job: the product's index build (``ml.stages.index_build``: embed -> local features ->
regions -> whitening and DBA -> index shards), with the rows it makes recorded as stages of their own
(the embedding set after embedding, the active index version last). Its settings are resolved once, when
the job starts (the preset, or a whole ``config``; the model; the images; what it is derived from and the
index it replaces, its parent), and written into its work folder with the images: every resume and every
part reads them back, and the index version records them whole."""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from ml.embed import read_embedding_shards
from ml.index import RECALL_QUERIES, IndexConfig
from ml.pipeline import DEFAULT_PIPELINE, PipelineConfig, embedded_as, get_pipeline, with_models
from ml.stages.index_build import DEFAULT_CHUNK, BuildSpec, build_record, index_stages
from webapp.catalog.labels import labels_of
from webapp.catalog.models import Image, by_external_ids
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion
from webapp.search.provenance import datasets_of, derived_from
from webapp.search.services import (
    active_model_version,
    feature_dir,
    image_file_path,
    model_spec,
    packaged_model_version,
)
from worker.params import config_from
from worker.records import PublishIndex, RecordEmbeddingSet
from worker.runner import JobContext, job_function
from worker.stages import StagedJob, embed_runtime, run_staged, stages_of, work_of

# The collection users search: every image but the evaluation queries and test photos.
DEFAULT_INDEX_SPLITS = [Image.Split.TRAIN, Image.Split.INDEX]


@job_function(Job.Kind.BUILD_INDEX)
def run_build_index(job: Job, ctx: JobContext) -> dict:
    done = IndexVersion.objects.filter(job=job).first()
    if done is not None:  # published before the worker died, only the job row was not closed
        work_of(job).drop()
        return result_of(done)
    staged = open_build(job, create=True)
    return run_staged(job, ctx, staged, lambda outputs: result_of(
        IndexVersion.objects.get(pk=outputs[PublishIndex.name]["index_version"])))


@stages_of(Job.Kind.BUILD_INDEX)
def open_build(job: Job, create: bool = False) -> StagedJob | None:
    """The job's stages, from the settings in its work folder (written first, with ``create``)."""
    work = work_of(job)
    spec = work.spec()
    if spec is None:
        if not create:
            return None
        spec = plan_build(job)
    build = BuildSpec.from_dict(spec["build"])
    stages = index_stages(work, build, labels_of, embed_runtime())
    if build.embed:
        stages.insert(1, RecordEmbeddingSet(job, work, build.pipeline, spec["model_version"], spec["image_filter"]))
    record = {"pipeline": spec["preset"], **build_record(build), "provenance": spec.get("provenance", {})}
    stages.append(PublishIndex(job, work, record, spec["embedding_set"], spec.get("parent")))
    return StagedJob(work, stages)


def plan_build(job: Job) -> dict:
    """Resolve the job's settings and write them with its images (ids and files, in index order)."""
    params = job.params
    base = PipelineConfig.from_dict(params["config"]) if params.get("config") else \
        get_pipeline(params.get("pipeline") or DEFAULT_PIPELINE)
    es = EmbeddingSet.objects.select_related("model_version").get(pk=params["embedding_set"]) \
        if params.get("embedding_set") else None
    if es is not None:  # the set's vectors, its ids in its order; queries are embedded the way it was
        pipeline, mv = set_pipeline(base, es), es.model_version
        ids = read_embedding_shards(es.path, lazy=True)[0]
        needs_files = pipeline.uses_local_features or pipeline.uses_dense or pipeline.regional.enabled
        paths = _paths_of(ids, pipeline) if needs_files else [""] * len(ids)
        datasets = datasets_of(ids)
    else:
        mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
        pipeline = with_models(base, mv.checkpoint) if mv.checkpoint else base
        if not mv.checkpoint:  # untrained: the pipeline's own packaged models are what embeds
            mv = packaged_model_version("+".join(pipeline.models))
        images = list(Image.objects.filter(split__in=params.get("splits") or DEFAULT_INDEX_SPLITS)
                      .order_by("pk").only("pk", "external_id", "file", "path", "dataset"))
        if not images:
            raise ValueError("no images to index (import a data set first, or check --splits)")
        ids, paths = [im.external_id for im in images], [image_file_path(im) for im in images]
        datasets = {im.dataset for im in images}
    if params.get("index"):
        pipeline = replace(pipeline, index=config_from(IndexConfig, {**asdict(pipeline.index), **params["index"]}))
    stamp = f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    root = Path(settings.ARTIFACTS_ROOT)
    build = BuildSpec(
        pipeline, str(feature_dir()), es.path if es else str(root / "embeddings" / f"job-{job.pk}-{stamp}"),
        str(root / "indexes" / stamp), embed=es is None, set_grid=es.params.get("regional") if es else None,
        chunk_size=int(params.get("chunk_size") or DEFAULT_CHUNK),
        shard_size=int(params.get("shard_size") or settings.INDEX_SHARD_SIZE),
        recall_queries=int(params.get("recall_queries") or RECALL_QUERIES))
    spec = {"build": build.as_dict(), "preset": base.name, "model_version": mv.pk,
            "embedding_set": es.pk if es else None,
            "image_filter": {"splits": params.get("splits") or DEFAULT_INDEX_SPLITS},
            "provenance": derived_from(datasets, len(ids)),  # the labels its whitening and label steps read
            "parent": IndexVersion.objects.filter(is_active=True).values_list("pk", flat=True).first()}
    return work_of(job).create(spec, ids, paths)


def set_pipeline(base: PipelineConfig, es: EmbeddingSet) -> PipelineConfig:
    """``base`` with the models and embedding settings ``es`` was made with, so queries are embedded the
    way its vectors were."""
    embed = es.params.get("embed", {})
    return embedded_as(base, {
        "models": es.params.get("models") or [model_spec(es.model_version)],
        "image_size": es.params.get("image_size") or embed.get("image_size"),
        "scales": es.scales,
        "flip": es.params.get("flip", embed.get("flip", False)),
    })


def _paths_of(ids: list[str], pipeline: PipelineConfig) -> list[str]:
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


def result_of(iv: IndexVersion) -> dict:
    return {"index_version": iv.pk, "embedding_set": iv.embedding_set_id, "images": iv.size,
            "pipeline": iv.params.get("pipeline"), "shards": iv.params.get("shards"), "kind": iv.kind,
            "recall_at_100": iv.recall}
