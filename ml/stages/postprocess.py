"""The global post-processing stage: the embedding set's vectors made into the vectors to index, in one
part (each step needs them all): learned whitening from the current labels when the pipeline asks for it
(saved in the index folder, so queries get it too), then database-side augmentation (DBA)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from ml.atomic_files import write_rows
from ml.embed import read_embedding_shards
from ml.pipeline import PipelineConfig
from ml.rerank import database_augmentation
from ml.stages.protocol import Plan, Stage, StageFolder
from ml.whitening import learn_whitening

VECTORS = "vectors.npy"  # float32, in the embedding set's order
WRITE_BATCH = 65_536  # rows converted to float32 at a time when streamed from the set
Labels = Callable[[Sequence[str]], Sequence[Hashable | None]]


class GlobalStage(Stage):
    name = "global"
    title = "whitening and augmentation"

    def __init__(self, pipeline: PipelineConfig, embeddings: str, staging: Path, labels: Labels | None = None):
        """``labels(ids)``: the current labels of ``ids`` (None for none), for learned whitening."""
        self.pipeline, self.embeddings, self.staging, self.labels = pipeline, embeddings, staging, labels

    def plan(self, folder: StageFolder) -> Plan:
        ids, _ = read_embedding_shards(self.embeddings, lazy=True)
        return Plan([len(ids)])

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str:
        ids, vectors = read_embedding_shards(self.embeddings, lazy=True)  # streamed unless a step needs all
        learned = self.pipeline.whitening.method != "none" and self.labels is not None
        if learned or self.pipeline.dba.k > 1:
            vectors = np.asarray(vectors, dtype=np.float32)
        if learned:
            whitening = learn_whitening(vectors, self.labels(ids), self.pipeline.whitening)
            if whitening is not None:
                self.staging.mkdir(parents=True, exist_ok=True)
                whitening.save(self.staging)
                vectors = whitening.apply(vectors)
        if self.pipeline.dba.k > 1:
            vectors = database_augmentation(vectors, self.pipeline.dba)
        write_rows(folder.file(VECTORS), vectors, np.float32, WRITE_BATCH)
        return f"{len(ids)} vectors"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        return {"vectors": str(folder.file(VECTORS)), "count": plan.items}
