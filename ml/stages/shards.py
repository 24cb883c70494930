"""The index stage: the vectors to index cut into shards of ``shard_size`` rows, each indexed by its own
part (a complete faiss folder published by rename), then joined: recall measured when the shards are
approximate, the manifest written last, and the whole index folder (with the regions and whitening the
earlier stages left in it) renamed into place. Searched as one index, k-way merged (``ml.index``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ml.embed import read_embedding_shards
from ml.index import META, IndexConfig, build_shard, publish_sharded, shard_complete, shard_name
from ml.stages.protocol import Plan, Stage, StageFolder, chunks


class IndexStage(Stage):
    name = "index"
    title = "index shards"

    def __init__(self, config: IndexConfig, embeddings: str, vectors: Path, staging: Path, out: str,
                 shard_size: int, recall_queries: int):
        """``vectors``: the float32 rows to index (the global stage's), in the order of ``embeddings``' ids."""
        self.config, self.embeddings, self.vectors, self.staging = config, embeddings, vectors, staging
        self.out, self.shard_size, self.recall_queries = Path(out), shard_size, recall_queries

    def plan(self, folder: StageFolder) -> Plan:
        ids, _ = read_embedding_shards(self.embeddings, lazy=True)
        kind = self.config.resolved_kind(len(ids))  # on the whole count: every shard has the same kind
        bounds = chunks(len(ids), self.shard_size)
        for i, (lo, hi) in enumerate(bounds):  # a part reads its own ids, not the collection's
            folder.write_inputs(i, ids[lo:hi])
        return Plan([hi - lo for lo, hi in bounds], {"index": asdict(replace(self.config, kind=kind)), "kind": kind,
                                                     "shard_size": self.shard_size})

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str | None:
        lo = i * plan.data["shard_size"]
        rows = np.load(self.vectors, mmap_mode="r")[lo:lo + plan.sizes[i]]
        built = build_shard(rows, folder.inputs(i), self.staging / shard_name(i), IndexConfig(**plan.data["index"]),
                            progress=progress)
        return f"{len(rows)} vectors" if built else None

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        if not shard_complete(self.out):  # else published before the process died, not recorded
            for stale in self.staging.glob(".shard-*.tmp-*"):  # left by a process killed in a shard build
                shutil.rmtree(stale, ignore_errors=True)
            try:
                publish_sharded(self.staging, self.out, self.recall_queries, extra={"shard_size": self.shard_size})
            except (OSError, ValueError):
                if not shard_complete(self.out):  # not a twin that got there first
                    raise
        meta = json.loads((self.out / META).read_text())
        recall = meta.get("recall") or {}
        return {"path": str(self.out), "count": meta["count"], "kind": plan.data["kind"], "shards": plan.parts,
                "shard_size": self.shard_size, "recall": recall.get("recall"), "recall_queries": recall.get("queries"),
                "recall_k": recall.get("k")}
