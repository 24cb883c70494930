"""The clean job: kNN graph + spatial verification evidence (cached), verdicts, noise clusters, stored as
a CleaningRun for review. Re-running with other thresholds reuses the cached evidence.

The evidence is made by stages (``worker.stages``): the labelled images embedded when no embedding set of
the active model covers them (and that set recorded), their RootSIFT features cached, and their kNN pairs
verified in chunks (``ml.stages.verify``) on the workers, or in turn in the foreground. Either way a
resumed job skips every part already done."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.db import transaction

from ml.clean import (
    NOT_A_LANDMARK,
    CleaningEvidence,
    EvidenceConfig,
    EvidenceFolderError,
    Thresholds,
    cluster_suspects,
    decide,
    write_report_csv,
)
from ml.embed import read_embedding_shards
from ml.pipeline import PipelineConfig
from ml.spatial import LocalFeatureConfig
from ml.stages.embed import EmbedStage
from ml.stages.features import LocalFeatureStage
from ml.stages.index_build import DEFAULT_CHUNK
from ml.stages.verify import VerifyStage
from ml.weights import PACKAGED_PREFIX
from webapp.catalog.models import Image, Landmark
from webapp.curation.models import CleaningRun, Verdict
from webapp.curation.reruns import update_queue
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet
from webapp.search.services import Embedder, cleaning_embedder, feature_dir, image_file_path
from worker.params import config_from
from worker.records import RecordEmbeddingSet
from worker.runner import JobContext, job_function
from worker.stages import StagedJob, embed_runtime, run_staged, stages_of, work_of

log = logging.getLogger(__name__)


@job_function(Job.Kind.CLEAN)
def run_clean(job: Job, ctx: JobContext) -> dict:
    done = CleaningRun.objects.filter(job=job).first()
    if done is not None:  # stored before the worker died, only the job row was not closed
        work_of(job).drop()
        return result_of(done)
    staged = open_clean(job, create=True)
    spec, work = staged.work.spec(), staged.work
    evidence = _cached_evidence(Path(spec["evidence_dir"]), work.ids())
    if evidence is not None:
        ctx.note(f"reused cached evidence {spec['evidence_dir']}")
        result = conclude(job, spec["embedding_set"], Path(spec["evidence_dir"]), evidence, spec, *_listed(work))
        work.drop()
        return result
    return run_staged(job, ctx, staged, lambda outputs: _finish(job, staged, outputs))


@stages_of(Job.Kind.CLEAN)
def open_clean(job: Job, create: bool = False) -> StagedJob | None:
    work = work_of(job)
    spec = work.spec()
    if spec is None:
        if not create:
            return None
        spec = plan_clean(job)
    stages = []
    if spec["embed"] is not None:  # no set of the active model covers the images: embed them first
        pipeline = PipelineConfig.from_dict(spec["embed"])
        stages += [EmbedStage(work, pipeline, spec["embeddings"], None, DEFAULT_CHUNK, embed_runtime()),
                   RecordEmbeddingSet(job, work, pipeline, spec["model_version"], {"labelled": True})]
    if spec["verify"]:
        stages.append(LocalFeatureStage(work, spec["feature_dir"], LocalFeatureConfig(), None, DEFAULT_CHUNK))
    stages.append(VerifyStage(work, spec["embeddings"], EvidenceConfig(**spec["evidence"]), spec["verify"],
                              spec["feature_dir"], spec["evidence_dir"], spec["chunk_pairs"]))
    return StagedJob(work, stages)


def plan_clean(job: Job) -> dict:
    """The job's settings and its labelled images (with their labels), written once."""
    params = job.params
    images = Image.objects.filter(landmark__isnull=False).select_related("landmark").order_by("pk")
    if params.get("splits"):
        images = images.filter(split__in=params["splits"])
    images = list(images)
    if len(images) < 2:
        raise ValueError("cleaning needs at least two labelled images")
    ids = [im.external_id for im in images]
    embedder = cleaning_embedder()  # the models search uses, as the serving index recorded them
    es = _covering_set(embedder, ids)
    embeddings = es.path if es else str(Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"clean-{job.pk}-{uuid.uuid4().hex[:8]}")
    config = config_from(EvidenceConfig, params.get("evidence", {}))
    verify = params.get("verify", True)
    chunk_pairs = int(params.get("chunk_pairs") or settings.CLEAN_CHUNK_PAIRS)
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be at least 1, got {chunk_pairs}")
    spec = {"embeddings": embeddings, "embedding_set": es.pk if es else None,
            "model_version": embedder.model_version.pk, "embed": None if es else embedder.pipeline.as_dict(),
            "evidence": asdict(config), "verify": verify, "feature_dir": str(feature_dir()),
            "evidence_dir": str(_evidence_folder(embeddings, ids, config, verify)), "chunk_pairs": chunk_pairs,
            "thresholds": params.get("thresholds", {}), "report": params.get("report")}
    return work_of(job).create(spec, ids, [image_file_path(im) for im in images],
                               {"labels": [im.landmark.external_id for im in images],
                                "pks": [str(im.pk) for im in images]})


def _covering_set(embedder: Embedder, ids: list[str]) -> EmbeddingSet | None:
    """A stored embedding set made the way ``embedder`` embeds, holding every one of ``ids``: the serving
    index's, else the newest such set of its model among the last five."""
    wanted = set(ids)
    candidates = [embedder.index_set] if embedder.index_set is not None else []
    candidates += list(EmbeddingSet.objects.filter(model_version=embedder.model_version)[:5])
    for es in candidates:
        if made_by(es, embedder.pipeline) and Path(es.path).is_dir() \
                and wanted <= set(read_embedding_shards(es.path, lazy=True)[0]):
            return es
    return None


