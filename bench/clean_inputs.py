"""Inputs of the label-cleaning benchmark (``bench/bench_clean.py``): the labelled sets, their descriptors and
the inlier counts of their pairs, cached on disk with the cold-cache cost of making each.

A set is a folder in the landmarks-mini layout (``images.csv`` with ``id,landmark_id``, ``images/<id>.jpg``).
Per set, under ``CACHE/<set>/``: ``vectors.npz`` (ImageNet lite0 GeM descriptors at 512 px, one scale),
``vectors_<model>_<size>_<scales>[_flip].npz`` (other ``Descriptors``: ``"product"`` is what the clean job
embeds with, the default search pipeline's models and embedding settings), ``features/``
(RootSIFT, ``ml.spatial`` defaults), ``pairs.json`` (RootSIFT/MAGSAC inliers by pair), ``dense_features/``
(dense features on ImageNet lite2's block-4 feature maps at 512 px, ``ml.dense_matching.DenseFeatureStore``
with the ``DenseMatchConfig`` defaults: what search's default pipeline matches), ``dense_pairs_b4.json`` (dense
inliers of the same pairs) and ``timings.json`` (seconds spent making each, cold). Pair inliers do not depend on the labels, so every pair any labelling
asks to verify (``ml.clean.pairs_to_verify`` picks among the kNN graph's pairs) is verified once.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA

SETS = {"landmarks-mini": SHARED_DATA / "landmarks-mini", "landmarks-dev/train": SHARED_DATA / "landmarks-dev" / "train"}


@dataclass(frozen=True)
class Descriptors:
    """How a set's photos are embedded for the kNN graph and the descriptor rules (one packaged model)."""

    model: str  # ml.weights spec
    image_size: int = 512
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def file(self) -> str:
        if self == LITE0:
            return "vectors.npz"  # the cache made before other descriptors existed
        scales = "-".join(f"{s:.3f}" for s in self.scales)
        name = self.model.split(":")[-1].replace("tf_efficientnet_", "")
        return f"vectors_{name}_{self.image_size}_{scales}{'_flip' if self.flip else ''}.npz"

    @property
    def timing_suffix(self) -> str:
        """Of its cold embedding cost's keys in the set's timings (``embed_seconds<suffix>``)."""
        return "" if self == LITE0 else f":{self.file}"

    def short(self) -> str:
        name = self.model.split(":")[-1].replace("tf_efficientnet_", "")
        scales = "" if self.scales == (1.0,) else f", {len(self.scales)} scales"
        return f"{name}{scales}{', mirrored' if self.flip else ''}, {self.image_size} px"

    def describe(self) -> str:
        name = self.model.split(":")[-1].replace("tf_efficientnet_", "")
        scales = "one scale" if self.scales == (1.0,) else \
            "scales " + ", ".join(f"{s:.2f}" for s in self.scales)
        return f"ImageNet {name} GeM, {self.image_size} px, {scales}{', mirrored views' if self.flip else ''}"


LITE0 = Descriptors("packaged:tf_efficientnet_lite0")


def product_descriptors() -> Descriptors:
    """What the product's clean job embeds with (``webapp.search.services.cleaning_embedder``): the serving
    index's models and embedding settings, i.e. the default search pipeline's when the index was built with
    it; here with the packaged ImageNet weights of its (first) model, like every descriptor of this bench."""
    from ml.pipeline import get_pipeline

    p = get_pipeline()
    model = p.models[0] if ":" in p.models[0] else f"packaged:{p.models[0]}"
    return Descriptors(model, int(p.image_size), tuple(float(s) for s in p.scales), bool(p.flip))


def descriptors(key: str) -> Descriptors:
    """``"lite0"`` (ImageNet lite0, 512 px, one scale) or ``"product"`` (``product_descriptors``)."""
    if key == "lite0":
        return LITE0
    if key == "product":
        return product_descriptors()
    raise KeyError(f"unknown descriptors {key!r}: lite0 or product")


@dataclass
class LabelledSet:
    name: str
    ids: list[str]
    labels: list[str]
    paths: list[Path]
    vectors: np.ndarray
    cache: Path
    timings: dict = field(default_factory=dict)


def _timings(cache: Path) -> dict:
    path = cache / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_timings(cache: Path, timings: dict) -> None:
    (cache / "timings.json").write_text(json.dumps(timings, indent=1))


