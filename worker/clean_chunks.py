"""Spatial verification of a clean job in chunks: the kNN pairs to verify (``ml.clean.pairs_to_verify``) are
cut into chunks of CLEAN_CHUNK_PAIRS pairs, each chunk is verified by its own task (a Celery chord on the
workers, one after another in the foreground) and its inlier counts are written to a temp file and
published by rename, so a chunk already on disk is never verified again and a job whose worker died resumes
where it stopped. Merged, the chunks give the evidence ``build_evidence`` gives (``assemble_evidence``).

Files of job J (created at T)::

    ARTIFACTS_ROOT/work/clean-J-T/neighbours.npy      the kNN graph (int64 positions), written once
                                  similarities.npy    its cosine similarities (float32), written once
                                  pairs.npy           (P, 2) position pairs to verify, sorted, written once
                                  catalogue.json      ids, labels, image pks (by position), written once
                                  inputs-NNNNNN.json  one chunk's pairs as ids: all a chunk task reads
                                  plan.json           settings, counts, evidence folder; written last
                                  chunk-NNNNNN.lock   held by the task verifying that chunk
                                  chunk-NNNNNN.npy    int32 inliers of one chunk's pairs

A job sent again while its chunk tasks are still queued or running is safe and cheap, as for index shards
(worker/shards.py): a chunk on disk or being verified by a twin task is not verified again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.utils import timezone

from ml.atomic_files import npy_bytes, write_bytes
from ml.clean import (
    CleaningEvidence,
    EvidenceConfig,
    assemble_evidence,
    knn_graph,
    pairs_to_verify,
    verify_pairs,
)
from ml.index import shard_bounds
from ml.spatial import LocalFeatureStore
from webapp.jobs.models import Job
from worker.chunks import job_work_dir
from worker.shards import PLAN, drop, heartbeat, part_lock, read_json_or_none, run_part, stale_plan

log = logging.getLogger(__name__)
GRAPH_FILES = ("neighbours", "similarities", "pairs")
CATALOGUE = "catalogue.json"


def work_dir(job: Job) -> Path:
    return job_work_dir(job, "clean")


def plan_path(job: Job) -> Path:
    return work_dir(job) / PLAN


def read_plan(job: Job) -> dict | None:
    """The job's plan, or None when none was written (or it was discarded)."""
    return read_json_or_none(plan_path(job))


def write_plan(job: Job, vectors: np.ndarray, ids: list[str], labels: list[str], pks: list[int],
               config: EvidenceConfig, chunk: int, progress=None, **extra) -> dict:
    """The kNN graph and the pairs to verify, computed once: arrays and lists first, plan.json last, each by
    rename, so every resume and every chunk task sees the same plan. ``extra`` (JSON) is kept in the plan."""
    if chunk < 1:
        raise ValueError(f"chunk_pairs must be at least 1, got {chunk}")
    stale_plan(work_dir(job))
    t0 = time.perf_counter()
    sims, nbrs = knn_graph(vectors, config.k, config, progress)
    pairs = pairs_to_verify(nbrs, labels, config)
    for name, array in zip(GRAPH_FILES, (nbrs.astype(np.int64), sims.astype(np.float32), pairs.astype(np.int64)),
                           strict=True):
        write_bytes(work_dir(job) / f"{name}.npy", npy_bytes(array))
    write_bytes(work_dir(job) / CATALOGUE, json.dumps({"ids": ids, "labels": labels, "pks": pks}).encode())
    data = {**extra, "count": len(ids), "evidence": asdict(config), "chunk": chunk, "pairs": len(pairs),
            "graph_seconds": round(time.perf_counter() - t0, 3), "planned_at": time.time()}
    for i, (lo, hi) in enumerate(bounds(data)):  # a chunk task reads its pairs' ids, not the catalogue's
        write_bytes(inputs_path(job, i), json.dumps(chunk_inputs_of(pairs[lo:hi], ids)).encode())
    write_bytes(plan_path(job), json.dumps(data).encode())
    return data


