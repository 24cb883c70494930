"""The verification stage of a cleaning job: the kNN graph of the labelled images (planned once: the
graph, the pairs it says to verify), the pairs spatially verified with cached RootSIFT in chunks, and the
chunks joined into the evidence ``ml.clean.build_evidence`` gives, saved in its cache folder. Without
verification the plan has no parts and the evidence is the graph's alone."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ml.atomic_files import npy_bytes, write_bytes
from ml.clean import EvidenceConfig, assemble_evidence, knn_graph, pairs_to_verify, verify_pairs
from ml.embed import read_embedding_shards
from ml.spatial import LocalFeatureConfig, LocalFeatureStore
from ml.stages.protocol import Plan, Stage, StageFolder, Work, chunks

GRAPH_FILES = ("neighbours", "similarities", "pairs")


class VerifyStage(Stage):
    name = "verify"
    title = "spatial verification"

    def __init__(self, work: Work, embeddings: str, config: EvidenceConfig, verify: bool, feature_dir: str,
                 evidence_dir: str, chunk_pairs: int, sift: LocalFeatureConfig | None = None):
        if chunk_pairs < 1:
            raise ValueError(f"chunk_pairs must be at least 1, got {chunk_pairs}")
        self.work, self.embeddings, self.config, self.verify = work, embeddings, config, verify
        self.feature_dir, self.evidence_dir, self.chunk_pairs = feature_dir, Path(evidence_dir), chunk_pairs
        self.sift = sift or LocalFeatureConfig()

    def plan(self, folder: StageFolder) -> Plan:
        ids, labels = self.work.ids(), self.work.column("labels")
        started = time.perf_counter()
        sims, nbrs = knn_graph(vectors_of(self.embeddings, ids), self.config.k, self.config)
        pairs = pairs_to_verify(nbrs, labels, self.config) if self.verify else np.zeros((0, 2), np.int64)
        for name, array in zip(GRAPH_FILES, (nbrs.astype(np.int64), sims.astype(np.float32), pairs.astype(np.int64)),
                               strict=True):
            write_bytes(folder.file(f"{name}.npy"), npy_bytes(array))
        bounds = chunks(len(pairs), self.chunk_pairs)
        for i, (lo, hi) in enumerate(bounds):  # a part reads its pairs' ids, not the catalogue's
            folder.write_inputs(i, pair_inputs(pairs[lo:hi], ids))
        return Plan([hi - lo for lo, hi in bounds],
                    {"graph_seconds": round(time.perf_counter() - started, 3), "planned_at": time.time()})

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str | None:
        values = verify_part(folder, i, self.feature_dir, self.sift, progress, self.config.workers)
        return None if values is None else f"{len(values)} pairs"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        values = part_inliers(folder, plan)
        graph = {name: np.load(folder.file(f"{name}.npy")) for name in GRAPH_FILES}
        meta = {"graph_seconds": plan.data["graph_seconds"], "chunks": plan.parts,
                "verify_seconds": round(time.time() - plan.data["planned_at"], 3)}
        evidence = assemble_evidence(
            self.work.ids(), self.work.column("labels"), graph["similarities"], graph["neighbours"], self.config,
            graph["pairs"] if self.verify else None, values, meta)
        evidence.save(self.evidence_dir)
        return {"evidence": str(self.evidence_dir), "pairs": plan.items, "config": asdict(self.config)}


def vectors_of(embeddings: str, ids: Sequence[str]) -> np.ndarray:
    """float32 rows of an embedding set for ``ids``, in that order (every id must be in the set)."""
    set_ids, vectors = read_embedding_shards(embeddings)
    pos = {image_id: n for n, image_id in enumerate(set_ids)}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise ValueError(f"{len(missing)} images are not in the embedding set {embeddings}, e.g. {missing[:3]}")
    return np.asarray(vectors[[pos[i] for i in ids]], dtype=np.float32)


def verify_part(folder: StageFolder, i: int, feature_dir: str, sift: LocalFeatureConfig | None, progress,
                workers: int = 1) -> np.ndarray | None:
    """Inlier counts of part ``i``'s pairs (``pair_inputs``) with the RootSIFT the feature stage cached,
    written as its chunk file; None when that file exists (written by rename: whole)."""
    out = folder.file(f"chunk-{i:06d}.npy")
    if out.exists():
        return None
    inputs = folder.inputs(i)
    values = verify_pairs(np.asarray(inputs["pairs"], np.int64).reshape(-1, 2), inputs["ids"],
                          LocalFeatureStore(feature_dir, sift), workers=workers, progress=progress)
    write_bytes(out, npy_bytes(values.astype(np.int32)))
    return values


def part_inliers(folder: StageFolder, plan: Plan) -> np.ndarray:
    """The parts' inlier counts joined, in pair order; a part of the wrong length is an error."""
    values = [np.load(folder.file(f"chunk-{i:06d}.npy")) for i in range(plan.parts)]
    for i, (size, found) in enumerate(zip(plan.sizes, values, strict=True)):
        if len(found) != size:
            raise ValueError(f"chunk {i} holds {len(found)} inlier counts for {size} pairs")
    return np.concatenate(values) if values else np.zeros(0, np.int32)


def pair_inputs(pairs: np.ndarray, ids: Sequence[str]) -> dict:
    """A chunk's pairs as {"ids": the images they touch, "pairs": positions into those ids}."""
    used, local = np.unique(pairs, return_inverse=True)
    return {"ids": [ids[u] for u in used], "pairs": local.reshape(-1, 2).tolist()}