def made_by(es: EmbeddingSet, pipeline: PipelineConfig) -> bool:
    """Whether ``es`` holds vectors embedded the way ``pipeline`` embeds (a set that records no settings
    was made at 512 px, one scale, not mirrored)."""
    embed = es.params.get("embed") or {}
    made = (_specs(es.params.get("models") or pipeline.models), int(embed.get("image_size") or 512),
            tuple(float(x) for x in (embed.get("scales") or es.scales or [1.0])), bool(embed.get("flip", False)))
    return made == (_specs(pipeline.models), pipeline.image_size, tuple(float(x) for x in pipeline.scales), pipeline.flip)


def _specs(models) -> tuple[str, ...]:
    return tuple(m.removeprefix(PACKAGED_PREFIX) for m in models)  # "packaged:x" and "x" load the same


def _finish(job: Job, staged: StagedJob, outputs: dict[str, dict]) -> dict:
    """Decide on the evidence the verify stage saved; store the run."""
    spec = staged.work.spec()
    es = spec["embedding_set"] or outputs[RecordEmbeddingSet.name]["embedding_set"]
    folder = Path(outputs[VerifyStage.name]["evidence"])
    return conclude(job, es, folder, CleaningEvidence.load(folder), spec, *_listed(staged.work))


def _listed(work) -> tuple[list[str], dict[str, int]]:
    """The labels and image keys of the job's images, as it listed them when it started."""
    return work.column("labels"), dict(zip(work.ids(), map(int, work.column("pks")), strict=True))


def conclude(job: Job, embedding_set: int, folder: Path, evidence: CleaningEvidence, spec: dict,
             labels: list[str], pks: dict[str, int]) -> dict:
    """What follows the evidence: verdicts under the job's thresholds, clusters, the stored run, the report.
    ``labels`` and ``pks`` by image, as the job listed them."""
    thresholds = config_from(Thresholds, spec.get("thresholds") or {})
    verdicts = decide(evidence, labels, thresholds)
    clusters = cluster_suspects(verdicts, evidence, thresholds)
    run = _store(job, embedding_set, folder, job.params, verdicts, clusters, pks, thresholds.verify_thresh)
    if spec.get("report"):
        write_report_csv(verdicts, spec["report"])
    return result_of(run)


def result_of(run: CleaningRun) -> dict:
    return {"cleaning_run": run.pk, **run.stats}


def _evidence_folder(embeddings: str, ids: list[str], cfg: EvidenceConfig, verify: bool) -> Path:
    """One folder per (embedding set, images, evidence settings): the cache key of the expensive step."""
    key = hashlib.sha256(json.dumps([embeddings, ids, asdict(cfg), verify]).encode()).hexdigest()[:16]
    return Path(settings.ARTIFACTS_ROOT) / "cleaning" / key


def _cached_evidence(folder: Path, ids: list[str]) -> CleaningEvidence | None:
    try:
        evidence = CleaningEvidence.load(folder)
    except (EvidenceFolderError, FileNotFoundError):
        return None
    return evidence if evidence.ids == ids else None


def _store(job, es: int, folder, params, verdicts, clusters, pks: dict[str, int], verify_thresh: int) -> CleaningRun:
    """The run with its verdicts, its clusters put in the review queue (``webapp.curation.reruns``), once per
    job (a twin chord callback finds it stored)."""
    alive = _existing(pks.values())  # an image deleted since the job started gets no verdict
    pks = {i: pk for i, pk in pks.items() if pk in alive}
    verdicts = [v for v in verdicts if v.id in pks]
    landmarks = {lm.external_id: lm for lm in Landmark.objects.all()}
    label_of = {v.id: v.label for v in verdicts}
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("keep", "suspect", "drop")}
    with transaction.atomic():
        Job.objects.select_for_update().filter(pk=job.pk).first()  # one writer per job at a time
        run = CleaningRun.objects.filter(job=job).first()
        if run is not None:
            return run
        CleaningRun.objects.select_for_update().order_by("-pk").first()  # runs update the queue one at a time
        run = CleaningRun.objects.create(embedding_set_id=es, params=params, evidence_path=str(folder), job=job,
                                         stats={**counts, "clusters": len(clusters)})
        Verdict.objects.bulk_create([_verdict_row(run, v, pks, landmarks, label_of) for v in verdicts], batch_size=500)
        run.queue = update_queue(run, clusters, pks, landmarks, verify_thresh)
        run.save(update_fields=["queue"])
    return run


def _verdict_row(run: CleaningRun, v, pks: dict[str, int], landmarks: dict, label_of: dict[str, str]) -> Verdict:
    """A verdict as a row; each neighbour with its label then, so a later run can tell new evidence."""
    return Verdict(run=run, image_id=pks[v.id], verdict=v.verdict, label=landmarks.get(v.label),
                   suggested_landmark=landmarks.get(v.suggested_label) if v.suggested_label else None,
                   suggest_not_landmark=v.suggested_label == NOT_A_LANDMARK, score=v.score,
                   evidence={"reason": v.reason, "neighbours": [
                       {"id": n, "label": label_of.get(n), "similarity": s, "inliers": (i if i >= 0 else None)}
                       for n, s, i in zip(v.neighbour_ids, v.similarities, v.inliers, strict=True)]})


def _existing(pks, batch: int = 5000) -> set[int]:
    """The image primary keys among ``pks`` that still exist (in batches: a query has a parameter limit)."""
    pks = list(pks)
    found: set[int] = set()
    for start in range(0, len(pks), batch):
        found.update(Image.objects.filter(pk__in=pks[start:start + batch]).values_list("pk", flat=True))
    return found
