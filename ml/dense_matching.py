"""Spatial verification on the backbone's own feature maps (Deep Spatial Matching, Simeoni et al., CVPR 2019).

RootSIFT verification (``ml.spatial``) fails on day/night and summer/winter pairs: its detector finds other
keypoints in the other photo, so a true pair gets as few inliers as a random one. The CNN's intermediate
activations need no detector. Every position of a mid-level feature map (lite2's block 4: stride 16, 120
channels) is a local descriptor. Only the positions where the last layer fires hardest are kept, an
attention proxy as in DELF. They are matched by mutual nearest neighbour and verified with a MAGSAC++
homography on grid coordinates.

In the pipeline (``ml.pipeline``) it is a second verification of the top of the ranking: a database photo
with at least ``min_inliers`` dense inliers gains ``weight * min(cap, inliers) / cap`` on its ranking
score, beside the RootSIFT bonus. Database photos' dense features are computed once and cached on disk
(``DenseFeatureStore``, next to the RootSIFT cache), about 90 KB a photo.

Measured on landmarks-mini: docs/benchmarks.md, "Dense spatial matching in the default pipeline".
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ml.embed import EmbedConfig, normalise, prepare_image, view_position
from ml.models import LandmarkNet
from ml.rerank import capped_bonus
from ml.spatial import (
    FeatureStore,
    LocalFeatures,
    MatchConfig,
    Verification,
    fit_geometry,
    matches_from_similarities,
)

DENSE_KEY_PREFIX = "dense-"  # the start of every dense cache folder's name
MIN_PAIRS = 5  # a homography needs 4 correspondences; fewer than 5 is no evidence


@dataclass(frozen=True)
class DenseMatchConfig:
    """Dense spatial matching of the top of a ranking, and how its inliers change the order."""

    top_n: int = 0  # database photos matched per query; 0 = off
    min_inliers: int = 20  # fewer is no evidence (unrelated pairs get 8-10, docs/benchmarks-archive.md)
    inlier_cap: int = 60  # inliers beyond this add nothing
    weight: float = 1.0  # ranking score + weight * min(cap, inliers) / cap, for photos with >= min_inliers
    block: int = 4  # index into the backbone's ``blocks``; lite2's block 4 has stride 16
    keep: float = 0.5  # share of positions kept, those where the head's activations are strongest
    threshold: float = 1.5  # RANSAC reprojection threshold, in feature-map cells

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0 or self.threshold <= 0 or self.top_n < 0 or self.inlier_cap < 1:
            raise ValueError(
                f"dense matching needs 0 < keep <= 1, threshold > 0, top_n >= 0 and inlier_cap >= 1, got "
                f"keep={self.keep}, threshold={self.threshold}, top_n={self.top_n}, inlier_cap={self.inlier_cap}"
            )

    @property
    def enabled(self) -> bool:
        return self.top_n > 0

    def bonus(self, inliers: np.ndarray) -> np.ndarray:
        """weight * min(cap, inliers) / cap where inliers >= min_inliers, else 0."""
        return (self.weight * capped_bonus(inliers, self.min_inliers, self.inlier_cap)).astype(np.float32)


@dataclass
class DenseFeatures:
    descriptors: np.ndarray  # (K, C) unit rows (float16 when loaded from the cache)
    positions: np.ndarray  # (K, 2) (x, y) in cells of the feature map
    grid: tuple[int, int]  # (width, height) of the feature map

    def __len__(self) -> int:
        return len(self.descriptors)


def _block_and_head(model: LandmarkNet, x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen block's output and the final (activated) feature map of one normalised batch."""
    net = model.backbone
    if not 0 <= block < len(net.blocks):
        raise ValueError(f"block {block} is out of range: the backbone has {len(net.blocks)} blocks")
    x = net.bn1(net.conv_stem(x))
    chosen = None
    for i, stage in enumerate(net.blocks):
        x = stage(x)
        if i == block:
            chosen = x
    return chosen, net.bn2(net.conv_head(x))


