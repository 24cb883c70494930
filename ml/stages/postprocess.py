"""The global post-processing stage: the embedding set's vectors made into the vectors to index, in one
part (each step needs them all): learned whitening (from the current labels when the pipeline asks for it,
or the one the adaptation stage learned from verified pairs; saved in the index folder, so queries get it
too, and applied to the region descriptors there), then database-side augmentation (DBA)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from ml.atomic_files import write_npy, write_rows
from ml.embed import read_embedding_shards
from ml.pipeline import PipelineConfig
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.rerank import database_augmentation
from ml.stages.protocol import Plan, Stage, StageFolder
from ml.stages.regions import link_atomic
from ml.whitening import Whitening, learn_whitening

VECTORS = "vectors.npy"  # float32, in the embedding set's order
WRITE_BATCH = 65_536  # rows converted to float32 at a time when streamed from the set
Labels = Callable[[Sequence[str]], Sequence[Hashable | None]]


class GlobalStage(Stage):
    name = "global"
    title = "whitening and augmentation"

    def __init__(self, pipeline: PipelineConfig, embeddings: str, staging: Path, labels: Labels | None = None,
                 regions: Path | None = None):
        """``labels(ids)``: the current labels of ``ids`` (None for none), for learned whitening; ``regions``:
        the region stage's file, put into the index folder (``staging``) as it is or whitened."""
        self.pipeline, self.embeddings, self.staging, self.labels = pipeline, embeddings, staging, labels
        self.regions = regions

    def plan(self, folder: StageFolder) -> Plan:
        ids, _ = read_embedding_shards(self.embeddings, lazy=True)
        return Plan([len(ids)])

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str:
        ids, vectors = read_embedding_shards(self.embeddings, lazy=True)  # streamed unless a step needs all
        learned = self.pipeline.whitening.method != "none" and self.labels is not None
        adapted = Whitening.load(self.staging)  # the adaptation stage's, when it ran and learned one
        if learned or adapted is not None or self.pipeline.dba.k > 1:
            vectors = np.asarray(vectors, dtype=np.float32)
        whitening = learn_whitening(vectors, self.labels(ids), self.pipeline.whitening) if learned else adapted
        self.staging.mkdir(parents=True, exist_ok=True)
        if whitening is not None:
            whitening.save(self.staging)
            vectors = whitening.apply(vectors)
        if self.regions is not None:  # from the region stage's file each time: a rerun whitens once
            place_regions(self.regions, self.staging / REGIONS_FILE, whitening)
        if self.pipeline.dba.k > 1:
            vectors = database_augmentation(vectors, self.pipeline.dba)
        write_rows(folder.file(VECTORS), vectors, np.float32, WRITE_BATCH)
        return f"{len(ids)} vectors"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        return {"vectors": str(folder.file(VECTORS)), "count": plan.items}


def place_regions(source: Path, target: Path, whitening: Whitening | None, block: int = 4096) -> None:
    """The (N, R, D) region file at ``target``: the same file as ``source`` (a hard link), or whitened,
    ``block`` photos at a time, into a new file."""
    if whitening is None:
        link_atomic(source, target)
        return
    regions = np.load(source, mmap_mode="r")

    def fill(out: np.ndarray) -> None:
        for lo in range(0, len(regions), block):
            out[lo:lo + block] = whitening.apply_regions(regions[lo:lo + block]).astype(np.float16)
    write_npy(target, regions.shape, np.float16, fill)
