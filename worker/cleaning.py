"""The clean job: kNN graph + spatial verification evidence (cached), verdicts, noise clusters, stored as
a CleaningRun for review. Re-running with other thresholds reuses the cached evidence."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from ml.clean import (
    NOT_A_LANDMARK,
    CleaningEvidence,
    EvidenceConfig,
    EvidenceFolderError,
    Thresholds,
    build_evidence,
    cluster_suspects,
    decide,
    write_report_csv,
)
from ml.embed import EmbedConfig, embed_images, read_embedding_shards, write_embedding_shards
from ml.spatial import LocalFeatureStore
from ml.weights import load_model
from webapp.catalog.models import Image, Landmark
from webapp.curation.models import CleaningRun, NoiseCluster, Verdict
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet
from webapp.search.services import active_model_version, image_file_path, model_spec
from worker.indexing import feature_dir
from worker.params import config_from
from worker.runner import JobContext, job_function


@job_function(Job.Kind.CLEAN)
def run_clean(job: Job, ctx: JobContext) -> dict:
    params = job.params
    images = Image.objects.filter(landmark__isnull=False).select_related("landmark").order_by("pk")
    if params.get("splits"):
        images = images.filter(split__in=params["splits"])
    images = list(images)
    if len(images) < 2:
        raise ValueError("cleaning needs at least two labelled images")
    ids = [im.external_id for im in images]
    labels = [im.landmark.external_id for im in images]
    ctx.progress(0, None, "embeddings")
    es, vectors = _embeddings(images, job, ctx)
    evidence_cfg = config_from(EvidenceConfig, params.get("evidence", {}))
    verify = params.get("verify", True)
    store = _local_features(images, ctx) if verify else None
    folder = _evidence_folder(es, ids, evidence_cfg, verify)
    evidence = _cached_evidence(folder, ids)
    if evidence is None:
        evidence = build_evidence(vectors, ids, labels, evidence_cfg, local_features=store,
                                  progress=lambda d, t: ctx.progress(d, t, "kNN graph and verification"))
        evidence.save(folder)
    else:
        ctx.note(f"reused cached evidence {folder}")
    thresholds = config_from(Thresholds, params.get("thresholds", {}))
    verdicts = decide(evidence, labels, thresholds)
    clusters = cluster_suspects(verdicts, evidence, thresholds)
    run = _store(job, es, folder, params, verdicts, clusters, images)
    if params.get("report"):
        write_report_csv(verdicts, params["report"])
    return {"cleaning_run": run.pk, **run.stats}


def _embeddings(images: list[Image], job: Job, ctx: JobContext) -> tuple[EmbeddingSet, np.ndarray]:
    """Vectors for ``images`` from the active model: a stored set that covers them, or embedded now."""
    mv = active_model_version()
    wanted = [im.external_id for im in images]
    for es in EmbeddingSet.objects.filter(model_version=mv)[:5]:
        if not Path(es.path).is_dir():
            continue
        ids, vectors = read_embedding_shards(es.path)
        pos = {i: n for n, i in enumerate(ids)}
        if all(i in pos for i in wanted):
            return es, np.asarray(vectors[[pos[i] for i in wanted]], dtype=np.float32)
    model = load_model(model_spec(mv))
    vectors = embed_images(model, [image_file_path(im) for im in images], EmbedConfig(),
                           progress=lambda d, t: ctx.progress(d, t, f"embedding with {mv.name}"))
    out = write_embedding_shards(Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"clean-{job.pk}", wanted, vectors)
    es = EmbeddingSet.objects.create(model_version=mv, path=str(out), dim=vectors.shape[1], image_count=len(wanted),
                                     scales=[1.0], image_filter={"labelled": True}, job=job)
    return es, vectors


def _local_features(images: list[Image], ctx: JobContext) -> LocalFeatureStore:
    store = LocalFeatureStore(feature_dir())
    store.ensure([(im.external_id, image_file_path(im)) for im in images],
                 progress=lambda d, t: ctx.progress(d, t, "local features"))
    return store


def _evidence_folder(es: EmbeddingSet, ids: list[str], cfg: EvidenceConfig, verify: bool) -> Path:
    """One folder per (embeddings, images, evidence settings): the cache key of the expensive step."""
    key = hashlib.sha256(json.dumps([es.pk, ids, asdict(cfg), verify]).encode()).hexdigest()[:16]
    return Path(settings.ARTIFACTS_ROOT) / "cleaning" / key


def _cached_evidence(folder: Path, ids: list[str]) -> CleaningEvidence | None:
    try:
        evidence = CleaningEvidence.load(folder)
    except (EvidenceFolderError, FileNotFoundError):
        return None
    return evidence if evidence.ids == ids else None


def _store(job, es, folder, params, verdicts, clusters, images) -> CleaningRun:
    by_ext = {im.external_id: im for im in images}
    landmarks = {lm.external_id: lm for lm in Landmark.objects.all()}
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("keep", "suspect", "drop")}
    with transaction.atomic():
        run = CleaningRun.objects.create(embedding_set=es, params=params, evidence_path=str(folder), job=job,
                                         stats={**counts, "clusters": len(clusters)})
        Verdict.objects.bulk_create([
            Verdict(run=run, image=by_ext[v.id], verdict=v.verdict, label=landmarks.get(v.label),
                    suggested_landmark=landmarks.get(v.suggested_label) if v.suggested_label else None,
                    suggest_not_landmark=v.suggested_label == NOT_A_LANDMARK, score=v.score,
                    evidence={"reason": v.reason, "neighbours": [
                        {"id": n, "similarity": s, "inliers": (i if i >= 0 else None)}
                        for n, s, i in zip(v.neighbour_ids, v.similarities, v.inliers, strict=True)]})
            for v in verdicts], batch_size=500)
        for c in clusters:
            target = landmarks.get(c.target_label) if c.target_label not in (None, NOT_A_LANDMARK) else None
            cluster = NoiseCluster.objects.create(
                run=run, kind=c.kind, target_landmark=target, suggested_action=c.action[:200],
                confidence=c.confidence, benefit=c.expected_benefit, size=c.size)
            cluster.images.set([by_ext[i].pk for i in c.image_ids if i in by_ext])
    return run
