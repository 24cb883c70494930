"""Retrieval pipelines: the config of every parameter and its presets, opening a built database, and
one-photo search.

A pipeline is: global descriptor (one model or a concatenated ensemble, optional multi-scale) -> with
database labels, optionally whitening learned from them (ml.whitening) -> exact / approximate search ->
optional alpha-QE over the database side (DBA) and the query (QE) -> optional spatial verification of
the top-N (RootSIFT + MAGSAC; and dense matching on the backbone's feature maps, ml.dense_matching), its
inliers fused with the global score, QE over verified images only and
verification of the new candidates -> with database labels, kNN label voting (inlier bonus) and a
label-aware re-ranking -> recognition.

A database is built by the stages of ``ml.stages.index_build`` (on the workers by ``build_index``, in one
process by ``ml.evaluate``) and opened with ``open_database``; the web app opens the active index version
that way, with the config it recorded, and calls ``search_one(database, models, image)`` per uploaded
photo. ``ml.evaluate`` runs the very same functions, so what it measures is what the product does.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.calibration import ConfidenceConfig, ScoreConfig, monotone
from ml.configs import from_dict
from ml.dense_matching import (
    DenseCacheFill,
    DenseFeatures,
    DenseFeatureStore,
    DenseMatchConfig,
    DenseTap,
    dense_inliers_many,
    extract_dense,
)
from ml.dense_matching import cache_key as dense_cache_key
from ml.embed import EmbedConfig, concat_ensemble, embed_image, embed_images, view_position
from ml.index import IndexConfig, LoadedIndex, load_index
from ml.models import LandmarkNet
from ml.recognize import Recognition, RecognitionConfig, recognize
from ml.regional import (
    RegionalConfig,
    concat_regions,
    embed_database_regions,
    embed_image_regions,
    expanded_region_scores,
    load_regions,
)
from ml.rerank import (
    BridgedConfig,
    ExpansionConfig,
    LabelRerankConfig,
    LabelVoteConfig,
    VerificationConfig,
    alpha_query_expansion,
    alpha_weights,
    bridged_scores,
    discriminative_rerank,
    expand_query,
    fuse_inliers,
    known_label_confidences,
    label_distance_boost,
    landmark_confidences,
    predict_labels,
    rerank_with_inliers,
    verified_expansion,
)
from ml.spatial import (
    LocalFeatureConfig,
    LocalFeatures,
    LocalFeatureStore,
    MatchConfig,
    Verification,
    extract_local_features,
    open_image,
    verify_many,
)
from ml.weights import load_model
from ml.whitening import AdaptationConfig, Whitening, WhiteningConfig

Progress = Callable[[int, int], None]
FULL_RANKING_UP_TO = 10_000  # databases up to this size are ranked completely, larger ones to SHORTLIST
SHORTLIST = 1_000


@dataclass
class PipelineConfig:
    """Every parameter of a retrieval pipeline. ``models`` are ``ml.weights.load_model`` specs."""

    name: str = "custom"
    description: str = ""
    models: tuple[str, ...] = ("tf_efficientnet_lite2",)
    model_weights: tuple[float, ...] | None = None  # ensemble weights (lyakaap A.4); None = equal
    image_size: int = 512
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False  # also embed the mirrored image (K5's TTA, reference B.2)
    whitening: WhiteningConfig = field(default_factory=WhiteningConfig)  # learned from labels, when known
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)  # learned from verified pairs
    dba: ExpansionConfig = field(default_factory=ExpansionConfig)
    qe: ExpansionConfig = field(default_factory=ExpansionConfig)
    regional: RegionalConfig = field(default_factory=RegionalConfig)  # re-score the shortlist by regions
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    dense: DenseMatchConfig = field(default_factory=DenseMatchConfig)  # spatial matching on feature maps
    local_features: LocalFeatureConfig = field(default_factory=LocalFeatureConfig)
    matching: MatchConfig = field(default_factory=MatchConfig)
    label_vote: LabelVoteConfig = field(default_factory=LabelVoteConfig)
    label_rerank: LabelRerankConfig = field(default_factory=LabelRerankConfig)
    bridged: BridgedConfig = field(default_factory=BridgedConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)  # what a result's score means, and the order
    index: IndexConfig = field(default_factory=IndexConfig)

    def __post_init__(self) -> None:
        if self.regional.enabled and self.whitening.method != "none":
            raise ValueError(f"pipeline {self.name}: regional re-scoring does not support whitening learned from "
                             "labels yet (adaptation, learned from verified pairs, whitens regions too)")
        if self.adaptation.enabled and self.whitening.method != "none":
            raise ValueError(f"pipeline {self.name}: choose one learned whitening: from labels or from verified pairs")

    def embed_config(self, runtime: Mapping[str, Any] | None = None) -> EmbedConfig:
        """How to embed for this pipeline; ``runtime`` (batch size, decode workers, device) is this
        process's choice: it changes how fast, never what the vectors are."""
        return EmbedConfig(**{**(runtime or {}), "image_size": self.image_size, "scales": tuple(self.scales),
                              "flip": self.flip})

    @property
    def uses_local_features(self) -> bool:
        return self.verification.top_n > 0

    @property
    def uses_dense(self) -> bool:
        return self.dense.enabled

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """The config ``as_dict`` recorded (an index version's), nested settings included."""
        return from_dict(cls, data, "pipeline")


