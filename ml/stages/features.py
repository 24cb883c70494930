"""The local-feature stage: the per-image features a pipeline verifies with (RootSIFT keypoints, and dense
feature-map descriptors when it matches them), cached in the shared feature folder one file per image, for
the images not cached yet, in chunks. A cache the embedding stage filled already (dense features caught
from its passes) is left out of the plan, so its chunks run RootSIFT only, on the CPU."""

from __future__ import annotations

from dataclasses import dataclass

from ml.dense_matching import DenseFeatureStore, DenseMatchConfig
from ml.pipeline import PipelineConfig
from ml.spatial import FeatureStore, LocalFeatureConfig, LocalFeatureStore
from ml.stages.protocol import Plan, Stage, StageFolder, Work, chunks
from ml.weights import shared_models


@dataclass
class DenseSource:
    """Which dense features: made with model ``spec`` at ``image_size`` with ``config``."""

    config: DenseMatchConfig
    spec: str
    image_size: int


class LocalFeatureStage(Stage):
    name = "features"
    title = "local features"

    def __init__(self, work: Work, feature_dir: str, sift: LocalFeatureConfig | None, dense: DenseSource | None,
                 chunk_size: int):
        self.work, self.feature_dir, self.sift, self.dense = work, feature_dir, sift, dense
        self.chunk_size = chunk_size

    @classmethod
    def for_pipeline(cls, work: Work, pipeline: PipelineConfig, feature_dir: str, chunk_size: int) -> LocalFeatureStage:
        """The caches searches with ``pipeline`` read (``ml.pipeline.feature_cache_keys``), and the RootSIFT
        its adaptation verifies with."""
        dense = DenseSource(pipeline.dense, pipeline.models[0], pipeline.image_size) if pipeline.uses_dense else None
        sift = pipeline.local_features if pipeline.uses_local_features or pipeline.adaptation.enabled else None
        return cls(work, feature_dir, sift, dense, chunk_size)

    def queue_of(self, plan: Plan) -> str:
        return "gpu" if plan.data.get("dense") else "cpu"  # dense features run the network

    def stores(self, kinds: dict | None = None, extract: bool = False) -> dict[str, FeatureStore]:
        """The caches this stage fills, by kind (``kinds`` limits them); with ``extract``, able to extract."""
        stores: dict[str, FeatureStore] = {}
        if self.sift is not None and (kinds is None or kinds.get("sift")):
            stores["sift"] = LocalFeatureStore(self.feature_dir, self.sift)
        if self.dense is not None and (kinds is None or kinds.get("dense")):
            model = shared_models([self.dense.spec])[0] if extract else None
            stores["dense"] = DenseFeatureStore(self.feature_dir, self.dense.config, self.dense.spec,
                                                self.dense.image_size, model)
        return stores

    def plan(self, folder: StageFolder) -> Plan:
        """Chunks of the images whose features are not all cached yet, and the kinds any of them lacks."""
        stores = self.stores()
        ids, paths = self.work.ids(), self.work.paths()
        todo, lacking = [], set()
        for k, image_id in enumerate(ids):
            missing = [kind for kind, store in stores.items() if image_id not in store]
            if missing:
                todo.append(k)
                lacking.update(missing)
        bounds = chunks(len(todo), self.chunk_size)
        for i, (lo, hi) in enumerate(bounds):
            folder.write_inputs(i, {"ids": [ids[k] for k in todo[lo:hi]], "paths": [paths[k] for k in todo[lo:hi]]})
        return Plan([hi - lo for lo, hi in bounds], {kind: kind in lacking for kind in stores})

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str:
        inputs = folder.inputs(i)
        items = list(zip(inputs["ids"], inputs["paths"], strict=True))
        kinds = self.stores(plan.data, extract=True)
        stores = list(kinds.values())
        for n, store in enumerate(stores):  # each image's file by rename: a half-done chunk is finished
            step = None if progress is None else (lambda d, t, n=n: progress((n * t + d) // len(stores), t))
            store.ensure(items, progress=step)
        return f"{'+'.join(kinds)} features of {len(items)} images"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        return {"extracted": plan.items, "kinds": sorted(k for k, lacked in plan.data.items() if lacked)}
