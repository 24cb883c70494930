"""The clean job: kNN graph + spatial verification evidence (cached), verdicts, noise clusters, stored as
a CleaningRun for review. Re-running with other thresholds reuses the cached evidence.

Verification (the expensive part) runs in chunks (worker/clean_chunks.py): on the workers as a Celery chord
whose callback (``finish_job``) merges the chunks into the evidence and stores the run, in the foreground one
chunk after another. Either way a resumed job skips its plan and every chunk already on disk."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

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
from webapp.search.services import active_model_version, feature_dir, image_file_path, model_spec
from worker import clean_chunks
from worker.params import config_from
from worker.runner import TRANSIENT_ERRORS, JobContext, JobDeferred, job_function
from worker.shards import fail, send_parts

log = logging.getLogger(__name__)


@job_function(Job.Kind.CLEAN)
def run_clean(job: Job, ctx: JobContext) -> dict:
    done = CleaningRun.objects.filter(job=job).first()
    if done is not None:  # stored before the worker died, only the job row was not closed
        clean_chunks.discard(job)
        return result_of(done)
    try:
        return _clean(job, ctx)
    except (JobDeferred, *TRANSIENT_ERRORS):
        raise  # the chunks are on the workers / the task retries and resumes
    except Exception:
        clean_chunks.discard(job)  # failed or cancelled: nothing will resume it (a retry is a new job)
        raise


@dataclass
class _Inputs:
    """What a clean job works on, read when it starts: the labelled images, their vectors, the settings."""

    images: list[Image]
    ids: list[str]
    labels: list[str]
    pks: dict[str, int]
    es: EmbeddingSet
    vectors: np.ndarray
    config: EvidenceConfig
    verify: bool
    folder: Path  # the evidence cache folder


def _inputs(job: Job, ctx: JobContext) -> _Inputs:
    params = job.params
    images = Image.objects.filter(landmark__isnull=False).select_related("landmark").order_by("pk")
    if params.get("splits"):
        images = images.filter(split__in=params["splits"])
    images = list(images)
    if len(images) < 2:
        raise ValueError("cleaning needs at least two labelled images")
    ids = [im.external_id for im in images]
    ctx.progress(0, None, "embeddings")
    es, vectors = _embeddings(images, job, ctx)
    config = config_from(EvidenceConfig, params.get("evidence", {}))
    verify = params.get("verify", True)
    return _Inputs(images, ids, [im.landmark.external_id for im in images], {im.external_id: im.pk for im in images},
                   es, vectors, config, verify, _evidence_folder(es, ids, config, verify))


def plan(job: Job, ctx: JobContext, inputs: _Inputs | None = None) -> dict:
    """The job's verification plan (kNN graph, pairs, catalogue, evidence folder), made once with the
    local features it needs; a resumed job and every chunk task read the same one back."""
    p = clean_chunks.read_plan(job)
    if p is not None:
        return p
    inp = inputs or _inputs(job, ctx)
    _local_features(inp.images, ctx)
    return clean_chunks.write_plan(
        job, inp.vectors, inp.ids, inp.labels, [inp.pks[i] for i in inp.ids], inp.config,
        int(job.params.get("chunk_pairs") or settings.CLEAN_CHUNK_PAIRS),
        progress=lambda d, t: ctx.progress(d, t, "kNN graph"),
        embedding_set=inp.es.pk, folder=str(inp.folder), features=str(feature_dir()))


def _clean(job: Job, ctx: JobContext) -> dict:
    p = clean_chunks.read_plan(job)
    if p is None:
        inp = _inputs(job, ctx)
        evidence = _cached_evidence(inp.folder, inp.ids)
        if evidence is not None:
            ctx.note(f"reused cached evidence {inp.folder}")
            return conclude(job, inp.es, inp.folder, evidence, inp.labels, inp.pks)
        if not inp.verify:  # descriptors only: the graph is all there is to compute
            evidence = build_evidence(inp.vectors, inp.ids, inp.labels, inp.config,
                                      progress=lambda d, t: ctx.progress(d, t, "kNN graph"))
            evidence.save(inp.folder)
            return conclude(job, inp.es, inp.folder, evidence, inp.labels, inp.pks)
        p = plan(job, ctx, inp)
    pending = clean_chunks.pending_chunks(job, p)
    n_chunks = len(clean_chunks.bounds(p))
    if len(pending) < n_chunks:
        ctx.note(f"resumed: {n_chunks - len(pending)} of {n_chunks} verification chunks already on disk")
    clean_chunks.report(job, p, f"verifying {p['pairs']} pairs in {n_chunks} chunk(s)")
    ctx.flush()  # the notes so far, before the chunks may go to the workers
    send_parts(job, pending, "worker.clean_chunk", "worker.finish_clean", "cpu", "verification chunks")
    for i in pending:
        before = clean_chunks.report(job, p, f"verifying chunk {i + 1} of {n_chunks}")
        clean_chunks.compute_chunk(job, p, i, progress=lambda d, t, b=before: ctx.progress(b + d, p["pairs"]))
    ctx.progress(p["pairs"], p["pairs"], "deciding")
    result = _finish(job, p)
    clean_chunks.discard(job)
    return result


def finish_job(job_id: int) -> str:
    """The chord's callback: merge the chunks into the evidence, store the run and close the job
    (idempotent: a second call does nothing)."""
    job = Job.objects.get(pk=job_id)
    if job.state != Job.State.RUNNING:
        clean_chunks.discard(job)  # nothing resumes an ended job (a retry is a new job); a twin may have left files
        return job.state
    run = CleaningRun.objects.filter(job=job).first()
    if run is not None:
        result = result_of(run)
    else:
        p = clean_chunks.read_plan(job)
        missing = clean_chunks.pending_chunks(job, p) if p is not None else ["plan"]
        if missing:  # a chunk task died for good: leave the job running for the watchdog to resume
            return f"waiting for chunks {missing[:5]}"
        try:
            result = _finish(job, p)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            log.exception("job %s: finishing the clean failed", job_id)
            fail(job, exc, "merging the verification chunks")
            clean_chunks.discard(job)
            return Job.State.FAILED
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.SUCCEEDED, result=result, message="done", finished_at=timezone.now(),
        progress_done=F("progress_total"))
    clean_chunks.discard(job)  # after closing: a twin chunk task that finishes later drops what it wrote
    return Job.State.SUCCEEDED


def _finish(job: Job, p: dict) -> dict:
    """Evidence from the chunks (saved in its cache folder), then the verdicts; the caller discards the work
    folder."""
    evidence = clean_chunks.evidence(job, p)
    folder = Path(p["folder"])
    evidence.save(folder)
    es = EmbeddingSet.objects.get(pk=p["embedding_set"])
    listed = clean_chunks.catalogue(job)
    return conclude(job, es, folder, evidence, listed["labels"], dict(zip(listed["ids"], listed["pks"], strict=True)))


def conclude(job: Job, es: EmbeddingSet, folder: Path, evidence: CleaningEvidence, labels: list[str],
             pks: dict[str, int]) -> dict:
    """What follows the evidence: verdicts under the job's thresholds, clusters, the stored run, the report."""
    params = job.params
    thresholds = config_from(Thresholds, params.get("thresholds", {}))
    verdicts = decide(evidence, labels, thresholds)
    clusters = cluster_suspects(verdicts, evidence, thresholds)
    run = _store(job, es, folder, params, verdicts, clusters, pks)
    if params.get("report"):
        write_report_csv(verdicts, params["report"])
    return result_of(run)