def _preset(name: str, description: str, **changes) -> PipelineConfig:
    return replace(PipelineConfig(name=name, description=description), **changes)


MULTI_SCALE = (2**-0.5, 1.0, 2**0.5)  # cirtorch / CVNet / SuperGlobal test scales (reference A.5, E.2)
# Verify the top 50 (RootSIFT, ratio 0.8 + mutual, MAGSAC++ homography); >= 15 inliers counts as verified
# and adds min(70, inliers)/70 to the global score (A.7); then QE over the verified images and verify again.
VERIFY_TOP50 = VerificationConfig(top_n=50, min_inliers=15, mode="fused", weight=1.0, qe_k=6)
# With labels: nearest-neighbour label (vote k=1, inlier bonus) -> LY's sort + insert. k=1 measured best on
# landmarks-mini, where most landmarks have 1-4 database photos (k=3, 5 let big landmarks out-vote them).
LABEL_STEPS = {
    "label_vote": LabelVoteConfig(k=1),
    "label_rerank": LabelRerankConfig(method="discriminative", threshold=0.0),
}
# The presets' recognition until 2026-12 (the reference the calibrated one is measured against): the
# nearest photo's noisy-OR evidence, "no landmark" below 0.25: an answer needed spatial verification or
# cos >= 0.75 to its nearest image (evidence (2 cos - 1) / 2), so a photo whose three nearest photos all
# show one landmark at cos 0.72 got "no landmark".
NOISY_OR_RECOGNITION = RecognitionConfig(vote=LabelVoteConfig(k=1), threshold=0.25)


def calibrated_recognition(weights: ConfidenceConfig) -> RecognitionConfig:
    """The presets' recognition: the 3 nearest photos vote, the confidence is the probability the landmark
    is right (``weights`` fitted per preset by bench/calibrate.py --fit), "no landmark" below 0.45: the
    lowest threshold at which, on the folds left out, the default names no more false landmarks than the
    noisy-OR rule did, on collections with many, few and long-tailed photos a landmark (docs/decisions/0007).
    """
    return RecognitionConfig(vote=LabelVoteConfig(k=3), threshold=0.45, calibration=weights)


LITE2_MS = {"models": ("tf_efficientnet_lite2",), "scales": MULTI_SCALE}
# R-MAC regions at 3 levels (about 21 per photo), compared pair by pair: global-only mAP 61.8 -> 67.0 on
# landmarks-mini (docs/benchmarks-archive.md); the shortlist is as deep as SuperGlobal's re-ranking (400).
REGIONS_TOP400 = RegionalConfig(levels=3, shortlist=400)
# Dense spatial matching of the top 50 on lite2's block-4 feature maps (ml.dense_matching): it verifies
# day/night and season pairs RootSIFT cannot. >= 20 inliers adds min(60, inliers)/60 to the ranking score;
# on landmarks-mini 67.4 -> 73.2 mAP without labels, 80.7 -> 85.7 with them (docs/benchmarks.md).
DENSE_TOP50 = DenseMatchConfig(top_n=50, min_inliers=20, inlier_cap=60, weight=1.0)

