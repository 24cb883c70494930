"""Job functions for the landmark engine: train a model, embed images."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from django.conf import settings

from ml.data import TrainingManifest
from ml.embed import EmbedConfig, embed_images, write_embedding_shards
from ml.models import ModelConfig
from ml.train import TrainConfig, train
from ml.weights import load_model
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, ModelVersion
from webapp.search.services import active_model_version, image_file_path, model_spec
from worker.runner import JobContext, job_function


def _dataclass_from(cls, params: dict):
    """A config dataclass from the job's params, taking only the fields it has."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names and v is not None})


def _images(params: dict):
    images = Image.objects.order_by("pk")
    if params.get("splits"):
        images = images.filter(split__in=params["splits"])
    return images


@job_function(Job.Kind.TRAIN)
def run_train(job: Job, ctx: JobContext) -> dict:
    params = job.params
    records = [{"image_id": im.external_id, "path": image_file_path(im), "landmark_id": im.landmark.external_id,
                "width": im.width, "height": im.height}
               for im in _images(params).filter(landmark__isnull=False).select_related("landmark")]
    manifest = TrainingManifest.from_records(records, params.get("min_images_per_class", 1))
    if len(manifest) == 0:
        raise ValueError("no labelled images to train on (check --splits)")
    model_cfg = _dataclass_from(ModelConfig, params.get("model", {}))
    train_cfg = _dataclass_from(TrainConfig, params.get("train", {}))
    name = params.get("name") or f"{model_cfg.backbone}-{model_cfg.head}-{job.pk}"
    out_dir = Path(settings.ARTIFACTS_ROOT) / "models" / name
    mv, _ = ModelVersion.objects.update_or_create(name=name, defaults={
        "backbone": model_cfg.backbone, "head": model_cfg.head or "", "embedding_dim": model_cfg.embedding_dim,
        "job": job, "params": {"model": asdict(model_cfg), "train": asdict(train_cfg), "images": len(manifest),
                               "classes": manifest.num_classes, "finished": False}})
    curve = CurveWriter(mv)
    ctx.progress(0, None, f"training {name} on {len(manifest)} images, {manifest.num_classes} landmarks")
    result = train(model_cfg, train_cfg, manifest, out_dir,
                   progress=lambda done, total: ctx.progress(done, total, "training"), on_metrics=curve.add)
    curve.flush()
    mv.checkpoint = str(result.checkpoint)
    mv.params = {**mv.params, "finished": True, "steps": result.steps}
    mv.save(update_fields=["checkpoint", "params"])
    last = result.metrics[-1] if result.metrics else {}
    return {"model_version": mv.pk, "checkpoint": str(result.checkpoint), "steps": result.steps,
            "final_loss": last.get("loss"), "final_accuracy": last.get("accuracy")}


class CurveWriter:
    """Collects per-step metrics and writes them to the ModelVersion every few seconds (the page plots them)."""

    def __init__(self, mv: ModelVersion, every: float = 3.0):
        self.mv, self.every, self.last = mv, every, 0.0
        self.rows: list[dict] = list(mv.metrics.get("steps", []))

    def add(self, row: dict) -> None:
        self.rows.append({k: float(v) for k, v in row.items() if isinstance(v, int | float)})
        if time.monotonic() - self.last > self.every:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        ModelVersion.objects.filter(pk=self.mv.pk).update(metrics={"steps": self.rows})


@job_function(Job.Kind.EMBED)
def run_embed(job: Job, ctx: JobContext) -> dict:
    params = job.params
    mv = ModelVersion.objects.get(pk=params["model_version"]) if params.get("model_version") else active_model_version()
    cfg = _dataclass_from(EmbedConfig, {**params.get("embed", {}),
                                        "scales": tuple(params.get("embed", {}).get("scales", (1.0,)))})
    images = list(_images(params).only("pk", "external_id", "file", "path"))
    if not images:
        raise ValueError("no images to embed")
    ctx.progress(0, len(images), f"loading model {mv.name}")
    model = load_model(model_spec(mv))
    vectors = embed_images(model, [image_file_path(im) for im in images], cfg,
                           progress=lambda done, total: ctx.progress(done, total, f"embedding with {mv.name}"))
    out = Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"{mv.pk}-{uuid.uuid4().hex[:12]}"
    write_embedding_shards(out, [im.external_id for im in images], vectors)
    es = EmbeddingSet.objects.create(
        model_version=mv, path=str(out), dim=vectors.shape[1], image_count=len(images), scales=list(cfg.scales),
        image_filter={"splits": params.get("splits") or "all"}, params={"embed": asdict(cfg)}, job=job)
    return {"embedding_set": es.pk, "images": len(images), "dim": int(vectors.shape[1]), "path": str(out)}
