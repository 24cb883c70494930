"""The train job: fine-tune a backbone with a margin head on the labelled images; resumable from its checkpoints.
The model version records what it was derived from (``webapp.search.provenance``, its recipe) and, as its
parent, the model active when it started: the one it is meant to replace, whose figures it is compared with."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from django.conf import settings

from ml.data import TrainingManifest
from ml.models import ModelConfig
from ml.train import TrainConfig, step_checkpoints, train
from webapp.jobs.models import Job
from webapp.search.models import ModelVersion
from webapp.search.provenance import derived_from
from webapp.search.services import active_model_version, image_file_path
from worker.params import config_from, images_in
from worker.runner import JobContext, job_function


@job_function(Job.Kind.TRAIN)
def run_train(job: Job, ctx: JobContext) -> dict:
    params = job.params
    images = list(images_in(params).filter(landmark__isnull=False).select_related("landmark"))
    records = [{"image_id": im.external_id, "path": image_file_path(im), "landmark_id": im.landmark.external_id,
                "width": im.width, "height": im.height} for im in images]
    manifest = TrainingManifest.from_records(records, params.get("min_images_per_class", 1))
    if len(manifest) == 0:
        raise ValueError("no labelled images to train on (check --splits)")
    model_cfg = config_from(ModelConfig, params.get("model", {}))
    name = params.get("name") or f"{model_cfg.backbone}-{model_cfg.head}-{job.pk}"
    out_dir = Path(settings.ARTIFACTS_ROOT) / "models" / name
    train_cfg, resumed = _resumable(job, config_from(TrainConfig, params.get("train", {})), out_dir)
    earlier = ModelVersion.objects.filter(name=name, job=job).first()  # a resumed job keeps what it recorded
    parent = earlier.parent if earlier else active_model_version()
    provenance = earlier.params.get("provenance") if earlier else {
        **derived_from({im.dataset for im in images}, len(images)), "recipe": params.get("recipe") or "custom"}
    mv, _ = ModelVersion.objects.update_or_create(name=name, defaults={
        "backbone": model_cfg.backbone, "head": model_cfg.head or "", "embedding_dim": model_cfg.embedding_dim,
        "job": job, "parent": parent,
        "params": {"model": asdict(model_cfg), "train": asdict(train_cfg), "images": len(manifest),
                   "classes": manifest.num_classes, "finished": False, "provenance": provenance}})
    curve = CurveWriter(mv, upto=resumed)
    if resumed:
        ctx.note(f"resuming {name} from its checkpoint at step {resumed}")
        ctx.progress(resumed, None, f"resuming {name} from step {resumed}")
    else:
        ctx.progress(0, None, f"training {name} on {len(manifest)} images, {manifest.num_classes} landmarks")
    result = train(model_cfg, train_cfg, manifest, out_dir,
                   progress=lambda done, total: ctx.progress(done, total, "training"), on_metrics=curve.add)
    curve.finish(result.metrics)
    if not params.get("train", {}).get("checkpoint_every"):  # ours, only to resume: the final model is out
        shutil.rmtree(train_cfg.checkpoint_dir, ignore_errors=True)
    mv.checkpoint = str(result.checkpoint)
    mv.params = {**mv.params, "finished": True, "steps": result.steps}
    mv.save(update_fields=["checkpoint", "params"])
    last = result.metrics[-1] if result.metrics else {}
    return {"model_version": mv.pk, "checkpoint": str(result.checkpoint), "steps": result.steps,
            "final_loss": last.get("loss"), "final_accuracy": last.get("accuracy")}


def _resumable(job: Job, cfg: TrainConfig, out_dir: Path) -> tuple[TrainConfig, int]:
    """``cfg`` writing checkpoints to a folder of this job's own (every TRAIN_CHECKPOINT_EVERY steps unless it
    says how often; only the newest kept unless it asked for them), and, when an earlier run of this job
    left one there (its worker died and the watchdog sent it again), resuming from the newest: (cfg, the
    step resumed from, 0 for a fresh start). A job told where to keep checkpoints or what to resume from
    does as told."""
    if cfg.checkpoint_dir or cfg.resume_from:
        return cfg, 0
    folder = out_dir / "checkpoints" / f"job-{job.pk}-{job.created_at:%Y%m%dT%H%M%S%f}"
    cfg = replace(cfg, checkpoint_dir=str(folder),
                  checkpoint_every=cfg.checkpoint_every or settings.TRAIN_CHECKPOINT_EVERY,
                  keep_checkpoints=cfg.keep_checkpoints or (0 if cfg.checkpoint_every else 1))
    found = step_checkpoints(folder)
    if not found:
        return cfg, 0
    return replace(cfg, resume_from=str(found[-1])), int(found[-1].stem.removeprefix("step-"))


class CurveWriter:
    """Collects per-step metrics and writes them to the ModelVersion every few seconds (the page plots them).
    A resumed run keeps the rows written up to the step it resumes from (``upto``) and computes the rest
    again; at the end the whole curve is written from the run's own record (the rows its checkpoint held)."""

    def __init__(self, mv: ModelVersion, every: float = 3.0, upto: int = 0):
        self.mv, self.every, self.last = mv, every, 0.0
        self.rows: list[dict] = [r for r in mv.metrics.get("steps", []) if upto and r.get("step", 0) <= upto]

    def add(self, row: dict) -> None:
        self.rows.append(_numbers(row))
        if time.monotonic() - self.last > self.every:
            self.flush()

    def finish(self, rows: list[dict]) -> None:
        self.rows = [_numbers(row) for row in rows]
        self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        ModelVersion.objects.filter(pk=self.mv.pk).update(metrics={"steps": self.rows})


def _numbers(row: dict) -> dict:
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float)}