def load_set(name: str, cache_root: Path, desc: Descriptors | str = LITE0) -> LabelledSet:
    """The set with its descriptors ``desc`` (computed and cached when missing; cold cost in the timings
    as ``embed_seconds`` for lite0, ``embed_seconds:<file>`` for others)."""
    desc = descriptors(desc) if isinstance(desc, str) else desc
    root = SETS[name]
    cache = cache_root / name.replace("/", "-")
    cache.mkdir(parents=True, exist_ok=True)
    with (root / "images.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows]
    labels = [r["landmark_id"] for r in rows]
    paths = [root / "images" / f"{i}.jpg" for i in ids]
    timings = _timings(cache)
    path = cache / desc.file
    vectors = None
    if path.exists():
        data = np.load(path)
        if list(data["ids"]) == ids:
            vectors = data["vectors"]
    if vectors is None:
        import torch

        from ml.embed import EmbedConfig, embed_images
        from ml.weights import load_model

        torch.set_num_threads(1)
        model = load_model(desc.model)
        t0 = time.perf_counter()
        vectors = embed_images(model, paths, EmbedConfig(image_size=desc.image_size, scales=desc.scales,
                                                         flip=desc.flip, device="cpu", num_workers=0,
                                                         torch_threads=1))
        timings[f"embed_seconds{desc.timing_suffix}"] = round(time.perf_counter() - t0, 2)
        timings[f"embed_photos{desc.timing_suffix}"] = len(ids)
        np.savez(path, vectors=vectors, ids=np.array(ids))
        _save_timings(cache, timings)
    return LabelledSet(name, ids, labels, paths, vectors, cache, timings)


class CachedPairs:
    """Inlier counts of pairs, ``count(a, b)``, remembered in a JSON file so later runs count nothing twice;
    the seconds spent counting pairs cold are kept in the set's timings as ``<prefix>verify_seconds`` and
    ``<prefix>verify_pairs``."""

    def __init__(self, s: LabelledSet, file: str, prefix: str, count: Callable[[str, str], int]) -> None:
        self.set, self.prefix, self.count = s, prefix, count
        self.file = s.cache / file
        self.known = json.loads(self.file.read_text()) if self.file.exists() else {}
        self.computed = 0
        self.compute_seconds = 0.0

    def __call__(self, a: str, b: str) -> int:
        key = f"{min(a, b)}:{max(a, b)}"
        if key not in self.known:
            t0 = time.perf_counter()
            self.known[key] = int(self.count(a, b))
            self.compute_seconds += time.perf_counter() - t0
            self.computed += 1
        return self.known[key]

    def save(self) -> None:
        if self.computed:
            _add_timing(self.set, self.prefix + "verify", self.compute_seconds, self.computed, "pairs")
            self.computed, self.compute_seconds = 0, 0.0
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.known))
        tmp.replace(self.file)


def _add_timing(s: LabelledSet, what: str, seconds: float, count: int, unit: str) -> None:
    """Adds cold work to the set's timings: ``<what>_seconds`` and ``<what>_<unit>`` (pairs, photos)."""
    t = s.timings
    t[f"{what}_seconds"] = round(t.get(f"{what}_seconds", 0) + seconds, 2)
    t[f"{what}_{unit}"] = t.get(f"{what}_{unit}", 0) + count
    _save_timings(s.cache, t)


def rootsift_pairs(s: LabelledSet) -> CachedPairs:
    """RootSIFT/MAGSAC inliers (``ml.spatial`` defaults); features extracted first when not cached."""
    from ml.spatial import LocalFeatureStore, verify_pair

    store = LocalFeatureStore(s.cache / "features")
    t0 = time.perf_counter()
    extracted = store.ensure(list(zip(s.ids, s.paths, strict=True)))
    if extracted:
        _add_timing(s, "extract", time.perf_counter() - t0, extracted, "photos")
    return CachedPairs(s, "pairs.json", "", lambda a, b: verify_pair(store.get(a), store.get(b)).inliers)


DENSE_MODEL = "packaged:tf_efficientnet_lite2"  # search's default pipeline matches lite2's block 4 (ImageNet here)
DENSE_IMAGE_SIZE = 512


def dense_pairs(s: LabelledSet) -> CachedPairs:
    """Dense inliers (``ml.dense_matching.dense_inliers``, ``DenseMatchConfig`` defaults: lite2 block 4, half
    the positions kept, MAGSAC on the grid); timings under ``dense_*``."""
    import torch

    from ml.dense_matching import DenseFeatureStore, DenseMatchConfig, dense_inliers
    from ml.weights import load_model

    cfg = DenseMatchConfig()
    store = DenseFeatureStore(s.cache / "dense_features", cfg, DENSE_MODEL, DENSE_IMAGE_SIZE)
    if any(i not in store for i in s.ids):
        torch.set_num_threads(1)
        store.model = load_model(DENSE_MODEL)
        t0 = time.perf_counter()
        extracted = store.ensure(list(zip(s.ids, s.paths, strict=True)))
        _add_timing(s, "dense_extract", time.perf_counter() - t0, extracted, "photos")
    return CachedPairs(s, "dense_pairs_b4.json", "dense_",
                       lambda a, b: dense_inliers(store.get(a), store.get(b), cfg))


def _warm(s: LabelledSet, k: int, pairs: CachedPairs, what: str, progress_every: int) -> CachedPairs:
    from ml.clean import knn_graph

    _, nbrs = knn_graph(s.vectors, k)
    todo = sorted({(min(i, int(j)), max(i, int(j))) for i, row in enumerate(nbrs) for j in row if j >= 0})
    for n, (a, b) in enumerate(todo, 1):
        pairs(s.ids[a], s.ids[b])
        if n % progress_every == 0:
            pairs.save()
            print(f"{s.name}: {n}/{len(todo)} {what} pairs", flush=True)
    pairs.save()
    return pairs


def warm(s: LabelledSet, k: int, progress_every: int = 500) -> CachedPairs:
    """Verify every pair of the set's k-NN graph (the superset of what any labelling asks to verify)."""
    return _warm(s, k, rootsift_pairs(s), "RootSIFT", progress_every)


def warm_dense(s: LabelledSet, k: int, progress_every: int = 2000) -> CachedPairs:
    """Dense-match every pair of the set's k-NN graph (features extracted first when not cached)."""
    return _warm(s, k, dense_pairs(s), "dense", progress_every)
