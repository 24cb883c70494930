"""The region stage: the (N, R, D) R-MAC region descriptors a pipeline re-scores its shortlist with. The
embedding set's own, when it was made on the pipeline's grid (hard-linked, no copy); else made here in
chunks and joined. The global stage puts them in the index folder (whitened, when it whitens)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ml.pipeline import PipelineConfig, database_regions
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.stages.embed import GRID_FILE, join_region_files, region_grid
from ml.stages.protocol import Plan, Stage, StageFolder, Work, chunks
from ml.weights import shared_models


class RegionStage(Stage):
    name = "regions"
    title = "region descriptors"
    queue = "gpu"

    def __init__(self, work: Work, pipeline: PipelineConfig, embeddings: str, chunk_size: int,
                 runtime: dict | None = None, set_grid: dict | None = None):
        """``set_grid``: the grid the embedding set's regions were made on, when its folder does not say."""
        self.work, self.pipeline, self.embeddings = work, pipeline, Path(embeddings)
        self.chunk_size, self.runtime, self.set_grid = chunk_size, runtime or {}, set_grid

    def set_regions(self) -> Path | None:
        """The embedding set's regions file, when it was made on the pipeline's grid."""
        path = self.embeddings / REGIONS_FILE
        grid_file = self.embeddings / GRID_FILE
        grid = json.loads(grid_file.read_text()) if grid_file.is_file() else self.set_grid
        return path if path.is_file() and grid == region_grid(self.pipeline) else None

    def plan(self, folder: StageFolder) -> Plan:
        if self.set_regions() is not None:
            return Plan([], {"from_set": True})
        ids, paths = self.work.ids(), self.work.paths()
        bounds = chunks(len(ids), self.chunk_size)
        for i, (lo, hi) in enumerate(bounds):
            folder.write_inputs(i, {"paths": paths[lo:hi]})
        return Plan([hi - lo for lo, hi in bounds], {"from_set": False})

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str | None:
        if folder.file(_regions(i)).exists():  # written by rename: whole
            return None
        regions = database_regions(shared_models(self.pipeline.models), folder.inputs(i)["paths"], self.pipeline,
                         folder.file(_regions(i)), progress, runtime=self.runtime)
        return f"{len(regions)} images"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        out = folder.file(REGIONS_FILE)
        if plan.data["from_set"]:
            link_atomic(self.set_regions(), out)
        else:
            join_region_files([folder.file(_regions(i)) for i in range(plan.parts)], out)
        return {"path": str(out), "from_set": plan.data["from_set"]}


def link_atomic(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (a hard link, a copy across file systems), by rename."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _regions(i: int) -> str:
    return f"chunk-{i:06d}.regions.npy"