# The presets a user chooses between, each with its cost and quality (landmarks-mini, 2 CPU cores,
# docs/benchmarks.md), and its recognition confidence and result scores calibrated on 3 folds of
# landmarks-dev/train (bench/calibrate.py --fit). Variants tried on the way live with the benchmarks
# that compare them (bench/pipelines.py). A preset only seeds a new build: an index records the whole config it was built
# with, and is searched with that record, whatever the preset says later.
DEFAULT = _preset(
    # flip: every photo also embedded mirrored (the 2021 5th place's TTA, reference B.2), the views' power
    # mean covering both; twice the forward passes, landmarks-mini recall@1 76.5 -> 79.4 in both regimes.
    "default", "best quality, ~1.2 s a query on 2 CPU cores: lite2 at 3 scales with mirrored views, region "
    "re-scoring, query expansion, RootSIFT and dense verification of the top 50; with labels, 1-NN label "
    "vote and label-aware re-ranking (landmarks-mini mAP 73.2 without labels, 85.7 with)",
    flip=True, qe=ExpansionConfig(k=2), verification=VERIFY_TOP50, dense=DENSE_TOP50, regional=REGIONS_TOP400,
    **LITE2_MS, **LABEL_STEPS,
    # The recognition's confidence and a result's score (P(it shows the query's place)), fitted on 3 folds
    # of landmarks-dev/train (bench/calibrate.py --fit; reliability on sets never used to fit in
    # docs/benchmarks.md).
    recognition=calibrated_recognition(ConfidenceConfig(3.258, -1.921, 1.954, 1.739, -2.964)),
    scores=ScoreConfig(fused_weight=1.752, label_weight=5.642, bias=-5.631, rank=True))
PIPELINES: dict[str, PipelineConfig] = {
    p.name: p
    for p in [
        DEFAULT,
        # The web's profile (issue #6: < 1 s p95 with 10 clients on 2 CPU cores at 100 k images): one
        # small forward pass, no QE round trip, cheap SIFT; >= 10 inliers because 500 keypoints on 512 px
        # rarely reach 15 (landmarks-mini: mAP 53.5 -> 56.2 with this verification, docs/benchmarks.md).
        _preset("web-fast", "fast, ~0.12 s a query: lite0 at 384 px, one scale, RootSIFT verification of the "
                "top 20; with labels, 1-NN label vote (landmarks-mini mAP 56.2 without labels, 65.8 with)",
                models=("tf_efficientnet_lite0",), image_size=384,
                verification=VerificationConfig(top_n=20, min_inliers=10, mode="fused", weight=1.0),
                local_features=LocalFeatureConfig(max_side=512, max_keypoints=500), **LABEL_STEPS,
                recognition=calibrated_recognition(ConfidenceConfig(4.509, -1.708, 2.921, 1.561, -3.008)),
                scores=ScoreConfig(fused_weight=1.241, label_weight=5.883, bias=-4.93, rank=True)),
        _preset("baseline", "the reference to measure gains against, ~0.1 s a query: off-the-shelf lite0 "
                "(ImageNet), GeM, 512 px, no re-ranking (landmarks-mini mAP 53.6)",
                models=("tf_efficientnet_lite0",),
                scores=ScoreConfig(fused_weight=3.746, label_weight=0.0, bias=-5.205)),
    ]
}
DEFAULT_PIPELINE = "default"


def list_pipelines() -> list[str]:
    """Names of the presets; ``DEFAULT_PIPELINE`` is the product default."""
    return list(PIPELINES)


def get_pipeline(name: str | PipelineConfig | None = None) -> PipelineConfig:
    if isinstance(name, PipelineConfig):
        return name
    name = name or DEFAULT_PIPELINE
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}")
    return PIPELINES[name]


def with_models(pipeline: PipelineConfig, model_spec: str | None) -> PipelineConfig:
    """The pipeline with its models replaced by ``model_spec`` ('a+b' = concatenated ensemble)."""
    if not model_spec:
        return pipeline
    return replace(pipeline, models=tuple(str(model_spec).split("+")), model_weights=None)


def embedded_as(pipeline: PipelineConfig, recorded: Mapping[str, Any]) -> PipelineConfig:
    """``pipeline`` with the models and embedding settings recorded for a set of vectors (an EmbeddingSet's or
    an IndexVersion's params: "models", "image_size", "scales", "flip"), so that queries are embedded the
    way those vectors were. A setting not recorded keeps the preset's, except ``flip``: sets and indexes
    made before flip TTA record none, and their photos were not mirrored."""
    if recorded.get("models"):
        pipeline = with_models(pipeline, "+".join(recorded["models"]))
    return replace(pipeline, image_size=int(recorded.get("image_size") or pipeline.image_size),
                   scales=tuple(recorded.get("scales") or pipeline.scales), flip=bool(recorded.get("flip", False)))


def load_models(pipeline: PipelineConfig) -> list[LandmarkNet]:
    return [load_model(spec) for spec in pipeline.models]


# ------------------------------------------------------------------------------------------ embedding


