"""The adaptation stage: whitening learned from the pairs of photos the collection itself verifies, with no
labels (Radenović et al.'s Lw, from spatially verified pairs instead of labelled ones). Planned once (each
photo's nearest neighbours in the embedding set, each pair once), the pairs verified with cached RootSIFT
in chunks, joined into the whitening the global stage applies to the vectors and the regions, and search
to every query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.atomic_files import npy_bytes, write_bytes
from ml.clean import EvidenceConfig, knn_graph
from ml.embed import read_embedding_shards
from ml.pipeline import PipelineConfig
from ml.stages.protocol import Plan, Stage, StageFolder, chunks
from ml.stages.verify import pair_inputs, part_inliers, verify_part
from ml.whitening import whitening_from_pairs

PAIRS = "pairs.npy"


class AdaptStage(Stage):
    name = "adapt"
    title = "adapting to the collection"

    def __init__(self, pipeline: PipelineConfig, embeddings: str, feature_dir: str, staging: Path, chunk_pairs: int):
        self.pipeline, self.embeddings, self.feature_dir = pipeline, embeddings, feature_dir
        self.staging, self.chunk_pairs = staging, chunk_pairs

    def plan(self, folder: StageFolder) -> Plan:
        ids, vectors = read_embedding_shards(self.embeddings, dtype=np.float32)
        _, nbrs = knn_graph(vectors, self.pipeline.adaptation.neighbours, EvidenceConfig())
        pairs = neighbour_pairs(nbrs)
        write_bytes(folder.file(PAIRS), npy_bytes(pairs))
        bounds = chunks(len(pairs), self.chunk_pairs)
        for i, (lo, hi) in enumerate(bounds):  # a part reads its pairs' ids, not the collection's
            folder.write_inputs(i, pair_inputs(pairs[lo:hi], ids))
        return Plan([hi - lo for lo, hi in bounds])

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str | None:
        values = verify_part(folder, i, self.feature_dir, self.pipeline.local_features, progress)
        if values is None:
            return None
        return f"{len(values)} pairs, {int((values >= self.pipeline.adaptation.min_inliers).sum())} verified"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        cfg = self.pipeline.adaptation
        pairs = np.load(folder.file(PAIRS))
        inliers = part_inliers(folder, plan)
        verified = pairs[inliers >= cfg.min_inliers]
        _, vectors = read_embedding_shards(self.embeddings, dtype=np.float32)
        whitening = whitening_from_pairs(vectors, verified, cfg.shrinkage, cfg.min_pairs)
        if whitening is not None:
            self.staging.mkdir(parents=True, exist_ok=True)
            whitening.save(self.staging)
        return {"pairs": int(len(verified)), "checked": int(len(pairs)), "whitened": whitening is not None}


def neighbour_pairs(neighbours: np.ndarray) -> np.ndarray:
    """(P, 2) position pairs i < j of each row and its neighbours (a kNN graph's -1 left out), each once."""
    rows = np.repeat(np.arange(len(neighbours)), neighbours.shape[1])
    cols = neighbours.reshape(-1)
    keep = cols >= 0
    pairs = np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0).astype(np.int64)