def chunk_inputs_of(pairs: np.ndarray, ids: list[str]) -> dict:
    """A chunk's pairs as {"ids": the images they touch, "pairs": positions into those ids}."""
    used, local = np.unique(pairs, return_inverse=True)
    return {"ids": [ids[u] for u in used], "pairs": local.reshape(-1, 2).tolist()}


def inputs_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"inputs-{i:06d}.json"


def catalogue(job: Job) -> dict:
    """{"ids", "labels", "pks"}: the images of the job, by position in the graph."""
    return json.loads((work_dir(job) / CATALOGUE).read_text())


def load(job: Job, name: str) -> np.ndarray:
    return np.load(work_dir(job) / f"{name}.npy", mmap_mode="r")


def bounds(p: dict) -> list[tuple[int, int]]:
    """Pair ranges [lo, hi) of the chunks (none when there is nothing to verify)."""
    return shard_bounds(p["pairs"], p["chunk"])


def chunk_path(job: Job, i: int) -> Path:
    return work_dir(job) / f"chunk-{i:06d}.npy"


def pending_chunks(job: Job, p: dict) -> list[int]:
    return [i for i in range(len(bounds(p))) if not chunk_path(job, i).exists()]


def compute_chunk(job: Job, p: dict, i: int, progress=None) -> bool:
    """Verify the pairs of chunk ``i`` unless it is on disk already; True when this call verified them. A
    twin task verifying the same chunk is waited for, not repeated."""
    path = chunk_path(job, i)
    with part_lock(path.with_suffix(".lock")) as held:
        if not held or path.exists():
            return False
        lo, hi = bounds(p)[i]
        inputs = json.loads(inputs_path(job, i).read_text())
        store = LocalFeatureStore(p["features"])  # cached by the job before the plan was written
        values = verify_pairs(np.asarray(inputs["pairs"], np.int64).reshape(-1, 2), inputs["ids"], store,
                              workers=p["evidence"]["workers"], progress=progress)
        write_bytes(path, npy_bytes(values.astype(np.int32)))
    log.info("job %s: verified chunk %s (%s pairs)", job.pk, i, hi - lo)
    return True


def report(job: Job, p: dict, message: str) -> int:
    """Progress of a chunked clean = the pairs in chunks on disk (whoever verified them)."""
    pending = set(pending_chunks(job, p))
    done = p["pairs"] - sum(hi - lo for i, (lo, hi) in enumerate(bounds(p)) if i in pending)
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        progress_done=done, progress_total=p["pairs"], message=message, heartbeat_at=timezone.now())
    return done


def run_chunk(job_id: int, i: int) -> int:
    """One chunk task (idempotent: a chunk on disk is not verified again). A chunk that cannot be verified
    (a local-feature file missing or unreadable) fails the job with the reason."""
    def work(job: Job) -> None:
        p = read_plan(job)
        if p is None:
            return  # discarded by a twin callback that finished the job
        compute_chunk(job, p, i, progress=heartbeat(job))
        report(job, p, f"verified chunk {i + 1} of {len(bounds(p))}")
    return run_part(job_id, i, "verification chunk", work, work_dir)


def evidence(job: Job, p: dict) -> CleaningEvidence:
    """The chunks merged with the graph into the evidence ``build_evidence`` would have given."""
    values = [np.load(chunk_path(job, i)) for i in range(len(bounds(p)))]
    for i, (lo, hi) in enumerate(bounds(p)):
        if len(values[i]) != hi - lo:
            raise ValueError(f"chunk {i} holds {len(values[i])} inlier counts for {hi - lo} pairs")
    merged = np.concatenate(values) if values else np.zeros(0, np.int32)
    meta = {"graph_seconds": p["graph_seconds"], "verify_seconds": round(time.time() - p["planned_at"], 3),
            "chunks": len(values)}
    listed = catalogue(job)
    return assemble_evidence(listed["ids"], listed["labels"], np.array(load(job, "similarities")),
                             np.array(load(job, "neighbours")), EvidenceConfig(**p["evidence"]),
                             np.array(load(job, "pairs")), merged, meta)


def discard(job: Job) -> None:
    """Drop the job's plan, graph and chunks (the evidence folder keeps what is needed)."""
    drop(work_dir(job))
