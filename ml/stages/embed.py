"""The embedding stage: the images in chunks, each chunk's descriptors (and region descriptors, when the
pipeline re-scores by regions) from one multi-scale pass of the pipeline's models, its photos' dense
features caught from the same passes; joined into an embedding set folder (float16 shards, published by
rename)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ml.atomic_files import copy_rows, npy_bytes, write_bytes, write_npy
from ml.embed import MANIFEST, write_embedding_blocks
from ml.pipeline import PipelineConfig, database_regions, dense_fill, embed_database
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.regional import whole_image_vectors
from ml.stages.protocol import Plan, Stage, StageFolder, Work, chunks
from ml.weights import shared_models

GRID_FILE = "regions.json"  # beside a set's regions.npy: the grid they were made on


class EmbedStage(Stage):
    name = "embed"
    title = "embedding"
    queue = "gpu"

    def __init__(self, work: Work, pipeline: PipelineConfig, out: str, feature_dir: str | None, chunk_size: int,
                 runtime: dict | None = None):
        self.work, self.pipeline, self.out, self.feature_dir = work, pipeline, Path(out), feature_dir
        self.chunk_size, self.runtime = chunk_size, runtime or {}

    def plan(self, folder: StageFolder) -> Plan:
        ids, paths = self.work.ids(), self.work.paths()
        if not ids:
            raise ValueError("no images to embed")
        bounds = chunks(len(ids), self.chunk_size)
        for i, (lo, hi) in enumerate(bounds):
            folder.write_inputs(i, {"ids": ids[lo:hi], "paths": paths[lo:hi]})
        return Plan([hi - lo for lo, hi in bounds])

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str | None:
        if folder.file(_vectors(i)).exists():  # written last: the chunk is whole
            return None
        inputs = folder.inputs(i)
        models = shared_models(self.pipeline.models)
        dense = dense_fill(self.pipeline, self.feature_dir, inputs["ids"])  # from the same passes
        if self.pipeline.regional.enabled:  # regions first (by rename); region 0 gives the vectors
            regions = database_regions(models, inputs["paths"], self.pipeline, folder.file(_regions(i)),
                                       progress, dense, self.runtime)
            vectors = whole_image_vectors(regions)
        else:
            vectors = embed_database(models, inputs["paths"], self.pipeline, progress, dense, self.runtime)
        write_bytes(folder.file(_vectors(i)), npy_bytes(vectors.astype(np.float32)))
        caught = f", dense features of {dense.filled} caught" if dense is not None else ""
        return f"{len(vectors)} images{caught}"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        """The chunks as one embedding set, streamed chunk by chunk (memory holds one shard)."""
        regional = self.pipeline.regional.enabled
        if not (self.out / MANIFEST).is_file():  # else joined before the process died, not recorded
            blocks = ((folder.inputs(i)["ids"], np.load(folder.file(_vectors(i)), mmap_mode="r"))
                      for i in range(plan.parts))
            dim = np.load(folder.file(_vectors(0)), mmap_mode="r").shape[1]
            write_embedding_blocks(self.out, blocks, dim, extra=(lambda tmp: self._join_regions(folder, plan, tmp))
                                   if regional else None)
        manifest = _manifest(self.out)
        return {"path": str(self.out), "count": manifest["count"], "dim": manifest["dim"], "chunks": plan.parts,
                "regional": region_grid(self.pipeline) if regional else None}

    def _join_regions(self, folder: StageFolder, plan: Plan, set_folder: Path) -> None:
        join_region_files([folder.file(_regions(i)) for i in range(plan.parts)], set_folder / REGIONS_FILE)
        write_bytes(set_folder / GRID_FILE, json.dumps(region_grid(self.pipeline)).encode())


def join_region_files(files: list[Path], out: Path) -> None:
    """Chunks' (n, R, D) float16 region files as one (N, R, D) file (R: the most of any chunk, zero-padded as
    within a chunk), copied chunk by chunk into a memory-mapped temp file renamed into place."""
    parts = [np.load(f, mmap_mode="r") for f in files]
    shape = (sum(len(r) for r in parts), max(r.shape[1] for r in parts), parts[0].shape[2])
    write_npy(out, shape, np.float16, lambda joined: copy_rows(joined, parts))


def region_grid(pipeline: PipelineConfig) -> dict:
    return {"levels": pipeline.regional.levels, "overlap": pipeline.regional.overlap}


def _vectors(i: int) -> str:
    return f"chunk-{i:06d}.npy"


def _regions(i: int) -> str:
    return f"chunk-{i:06d}.regions.npy"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())
