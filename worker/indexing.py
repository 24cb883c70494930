"""The build_index job: embed the searchable images with the pipeline's models, augment, index, extract
local features for verification, and publish a new active IndexVersion atomically."""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ml.embed import write_embedding_shards
from ml.pipeline import (
    DEFAULT_PIPELINE,
    embed_database,
    get_pipeline,
    load_models,
    prepare_database,
    with_models,
)
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion
from webapp.search.services import active_model_version, image_file_path, packaged_model_version
from worker.runner import JobContext, job_function

# The collection users search: every image but the evaluation queries and test photos.
DEFAULT_INDEX_SPLITS = [Image.Split.TRAIN, Image.Split.INDEX]


def index_pipeline(params: dict, mv: ModelVersion):
    """The preset named in ``params``, with a trained model's checkpoint in place of its packaged models."""
    pipeline = get_pipeline(params.get("pipeline") or DEFAULT_PIPELINE)
    return with_models(pipeline, mv.checkpoint) if mv.checkpoint else pipeline


def feature_dir() -> Path:
    return Path(settings.ARTIFACTS_ROOT) / "local-features"


@job_function(Job.Kind.BUILD_INDEX)
def run_build_index(job: Job, ctx: JobContext) -> dict:
    params = job.params
    mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
    pipeline = index_pipeline(params, mv)
    if not mv.checkpoint:  # untrained: the pipeline's own packaged models are what embeds
        mv = packaged_model_version("+".join(pipeline.models))
    images = list(Image.objects.filter(split__in=params.get("splits") or DEFAULT_INDEX_SPLITS)
                  .select_related("landmark").order_by("pk"))
    if not images:
        raise ValueError("no images to index (import a data set first, or check --splits)")
    ids = [im.external_id for im in images]
    paths = [image_file_path(im) for im in images]
    models = load_models(pipeline)
    total = len(images) * (len(models) + (1 if pipeline.uses_local_features else 0))
    vectors = embed_database(models, paths, pipeline, progress=lambda d, _t: ctx.progress(d, total, "embedding"))
    root = Path(settings.ARTIFACTS_ROOT)
    stamp = f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    emb_dir = write_embedding_shards(root / "embeddings" / stamp, ids, vectors)
    es = EmbeddingSet.objects.create(model_version=mv, path=str(emb_dir), dim=vectors.shape[1], image_count=len(ids),
                                     scales=list(pipeline.scales), job=job,
                                     image_filter={"splits": params.get("splits") or DEFAULT_INDEX_SPLITS},
                                     params={"models": list(pipeline.models), "image_size": pipeline.image_size})
    offset = len(images) * len(models)
    prepare_database(models, list(zip(ids, paths, strict=True)), pipeline, labels=None, feature_dir=feature_dir(),
                     index_dir=root / "indexes" / stamp, vectors=vectors,
                     progress=lambda d, _t: ctx.progress(offset + d, total, "local features"))
    iv = publish_index(es, pipeline, root / "indexes" / stamp, len(ids), job)
    return {"index_version": iv.pk, "embedding_set": es.pk, "images": len(ids), "pipeline": pipeline.name}


def publish_index(es: EmbeddingSet, pipeline, path: Path, size: int, job: Job | None) -> IndexVersion:
    """Record the index and make it the active one in one transaction: searches switch over atomically."""
    with transaction.atomic():
        IndexVersion.objects.filter(is_active=True).update(is_active=False)
        return IndexVersion.objects.create(
            embedding_set=es, kind={"exact": "flat"}.get(k := pipeline.index.resolved_kind(size), k),
            path=str(path), size=size, is_active=True, published_at=timezone.now(), job=job,
            params={"pipeline": pipeline.name, "models": list(pipeline.models), "feature_dir": str(feature_dir())})
