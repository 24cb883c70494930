"""A search index built from a collection: the stages, in order, that the product's ``build_index`` runs
on the workers and ``evaluate`` runs in one process, so what is measured is what is built:

    embed -> local features -> regions -> global post-processing -> index shards

(embed is left out when the vectors come from an existing embedding set; local features, adaptation and
regions when the pipeline does not use them; adaptation comes after the local features it verifies with). ``open_database`` (``ml.pipeline``) then opens what they made."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ml.configs import from_dict
from ml.index import RECALL_QUERIES
from ml.pipeline import PipelineConfig, SearchDatabase, feature_cache_keys, open_database
from ml.regional import FILE_NAME as REGIONS_FILE
from ml.stages.adapt import AdaptStage
from ml.stages.embed import EmbedStage, region_grid
from ml.stages.features import LocalFeatureStage
from ml.stages.postprocess import VECTORS, GlobalStage, Labels
from ml.stages.protocol import Stage, StageProgress, Work, run_stages
from ml.stages.regions import RegionStage
from ml.stages.shards import IndexStage
from ml.weights import weights_digest

DEFAULT_CHUNK = 512  # images per embedding, feature and region part
DEFAULT_SHARD = 250_000  # vectors per index shard
DEFAULT_CHUNK_PAIRS = 2000  # pairs per adaptation part


@dataclass
class BuildSpec:
    """Everything a build needs besides its images (written once per build; every part reads it back)."""

    pipeline: PipelineConfig
    feature_dir: str  # the shared per-image feature caches
    embeddings: str  # the embedding set's folder: made by the embed stage, or an existing set's
    index_dir: str  # where the index is published
    embed: bool = True  # False: ``embeddings`` exists already (a build from an embedding set)
    set_grid: dict | None = None  # an existing set's region grid, when its folder does not record it
    chunk_size: int = DEFAULT_CHUNK
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS  # pairs per adaptation part
    shard_size: int = DEFAULT_SHARD
    recall_queries: int = RECALL_QUERIES
    runtime: dict | None = None  # how to embed (batch size, decode workers): never what the vectors are

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BuildSpec:
        return from_dict(cls, data, "build")


def build_record(spec: BuildSpec) -> dict:
    """What a built index records of how it was made, for everything that reads it later (search, "why
    this match", pruning, exports): the whole pipeline config, the feature caches it reads, its region
    grid, and each model with the digest of its weights file."""
    p = spec.pipeline
    return {"config": p.as_dict(), "feature_dir": spec.feature_dir, "feature_caches": sorted(feature_cache_keys(p)),
            "dense": p.uses_dense, "regions": region_grid(p) if p.regional.enabled else None,
            "models": [{"spec": m, "digest": weights_digest(m)} for m in p.models]}


def index_stages(work: Work, spec: BuildSpec, labels: Labels | None = None, runtime: dict | None = None
                 ) -> list[Stage]:
    """The stages of ``spec``'s build in ``work``. ``labels(ids)`` gives the current labels (learned
    whitening); ``runtime`` this process's embedding settings, under what the spec sets."""
    p = spec.pipeline
    staging = work.path / "staging"  # the index folder until it is published
    how = {**(runtime or {}), **(spec.runtime or {})}
    stages: list[Stage] = []
    if spec.embed:
        stages.append(EmbedStage(work, p, spec.embeddings, spec.feature_dir, spec.chunk_size, how))
    if p.uses_local_features or p.uses_dense or p.adaptation.enabled:
        stages.append(LocalFeatureStage.for_pipeline(work, p, spec.feature_dir, spec.chunk_size))
    if p.adaptation.enabled:
        stages.append(AdaptStage(p, spec.embeddings, spec.feature_dir, staging, spec.chunk_pairs))
    regions = None
    if p.regional.enabled:
        stages.append(RegionStage(work, p, spec.embeddings, spec.chunk_size, how, spec.set_grid))
        regions = work.path / RegionStage.name / REGIONS_FILE
    stages.append(GlobalStage(p, spec.embeddings, staging, labels, regions))
    stages.append(IndexStage(p.index, spec.embeddings, work.path / GlobalStage.name / VECTORS, staging,
                             spec.index_dir, spec.shard_size, spec.recall_queries))
    return stages


def embed_collection(
    items: Sequence[tuple[str, str | os.PathLike]],
    pipeline: PipelineConfig,
    folder: str | os.PathLike,
    feature_dir: str | os.PathLike | None = None,
    progress: StageProgress | None = None,
    runtime: dict | None = None,
) -> Path:
    """The embed stage alone, in this process: the embedding set of (id, path) ``items`` at ``folder/embeddings``
    (dense features caught into ``feature_dir`` when the pipeline matches them), for ``build_database``'s
    ``embeddings`` (an evaluation reuses one set for every pipeline embedding the same way)."""
    folder = Path(folder)
    out = folder / "embeddings"
    work = Work(folder / "embed-work")
    work.create({}, [i for i, _ in items], [str(p) for _, p in items])
    stage = EmbedStage(work, pipeline, str(out), str(feature_dir) if feature_dir else None, DEFAULT_CHUNK, runtime)
    run_stages([stage], work.path, progress)
    work.drop()
    return out


def build_database(
    items: Sequence[tuple[str, str | os.PathLike]],
    pipeline: PipelineConfig,
    folder: str | os.PathLike,
    labels: Mapping[str, Hashable] | None = None,
    feature_dir: str | os.PathLike | None = None,
    embeddings: str | os.PathLike | None = None,
    progress: StageProgress | None = None,
    runtime: dict | None = None,
) -> SearchDatabase:
    """Build the search database of (id, path) ``items`` in this process, in ``folder`` (its ``index/``,
    ``embeddings/`` and the work), with the product's stages; labels (when known) by id. ``embeddings``:
    an existing embedding set of exactly these items to index instead of embedding them. Features are
    cached in ``feature_dir`` (default ``folder/features``): images cached there are not extracted again."""
    folder = Path(folder)
    spec = BuildSpec(pipeline, str(feature_dir or folder / "features"), str(embeddings or folder / "embeddings"),
                     str(folder / "index"), embed=embeddings is None)
    work = Work(folder / "work")
    work.create(spec.as_dict(), [i for i, _ in items], [str(p) for _, p in items])
    label_of = (lambda ids: [labels.get(i) for i in ids]) if labels is not None else None
    run_stages(index_stages(work, spec, label_of, runtime), work.path, progress)
    work.drop()
    database = open_database(spec.index_dir, pipeline, spec.feature_dir)
    if labels is not None:
        database.labels = [labels.get(i) for i in database.ids]
    return database