@torch.inference_mode()
def extract_dense(
    model: LandmarkNet, image: Image.Image, cfg: DenseMatchConfig | None = None, image_size: int = 512
) -> DenseFeatures:
    """The kept local descriptors of one photo (EXIF rotation honoured, long side ``image_size``).

    A JPEG is decoded as ``ml.embed`` decodes it (draft mode at about ``image_size``), so a query and the
    same file in the database get the same pixels."""
    cfg = cfg or DenseMatchConfig()
    if image_size < 32:
        raise ValueError(f"dense matching needs image_size >= 32, got {image_size}")
    if image.format == "JPEG":
        image.draft("RGB", (image_size, image_size))
    img = ImageOps.exif_transpose(image).convert("RGB")
    device = next(model.parameters()).device
    x = normalise(prepare_image(img, image_size).unsqueeze(0).to(device))
    features, head = _block_and_head(model, x, cfg.block)
    return _kept(features, head, cfg)


def _kept(features: torch.Tensor, head: torch.Tensor, cfg: DenseMatchConfig, i: int = 0) -> DenseFeatures:
    """Image ``i``'s positions of the chosen block's map where the head's activations are strongest."""
    channels, height, width = features.shape[1:]
    # Where the last layer responds strongly, on the chosen block's grid.
    attention = head[i : i + 1].float().clamp(min=0).norm(dim=1, keepdim=True)
    attention = F.interpolate(attention, size=(height, width), mode="bilinear", align_corners=False).flatten()
    count = max(MIN_PAIRS, int(cfg.keep * attention.numel()))
    keep = torch.argsort(attention, descending=True)[:count]
    descriptors = F.normalize(features[i].float().reshape(channels, -1).T[keep], dim=1)
    ys, xs = keep // width, keep % width
    positions = torch.stack([xs, ys], dim=1).float()
    return DenseFeatures(descriptors.cpu().numpy(), positions.cpu().numpy(), (int(width), int(height)))