def result_of(run: CleaningRun) -> dict:
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
    # The vectors as stored (float16): a later run that reads the set back builds the very same kNN graph.
    return es, np.asarray(vectors, dtype=np.float16).astype(np.float32)


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


def _store(job, es, folder, params, verdicts, clusters, pks: dict[str, int]) -> CleaningRun:
    """The run with its verdicts and clusters, once per job (a twin chord callback finds it stored)."""
    alive = _existing(pks.values())  # an image deleted since the job started gets no verdict
    pks = {i: pk for i, pk in pks.items() if pk in alive}
    verdicts = [v for v in verdicts if v.id in pks]
    landmarks = {lm.external_id: lm for lm in Landmark.objects.all()}
    counts = {k: sum(v.verdict == k for v in verdicts) for k in ("keep", "suspect", "drop")}
    with transaction.atomic():
        Job.objects.select_for_update().filter(pk=job.pk).first()  # one writer per job at a time
        run = CleaningRun.objects.filter(job=job).first()
        if run is not None:
            return run
        run = CleaningRun.objects.create(embedding_set=es, params=params, evidence_path=str(folder), job=job,
                                         stats={**counts, "clusters": len(clusters)})
        Verdict.objects.bulk_create([
            Verdict(run=run, image_id=pks[v.id], verdict=v.verdict, label=landmarks.get(v.label),
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
            cluster.images.set([pks[i] for i in c.image_ids if i in pks])
    return run


def _existing(pks, batch: int = 5000) -> set[int]:
    """The image primary keys among ``pks`` that still exist (in batches: a query has a parameter limit)."""
    pks = list(pks)
    found: set[int] = set()
    for start in range(0, len(pks), batch):
        found.update(Image.objects.filter(pk__in=pks[start:start + batch]).values_list("pk", flat=True))
    return found