def embed_database(
    models: Sequence[LandmarkNet], paths: Sequence[str | os.PathLike], pipeline: PipelineConfig,
    progress: Progress | None = None, dense: DenseCacheFill | None = None, runtime: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """(N, D) L2-normalised descriptors of image files (ensemble concatenated when several models);
    ``dense`` (``dense_fill``) caches their dense features from the first model's passes; ``runtime`` as
    in ``PipelineConfig.embed_config``."""
    cfg = pipeline.embed_config(runtime)
    total = len(paths) * len(models)
    parts = []
    for m, model in enumerate(models):
        def step(done: int, _total: int, offset: int = m * len(paths)) -> None:
            if progress is not None:
                progress(offset + done, total)
        parts.append(embed_images(model, [str(p) for p in paths], cfg, progress=step, tap=dense if m == 0 else None))
    return parts[0] if len(parts) == 1 else concat_ensemble(parts, pipeline.model_weights)


def embed_query(models: Sequence[LandmarkNet], image: Image.Image, pipeline: PipelineConfig) -> np.ndarray:
    """(D,) descriptor of one PIL image with the same models and settings as the database."""
    cfg = pipeline.embed_config()
    parts = [embed_image(model, image, cfg)[None, :] for model in models]
    vec = parts[0] if len(parts) == 1 else concat_ensemble(parts, pipeline.model_weights)
    return vec[0]


def embed_query_regions(models: Sequence[LandmarkNet], image: Image.Image, pipeline: PipelineConfig) -> np.ndarray:
    """(R, D) region descriptors of one PIL image (row 0: its global descriptor, as ``embed_query``)."""
    cfg = pipeline.embed_config()
    parts = [embed_image_regions(model, image, cfg, pipeline.regional) for model in models]
    return concat_regions(parts, pipeline.model_weights)


def database_regions(
    models: Sequence[LandmarkNet], paths: Sequence[str | os.PathLike], pipeline: PipelineConfig,
    out_path: str | os.PathLike | None = None, progress: Progress | None = None,
    dense: DenseCacheFill | None = None, runtime: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """(N, R, D) float16 region descriptors of image files; written to ``out_path`` (and memory-mapped)
    when given, else in memory. ``dense`` and ``runtime`` as in ``embed_database``."""
    return embed_database_regions(models, [str(p) for p in paths], pipeline.embed_config(runtime),
                                  pipeline.regional, out_path, pipeline.model_weights, progress, tap=dense)


# ---------------------------------------------------------------------------------- the search database


@dataclass
class SearchDatabase:
    """Everything query-time search needs besides the models; built once per index version."""

    index: LoadedIndex  # over the DBA'd vectors when the pipeline uses DBA
    pipeline: PipelineConfig
    labels: list[Hashable | None] | None = None  # per index position; None = an unlabelled database
    features: LocalFeatureStore | None = None  # database local features, keyed by the index's ids
    whitening: Whitening | None = None  # applied to the indexed vectors already; queries get it in search_one
    regions: np.ndarray | None = None  # (N, R, D) region descriptors by index position (ml.regional)
    dense: DenseFeatureStore | None = None  # database dense features (ml.dense_matching), keyed by the index's ids

    @property
    def ids(self) -> Sequence[str]:
        return self.index.ids


def open_database(index_dir: str | os.PathLike, pipeline: PipelineConfig, feature_dir: str | os.PathLike,
                  dense: bool = True) -> SearchDatabase:
    """The search database of a built index (``ml.stages.index_build``): the index, memory-mapped, with
    the learned whitening and region descriptors its build left beside it, and the feature caches the
    pipeline verifies with (dense features only when ``dense``: an index built before the pipeline matched
    them has none). Labels are the caller's to set (``SearchDatabase.labels``)."""
    index = load_index(index_dir)
    features = LocalFeatureStore(feature_dir, pipeline.local_features) if pipeline.uses_local_features else None
    dense_features = dense_store(pipeline, feature_dir) if pipeline.uses_dense and dense else None
    return SearchDatabase(index, pipeline, None, features, Whitening.load(index_dir), load_regions(index_dir),
                          dense_features)


def feature_cache_keys(pipeline: PipelineConfig, dense: bool = True) -> set[str]:
    """The names of the per-image feature caches (folders in a feature_dir) that searches with ``pipeline``
    read: RootSIFT when it verifies, dense features when it matches them and ``dense`` (an index built before
    the pipeline matched them has none). The stores below open the same folders; pruning keeps these."""
    keys = {pipeline.local_features.cache_key()} if pipeline.uses_local_features else set()
    if pipeline.uses_dense and dense:
        keys.add(dense_cache_key(pipeline.models[0], pipeline.dense, pipeline.image_size))
    return keys


def dense_fill(pipeline: PipelineConfig, feature_dir: str | os.PathLike | None,
               ids: Sequence[str]) -> DenseCacheFill | None:
    """What caches the dense features of database photos ``ids`` from their embedding's passes, when the
    pipeline matches them and one of its views is the one they are made from (else their own pass does)."""
    if not pipeline.uses_dense or feature_dir is None:
        return None
    return DenseCacheFill.for_embedding(dense_store(pipeline, feature_dir), ids, pipeline.embed_config())


def dense_store(pipeline: PipelineConfig, feature_dir: str | os.PathLike | None,
                model: LandmarkNet | None = None) -> DenseFeatureStore:
    """The cache of the pipeline's dense features (made with its first model, at its image size) in
    ``feature_dir``; ``model`` extracts those not cached yet."""
    if feature_dir is None:
        raise ValueError(f"pipeline {pipeline.name} matches dense features: give a feature_dir to cache them in")
    return DenseFeatureStore(feature_dir, pipeline.dense, pipeline.models[0], pipeline.image_size, model)


# ------------------------------------------------------------------------------------------ the search


@dataclass
class Hit:
    """One ranked database image."""

    image_id: str
    score: float  # the probability that it shows the query's place, in [0, 1] (ml.calibration.ScoreConfig)
    global_score: float  # cosine similarity of the query to the (DBA'd) database descriptor
    inliers: int  # spatially verified inliers (RootSIFT); 0 = not verified or nothing consistent
    verification: Verification | None = None  # inlier correspondences, original-image pixels
    dense_inliers: int = 0  # inliers of dense matching on the backbone's feature maps; 0 = not matched
    fused: float = 0.0  # its ranking evidence: global or region similarity + the verification bonuses
    agrees: float = 0.0  # the query's recognition confidence when it shows the recognised landmark, else 0
    verified: bool = False  # enough inliers to count as the same place (RootSIFT or dense), not chance ones


@dataclass
class SearchResult:
    hits: list[Hit]  # best first
    recognition: Recognition | None  # None without database labels
    timings: dict[str, float]  # seconds per stage


@dataclass
class _Ranking:
    """Mutable state of one query's ranking: database positions, global scores, RootSIFT and dense inliers
    (aligned)."""

    positions: np.ndarray
    scores: np.ndarray
    inliers: np.ndarray
    dense: np.ndarray
    # position -> result, each pair once (None: the photo's features could not be read, it stays unverified)
    checks: dict[int, Verification | None] = field(default_factory=dict)
    dense_checks: dict[int, int] = field(default_factory=dict)  # position -> dense inliers, each pair once

    def reorder(self, order: np.ndarray) -> None:
        self.positions, self.scores = self.positions[order], self.scores[order]
        self.inliers, self.dense = self.inliers[order], self.dense[order]


def crop_to_box(image: Image.Image, bbx: Sequence[float] | None) -> tuple[Image.Image, tuple[float, float]]:
    """The query cropped to its box [x1, y1, x2, y2] (clipped to the image), and the crop's offset."""
    if not bbx:
        return image, (0.0, 0.0)
    x1, y1, x2, y2 = (float(v) for v in bbx)
    x1, y1 = max(0.0, min(x1, image.width - 1)), max(0.0, min(y1, image.height - 1))
    x2, y2 = max(x1 + 1, min(x2, image.width)), max(y1 + 1, min(y2, image.height))
    box = (round(x1), round(y1), round(x2), round(y2))
    return image.crop(box), (float(box[0]), float(box[1]))


ImageSource = Image.Image | str | os.PathLike | bytes


def _fresh(source: ImageSource) -> Image.Image:
    """An unopened-pixels PIL image of ``source``: paths and bytes are reopened (JPEG draft decoding then
    gives the same pixels the database images got); a PIL image is used as it is."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    return Image.open(Path(source))


def search_one(
    database: SearchDatabase,
    models: Sequence[LandmarkNet],
    image: ImageSource,
    top_k: int = 100,
    bbx: Sequence[float] | None = None,
) -> SearchResult:
    """Search for ONE photo: ranked hits with global score and inliers, and landmark candidates.

    The web app's entry point. ``image`` is a PIL image, a path or the uploaded bytes (EXIF rotation is
    applied here; paths and bytes are decoded exactly as database images were). ``bbx`` [x1, y1, x2, y2]
    crops the query first (the revisited-Oxford protocol); returned query points are in the pixel
    coordinates of the uncropped image. Returns ``top_k`` hits, each with its global score, inliers and,
    when verified, the inlier correspondences; with database labels also the recognition (landmark or
    "no landmark", calibrated confidence, candidates).
    """
    pipeline = database.pipeline
    timings: dict[str, float] = {}
    started = time.perf_counter()
    cropped, offset = (None, (0.0, 0.0))
    if bbx:
        cropped, offset = crop_to_box(open_image(_fresh(image)), bbx)
    qfeats = None
    if pipeline.uses_local_features and database.features is not None:
        # Local features first: embedding a PIL JPEG may switch it to draft (reduced-size) decoding.
        source = cropped if cropped is not None else open_image(_fresh(image))
        qfeats = extract_local_features(source, pipeline.local_features)
        qfeats.keypoints = qfeats.keypoints + np.asarray(offset, np.float32)
        timings["local_features"] = time.perf_counter() - started
    t = time.perf_counter()
    source = cropped if cropped is not None else _fresh(image)
    wants_dense = pipeline.uses_dense and database.dense is not None
    view = view_position(pipeline.scales, pipeline.flip) if wants_dense else None
    # The dense features come from the embedding's own scale-1 view when it has one: no extra forward.
    with DenseTap(models[0], pipeline.dense, view) if view is not None else nullcontext() as tap:
        qregions = None
        if pipeline.regional.enabled and database.regions is not None:
            qregions = embed_query_regions(models, source, pipeline)  # the same forward pass gives both
            qvec = qregions[0]
        else:
            qvec = embed_query(models, source, pipeline)
    if database.whitening is not None:  # the database was whitened (from labels, or adapted): the query too
        if qregions is not None:
            qregions = database.whitening.apply_regions(qregions)
            qvec = qregions[0]
        else:
            qvec = database.whitening.apply(qvec)
    timings["embed"] = time.perf_counter() - t
    qdense = tap.features if tap is not None else None
    if wants_dense and qdense is None:
        t = time.perf_counter()
        source = cropped if cropped is not None else _fresh(image)
        qdense = extract_dense(models[0], source, pipeline.dense, pipeline.image_size)
        timings["dense_features"] = time.perf_counter() - t
    result = rank(database, qvec, qfeats, depth=top_k, qregions=qregions, qdense=qdense)
    result.timings = {**timings, **result.timings}
    result.timings["total"] = time.perf_counter() - started
    return result


def ranking_depth(count: int) -> int:
    return count if count <= FULL_RANKING_UP_TO else SHORTLIST


def rank(
    database: SearchDatabase, qvec: np.ndarray, qfeats: LocalFeatures | None, depth: int | None = None,
    qregions: np.ndarray | None = None, qdense: DenseFeatures | None = None,
) -> SearchResult:
    """Rank the database for a query descriptor (and its local features, when verifying; its region
    descriptors, when the pipeline re-scores by regions and the database has them; its dense features,
    when the pipeline matches them and the database has them).

    The search itself always goes ``ranking_depth`` deep, so label insertion and QE see the same
    candidates whatever ``depth`` (the number of hits returned) is. With regions, every search's shortlist
    is re-scored by regional similarity to the query and to the images QE added to it (score-level QE,
    ``ml.regional.expanded_region_scores``).
    """
    pipeline, index = database.pipeline, database.index
    regional = qregions is not None and database.regions is not None and pipeline.regional.enabled
    timings: dict[str, float] = {}
    t = time.perf_counter()
    full = ranking_depth(index.count)
    qvec = np.asarray(qvec, dtype=np.float32)
    state = _search(index, qvec, full)
    if regional:
        _rescore_by_regions(database, state, [(qregions, 1.0)])
    if pipeline.qe.k > 1:
        n = pipeline.qe.k - 1
        added, weights = state.positions[:n], alpha_weights(state.scores[:n], pipeline.qe.alpha)
        qexp = alpha_query_expansion(qvec, index.vectors[added], state.scores[:n], pipeline.qe)
        state = _search(index, qexp, full)
        if regional:
            _rescore_by_regions(database, state, _expansion(database, qregions, added, weights))
    timings["search"] = time.perf_counter() - t
    vcfg = pipeline.verification
    sift = vcfg.top_n > 0 and qfeats is not None and database.features is not None
    dense = pipeline.uses_dense and qdense is not None and database.dense is not None
    if sift or dense:
        t = time.perf_counter()
        _verify_top(database, qfeats if sift else None, qdense if dense else None, state)
        state.reorder(_verified_order(pipeline, state))
        top = slice(0, vcfg.top_n)
        chosen = verified_expansion(state.scores[top], state.inliers[top], vcfg) if sift else None
        if chosen is not None:  # QE over the verified images, then verify again
            picked, weights = chosen
            added = state.positions[top][picked]
            checks, dense_checks = state.checks, state.dense_checks
            state = _search(index, expand_query(qvec, index.vectors[added], weights), full)
            state.checks, state.dense_checks = checks, dense_checks
            if regional:
                _rescore_by_regions(database, state, _expansion(database, qregions, added, weights))
            _verify_top(database, qfeats, qdense if dense else None, state)
            state.reorder(_verified_order(pipeline, state))
        timings["verify"] = time.perf_counter() - t
    recognition = None
    if database.labels is not None:
        t = time.perf_counter()
        recognition = _recognize_and_rerank(database, state, qvec)
        timings["labels"] = time.perf_counter() - t
    fused = _with_dense_bonus(pipeline, state)
    fused = fuse_inliers(fused, state.inliers, vcfg) if vcfg.top_n else fused
    agrees = _label_agreement(database, state, recognition)
    scores = pipeline.scores.probability(fused, agrees)
    if pipeline.scores.rank:  # the score is the ranking key
        order = np.argsort(-scores, kind="stable")
        state.reorder(order)
        fused, agrees, scores = fused[order], agrees[order], scores[order]
    else:  # the pipeline's own order: shown monotone
        scores = monotone(scores)
    top = state.positions[:depth]
    # The global score shown is the similarity to the query itself, not to its expanded version.
    direct = np.asarray(index.vectors[np.sort(top)], dtype=np.float32) @ qvec if len(top) else np.zeros(0)
    direct = dict(zip(np.sort(top).tolist(), direct.tolist(), strict=True))
    hits = [
        Hit(index.ids[p], float(scores[r]), float(direct[int(p)]), int(state.inliers[r]), state.checks.get(int(p)),
            int(state.dense[r]), float(fused[r]), float(agrees[r]), _verified(pipeline, state, r))
        for r, p in enumerate(top)
    ]
    return SearchResult(hits, recognition, timings)


def _label_agreement(database: SearchDatabase, state: _Ranking, recognition: Recognition | None) -> np.ndarray:
    """Per ranked photo: the recognition's confidence where its label is the best candidate landmark, else
    0 (all 0 without labels)."""
    agrees = np.zeros(len(state.positions))
    if recognition is None or not recognition.candidates:
        return agrees
    best, confidence = recognition.candidates[0]
    labels = database.labels
    same = np.fromiter((labels[p] == best for p in state.positions.tolist()), bool, len(state.positions))
    agrees[same] = confidence
    return agrees


def _verified(pipeline: PipelineConfig, state: _Ranking, r: int) -> bool:
    """Enough inliers to be the same place: a handful of chance matches is not a verification."""
    return bool(state.inliers[r] >= pipeline.verification.min_inliers
                or (pipeline.uses_dense and state.dense[r] >= pipeline.dense.min_inliers))


def _expansion(
    database: SearchDatabase, qregions: np.ndarray, added: np.ndarray, weights: np.ndarray
) -> list[tuple[np.ndarray, float]]:
    """The query's regions (weight 1) and those of the database images QE added, with their weights."""
    rows = _region_rows(database, added)
    return [(qregions, 1.0)] + [(rows[i], float(w)) for i, w in enumerate(weights)]


def _region_rows(database: SearchDatabase, positions: np.ndarray) -> np.ndarray:
    """float32 region descriptors of the images at ``positions``, in that order (the memory-mapped rows are
    read in file order)."""
    positions = np.asarray(positions)
    order = np.argsort(positions)
    rows = np.empty((len(positions), *database.regions.shape[1:]), dtype=np.float32)
    rows[order] = database.regions[positions[order]]
    return rows


def _rescore_by_regions(database: SearchDatabase, state: _Ranking, expansion: list[tuple[np.ndarray, float]]) -> None:
    """Replace the scores of the shortlist (the top ``regional.shortlist``) by regional similarity and re-sort.

    A region pair includes the two whole images, so a re-scored candidate never scores below its global
    similarity, and the shortlist stays ahead of the candidates below it."""
    n = min(database.pipeline.regional.shortlist, len(state.positions))
    if n == 0:
        return
    scores = state.scores.copy()
    scores[:n] = expanded_region_scores(expansion, _region_rows(database, state.positions[:n]))
    state.scores = scores
    state.reorder(np.argsort(-scores, kind="stable"))


def _search(index: LoadedIndex, qvec: np.ndarray, k: int) -> _Ranking:
    scores, pos = index.search_positions(qvec[None, :], k)
    keep = pos[0] >= 0
    count = int(keep.sum())
    return _Ranking(pos[0][keep], scores[0][keep], np.zeros(count, np.int64), np.zeros(count, np.int64))


def _verify_top(
    database: SearchDatabase, qfeats: LocalFeatures | None, qdense: DenseFeatures | None, state: _Ranking
) -> None:
    """Verify the top-N not verified yet (each pair once per query) with RootSIFT (given ``qfeats``) and
    dense matching (given ``qdense``), and record both inlier counts in ``state``."""
    pipeline = database.pipeline
    positions = state.positions.tolist()
    if qfeats is not None:
        todo = [p for p in positions[: pipeline.verification.top_n] if p not in state.checks]
        cached = {p: database.features.readable(database.ids[p]) for p in todo}
        state.checks.update({p: None for p, f in cached.items() if f is None})
        todo = [p for p in todo if cached[p] is not None]
        if todo:
            for p, check in zip(todo, verify_many(qfeats, [cached[p] for p in todo], pipeline.matching), strict=True):
                state.checks[p] = check
    if qdense is not None:
        todo = [p for p in positions[: pipeline.dense.top_n] if p not in state.dense_checks]
        cached = {p: database.dense.readable(database.ids[p]) for p in todo}
        state.dense_checks.update({p: 0 for p, f in cached.items() if f is None})
        todo = [p for p in todo if cached[p] is not None]
        if todo:
            found = dense_inliers_many(qdense, [cached[p] for p in todo], pipeline.dense)
            state.dense_checks.update(zip(todo, found.tolist(), strict=True))
    # Every image verified so far keeps its inliers, also one a re-search moved below the top-N.
    checks, dense_checks = state.checks, state.dense_checks
    inliers = (checks[p].inliers if checks.get(p) is not None else 0 for p in positions)
    state.inliers = np.fromiter(inliers, np.int64, len(positions))
    state.dense = np.fromiter((dense_checks.get(p, 0) for p in positions), np.int64, len(positions))


def _with_dense_bonus(pipeline: PipelineConfig, state: _Ranking) -> np.ndarray:
    """The ranking scores with the dense-matching bonus added (unchanged when the pipeline does not match)."""
    return state.scores + pipeline.dense.bonus(state.dense) if pipeline.uses_dense else state.scores


def _verified_order(pipeline: PipelineConfig, state: _Ranking) -> np.ndarray:
    """The order after verification: the scores with the dense bonus, fused with the RootSIFT inliers."""
    return rerank_with_inliers(_with_dense_bonus(pipeline, state), state.inliers, pipeline.verification)


def _recognize_and_rerank(database: SearchDatabase, state: _Ranking, qvec: np.ndarray) -> Recognition:
    pipeline = database.pipeline
    labels = database.labels
    k = max(pipeline.label_vote.k, pipeline.recognition.vote.k, pipeline.bridged.neighbours)
    neighbour_labels = [labels[p] for p in state.positions[:k]]
    # Votes use the similarity to the query itself: after QE the ranking scores are similarities to the
    # expanded query, which leans towards its first neighbour and would inflate that neighbour's vote.
    sims = np.asarray(database.index.vectors[state.positions[:k]], dtype=np.float32) @ qvec
    verified = state.inliers[:k] if pipeline.verification.top_n > 0 else None
    recognition = recognize(neighbour_labels, sims, verified, pipeline.recognition)
    method = pipeline.label_rerank.method
    if method == "discriminative":
        vote = predict_labels(neighbour_labels, sims, verified, pipeline.label_vote)
        if vote.confidence > pipeline.label_rerank.threshold:
            ranked_labels = [labels[p] for p in state.positions]
            order = discriminative_rerank(
                np.arange(len(state.positions)), ranked_labels, vote.label, vote.confidence, None,
                pipeline.label_rerank,
            )
            state.reorder(order)
    elif method in ("boost", "bridged"):
        ranked_labels = [labels[p] for p in state.positions]
        if method == "boost":
            vote = predict_labels(neighbour_labels, sims, verified, pipeline.label_vote)
            state.scores = label_distance_boost(state.scores, ranked_labels, vote.label, pipeline.label_rerank.boost)
        else:
            qconf = landmark_confidences(sims, neighbour_labels, pipeline.bridged)
            dconf = known_label_confidences(ranked_labels, pipeline.bridged)
            state.scores = bridged_scores(state.scores, qconf, dconf, pipeline.bridged)
        if pipeline.verification.top_n > 0 or pipeline.uses_dense:
            state.reorder(_verified_order(pipeline, state))
        else:
            state.reorder(np.argsort(-state.scores, kind="stable"))
    return recognition