class DenseTap:
    """Photos' dense features caught, with forward hooks, from a pass through the backbone run for their
    embedding: they then cost no forward pass of their own.

    ``view`` is which of the pass's forward calls to keep (``ml.embed.view_position``: the unmirrored
    scale-1 view gives what ``extract_dense`` computes). ``batch`` holds the features of every image of
    that call (None when it never came), ``features`` the first's (a query's); ``reset`` starts counting
    again for the next batch. Only the entering thread's calls count: a web process with several threads
    runs other searches through the same model at the same time.
    """

    def __init__(self, model: LandmarkNet, cfg: DenseMatchConfig, view: int) -> None:
        blocks = model.backbone.blocks
        if not 0 <= cfg.block < len(blocks):
            raise ValueError(f"block {cfg.block} is out of range: the backbone has {len(blocks)} blocks")
        self.model, self.cfg, self.view = model, cfg, view
        self.batch: list[DenseFeatures] | None = None
        self._calls, self._block, self._handles, self._thread = 0, None, [], None

    @property
    def features(self) -> DenseFeatures | None:
        return self.batch[0] if self.batch else None

    def reset(self) -> None:
        self._calls, self._block, self.batch = 0, None, None

    def __enter__(self) -> DenseTap:
        self._thread = threading.get_ident()
        net = self.model.backbone
        self._handles = [net.blocks[self.cfg.block].register_forward_hook(self._on_block),
                         net.bn2.register_forward_hook(self._on_head)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._block = None

    def _on_block(self, _module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if self._calls == self.view and threading.get_ident() == self._thread:
            self._block = output

    def _on_head(self, _module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        # The head closes each forward call: count the call, and keep the chosen one's features.
        if threading.get_ident() != self._thread:
            return
        if self._calls == self.view and self._block is not None:
            self.batch = [_kept(self._block, output, self.cfg, i) for i in range(len(output))]
            self._block = None
        self._calls += 1


def dense_inliers(query: DenseFeatures, other: DenseFeatures, cfg: DenseMatchConfig | None = None) -> int:
    """Mutual-nearest-neighbour matches of two photos that one homography explains (0 when too few)."""
    return dense_verification(query, other, cfg).inliers


def dense_verification(query: DenseFeatures, other: DenseFeatures, cfg: DenseMatchConfig | None = None) -> Verification:
    """``dense_inliers`` with the inlier correspondences, in cells of each photo's feature map."""
    cfg = cfg or DenseMatchConfig()
    sims = np.asarray(query.descriptors, np.float32) @ np.asarray(other.descriptors, np.float32).T
    pairs = matches_from_similarities(sims, ratio=1.0, mutual=True)  # no ratio test: neighbouring cells look alike
    match = MatchConfig(threshold=cfg.threshold, min_matches=MIN_PAIRS)
    return fit_geometry(_as_local(query), _as_local(other), pairs, match)


def cells_to_pixels(points: np.ndarray, grid: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Feature-map cells (x, y) as pixel coordinates (of the cell centres) in an image of ``image_size``."""
    scale = np.array(image_size, np.float32) / np.array(grid, np.float32)
    return (np.asarray(points, np.float32) + 0.5) * scale


def dense_inliers_many(query: DenseFeatures, others: Sequence[DenseFeatures], cfg: DenseMatchConfig) -> np.ndarray:
    return np.array([dense_inliers(query, other, cfg) for other in others], dtype=np.int64)


def _as_local(feats: DenseFeatures) -> LocalFeatures:
    """Grid positions as keypoints, so ``ml.spatial`` fits the geometry."""
    return LocalFeatures(np.asarray(feats.positions, np.float32), feats.descriptors, feats.grid)


class DenseFeatureStore(FeatureStore[DenseFeatures]):
    """Dense features of database photos, cached per model, image size and extraction setting.

    ``model`` is needed only to extract features not cached yet; a search process only reads."""

    kind = "dense features"

    def __init__(self, folder: str | os.PathLike, cfg: DenseMatchConfig, model_spec: str, image_size: int,
                 model: LandmarkNet | None = None, memory_items: int = 4096):
        self.cfg, self.image_size, self.model = cfg, image_size, model
        super().__init__(folder, cache_key(model_spec, cfg, image_size), memory_items)

    def extract(self, path: str | os.PathLike) -> DenseFeatures:
        if self.model is None:
            raise ValueError(f"no dense features cached for {path} and no model to extract them with")
        with Image.open(path) as image:
            return extract_dense(self.model, image, self.cfg, self.image_size)

    def _to_arrays(self, feats: DenseFeatures) -> dict[str, np.ndarray]:
        return {"descriptors": np.asarray(feats.descriptors, np.float16),
                "positions": np.asarray(feats.positions, np.int16), "grid": np.array(feats.grid, np.int64)}

    def _from_arrays(self, data: Mapping[str, np.ndarray]) -> DenseFeatures:
        return DenseFeatures(data["descriptors"], data["positions"].astype(np.float32),
                             tuple(int(v) for v in data["grid"]))


class DenseCacheFill:
    """Database photos' dense features cached from their embedding's own passes (``ml.embed.embed_images``
    and ``ml.regional.embed_database_regions`` take it as ``tap``): a ``DenseTap`` on the network that
    embeds (the BN-fused copy on the CPU), and after each batch its photos' features go into ``store``.
    The store's own pass (``ensure``) then finds them cached: one forward pass and one decode less per
    photo, and batched on the embedding's device. Photos cached already keep their features."""

    def __init__(self, store: DenseFeatureStore, ids: Sequence[str], view: int) -> None:
        self.store, self.ids, self.view = store, ids, view
        self._tap: DenseTap | None = None
        self.filled = 0  # photos whose features were written

    @classmethod
    def for_embedding(cls, store: DenseFeatureStore, ids: Sequence[str], cfg: EmbedConfig) -> DenseCacheFill | None:
        """None when the embedding's views cannot give the store's features: none is the unmirrored image
        at scale 1, or it is embedded at another size than the store's."""
        view = view_position(cfg.scales, cfg.flip)
        if view is None or cfg.image_size != store.image_size:
            return None
        return cls(store, ids, view)

    def attach(self, net: LandmarkNet) -> DenseTap:
        """The hooks on ``net`` (the network that runs), as a context manager."""
        self._tap = DenseTap(net, self.store.cfg, self.view)
        return self._tap

    def collect(self, positions: Sequence[int]) -> None:
        """Cache the features of the batch just embedded (images ``positions`` of ``ids``)."""
        batch = self._tap.batch
        self._tap.reset()
        if batch is None:  # not caught: the store's own pass extracts them later
            return
        for position, feats in zip(positions, batch, strict=True):
            image_id = self.ids[position]
            if image_id not in self.store:
                self.store.put(image_id, feats)
                self.filled += 1


def cache_key(model_spec: str, cfg: DenseMatchConfig, image_size: int) -> str:
    """The cache folder's name: which model made them (a readable part and a hash of the whole spec), how."""
    name = os.path.basename(str(model_spec).rstrip("/")) or "model"
    digest = hashlib.sha1(str(model_spec).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return f"{DENSE_KEY_PREFIX}{safe}-{digest}-b{cfg.block}-k{cfg.keep:g}-s{image_size}"
