"""Regional descriptors: R-MAC regions pooled from the same feature maps as the global descriptor.

A photo of a landmark often shows it small, cropped, or beside clutter, so one descriptor of the whole
image mixes the landmark with everything around it. Following R-MAC (Tolias, Sicre & Jegou, ICLR 2016;
cirtorch ``rmac``), every image also gets descriptors of square regions at ``levels`` scales (side
2 min(H, W) / (l + 1) at level l, neighbours overlapping by about 40 %), GeM-pooled like the global
descriptor, averaged over the same test scales and passed through the same neck. Two images are compared
by their best match over all pairs of regions (Razavian et al., "Visual instance retrieval with deep
convolutional networks", ITE 2016), so a landmark framed differently in two photos still finds its
counterpart. It is used to re-score the top of the global ranking (``ml.pipeline``).

Region 0 of an image is the whole image: exactly its global descriptor. Database regions are stored as one
(N, R, D) float16 array aligned with the index (``regions.npy`` beside it); an image with fewer than R
regions is padded with zero rows, which never win a maximum (GeM descriptors are non-negative).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ml.atomic_files import write_npy
from ml.embed import (
    SIZE_MULTIPLE,
    EmbedConfig,
    PassTap,
    _ModelPrepared,
    _views,
    decoded_batches,
    embedding_size,
    l2_normalize,
    normalise,
    prepare_image,
    tapped,
)
from ml.models import LandmarkNet

FILE_NAME = "regions.npy"
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of the image
Progress = Callable[[int, int], None]


@dataclass
class RegionalConfig:
    """Re-scoring of the top of the global ranking by regional similarity."""

    levels: int = 0  # R-MAC levels; 0 = off (whole-image descriptors only)
    shortlist: int = 400  # candidates of each global search re-scored (SuperGlobal re-ranks its top 400)
    overlap: float = 0.4  # R-MAC's overlap of neighbouring regions

    def __post_init__(self) -> None:
        if self.levels < 0 or self.shortlist < 1:
            raise ValueError(f"regional levels must be >= 0 and shortlist >= 1, got {self.levels}, {self.shortlist}")

    @property
    def enabled(self) -> bool:
        return self.levels > 0


# -------------------------------------------------------------------------------------------- regions


def rmac_boxes(height: int, width: int, levels: int, overlap: float = 0.4) -> list[Box]:
    """R-MAC regions of a ``height`` x ``width`` feature grid as fractions, the whole image first.

    As cirtorch's ``rmac``: the long side gets the number of extra steps that makes neighbouring level-1
    squares overlap closest to ``overlap``; level l has l (+ extra) squares of side 2 min / (l + 1) per
    side. A region equal to one already listed (level 1 of a square image) is not repeated.
    """
    boxes: list[Box] = [(0.0, 0.0, 1.0, 1.0)]
    short, long = min(height, width), max(height, width)
    extra = 0
    if long > short:
        steps = np.arange(2, 8)
        b = (long - short) / (steps - 1)
        extra = int(np.argmin(np.abs((short**2 - short * b) / short**2 - overlap))) + 1
    extra_w, extra_h = (extra, 0) if width > height else (0, extra)
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        for y in _starts(height, side, level + extra_h):
            for x in _starts(width, side, level + extra_w):
                box = (x / width, y / height, (x + side) / width, (y + side) / height)
                if box not in boxes:
                    boxes.append(box)
    return boxes


def _starts(length: int, side: int, count: int) -> list[int]:
    """``count`` evenly spaced starts of a window of ``side`` cells along ``length`` cells."""
    if count <= 1:
        return [0]
    step = (length - side) / (count - 1)
    return [math.floor(i * step) for i in range(count)]


def boxes_for(width: int, height: int, cfg: RegionalConfig) -> list[Box]:
    """The regions of an image embedded at ``width`` x ``height`` pixels (its base-scale feature grid)."""
    return rmac_boxes(max(1, height // SIZE_MULTIPLE), max(1, width // SIZE_MULTIPLE), cfg.levels, cfg.overlap)


def _pooled_powers(features: torch.Tensor, boxes: Sequence[Box], p: float, eps: float) -> torch.Tensor:
    """(B, R, C): mean of clamp(x, eps)^p over each region of a (B, C, h, w) map (GeM before the root)."""
    h, w = features.shape[-2:]
    powered = features.float().clamp(min=eps).pow(p)
    out = []
    for x0, y0, x1, y1 in boxes:
        r0, c0 = math.floor(y0 * h), math.floor(x0 * w)
        r1, c1 = max(r0 + 1, math.ceil(y1 * h)), max(c0 + 1, math.ceil(x1 * w))
        out.append(powered[:, :, r0:r1, c0:c1].mean(dim=(-2, -1)))
    return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------------------- extraction


@torch.inference_mode()
def embed_regions_batch(
    model: LandmarkNet, images: torch.Tensor, cfg: EmbedConfig, regional: RegionalConfig
) -> torch.Tensor:
    """(B, R, D) L2-normalised region descriptors of a uint8 batch of same-sized images on the device.

    Per view (scale, flip) GeM over each region, then the views' power mean, then the neck: the same
    computation as ``ml.embed.embed_batch``, so region 0 (the whole image) is the global descriptor.
    """
    device = images.device
    x = normalise(images)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    height, width = x.shape[-2:]
    boxes = boxes_for(width, height, regional)
    p = float(model.pool.p.detach().float().mean())
    use_amp = cfg.amp and device.type == "cuda"
    total, views = None, 0
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        for i, view in enumerate(_views(x, cfg.scales, cfg.flip)):
            features = model.forward_features(view)
            if cfg.flip and i % 2 == 1:
                features = features.flip(-1)  # back to the unmirrored layout the boxes describe
            pooled = _pooled_powers(features, boxes, p, model.pool.eps)
            total = pooled if total is None else total + pooled
            views += 1
        # (mean over views of mean x^p)^(1/p) = the power mean over views of each view's GeM
        pooled = (total / views).pow(1.0 / p)
        b, r, c = pooled.shape
        emb = model.forward_neck(pooled.reshape(b * r, c)).reshape(b, r, -1)
    return F.normalize(emb.float(), dim=-1)


def embed_image_regions(
    model: LandmarkNet, image: Image.Image, cfg: EmbedConfig, regional: RegionalConfig
) -> np.ndarray:
    """(R, D) region descriptors of one PIL image, decoded as ``ml.embed.embed_image`` decodes it."""
    if image.format == "JPEG":
        image.draft("RGB", (cfg.image_size, cfg.image_size))
    img = ImageOps.exif_transpose(image).convert("RGB")
    with _ModelPrepared(model, cfg, fuse=False) as (net, device):
        out = embed_regions_batch(net, prepare_image(img, cfg.image_size).unsqueeze(0).to(device), cfg, regional)
    return out[0].cpu().numpy()


def region_count(item: Any, cfg: EmbedConfig, regional: RegionalConfig) -> int:
    size = embedding_size(item, cfg.image_size)
    return len(boxes_for(*size, regional)) if size else 1


def embed_database_regions(
    models: Sequence[LandmarkNet],
    items: Sequence[Any],
    cfg: EmbedConfig,
    regional: RegionalConfig,
    out_path: str | os.PathLike | None = None,
    model_weights: Sequence[float] | None = None,
    progress: Progress | None = None,
    tap: PassTap | None = None,
) -> np.ndarray:
    """(N, R, D) float16 region descriptors of image files (zero-padded to the most regions of any image);
    ``tap`` sees the first model's forward passes (``ml.embed.embed_images``).

    With ``out_path`` they are written one image at a time into a memory-mapped temp file renamed into
    place (memory stays bounded whatever N), and returned memory-mapped; without it, kept in memory.
    Several models: each region's descriptors are concatenated as ``ml.embed.concat_ensemble`` does.
    """
    rows = max([region_count(item, cfg, regional) for item in items], default=1)
    shape = (len(items), rows, sum(m.embedding_dim for m in models))
    if out_path is None:
        out = np.zeros(shape, np.float16)
        _fill_regions(out, models, items, cfg, regional, model_weights, progress, tap)
        return out
    write_npy(out_path, shape, np.float16,
              lambda out: _fill_regions(out, models, items, cfg, regional, model_weights, progress, tap))
    return np.load(out_path, mmap_mode="r")


def _fill_regions(
    out: np.ndarray, models: Sequence[LandmarkNet], items: Sequence[Any], cfg: EmbedConfig,
    regional: RegionalConfig, model_weights: Sequence[float] | None, progress: Progress | None,
    tap: PassTap | None = None,
) -> None:
    """Decoded and batched as ``ml.embed.embed_images`` does (decode workers, BN fused on the CPU)."""
    done = 0
    with ExitStack() as stack:
        nets = [stack.enter_context(_ModelPrepared(m, cfg, fuse=cfg.fuse_bn)) for m in models]
        stack.enter_context(tapped(tap, nets[0][0]))
        for groups, size in decoded_batches(items, cfg):
            for positions, images in groups:
                parts = [embed_regions_batch(net, images.to(device), cfg, regional).cpu().numpy()
                         for net, device in nets]
                if tap is not None:
                    tap.collect(positions)
                for j, position in enumerate(positions):
                    regions = concat_regions([part[j] for part in parts], model_weights)
                    out[position, : len(regions)] = regions
            done += size
            if progress is not None:
                progress(done, len(items))


def concat_regions(parts: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Region descriptors of an ensemble: per region, the models' descriptors weighted and concatenated (A.4)."""
    if len(parts) == 1:
        return np.asarray(parts[0], dtype=np.float32)
    weights = [1.0] * len(parts) if weights is None else list(weights)
    return l2_normalize(np.concatenate([w * l2_normalize(p) for p, w in zip(parts, weights, strict=True)], axis=1))


def whole_image_vectors(regions: np.ndarray) -> np.ndarray:
    """(N, D) float32 global descriptors from (N, R, D) regions: region 0 is the whole image, so the one
    pass that makes regions also gives the vectors to index."""
    return l2_normalize(np.asarray(regions[:, 0], dtype=np.float32))


def load_regions(directory: str | os.PathLike) -> np.ndarray | None:
    """The (N, R, D) regions stored in an index folder, memory-mapped; None when it has none."""
    path = Path(directory) / FILE_NAME
    return np.load(path, mmap_mode="r") if path.is_file() else None


# ------------------------------------------------------------------------------------------- scoring


def region_similarity(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Best match over all region pairs: query (R, D) against candidates (N, R', D) -> (N,) similarities."""
    q = np.asarray(query, dtype=np.float32)
    c = np.asarray(candidates, dtype=np.float32)
    if len(c) == 0:
        return np.zeros(0, np.float32)
    sims = c.reshape(-1, c.shape[-1]) @ q.T  # (N * R', R)
    return sims.reshape(len(c), -1).max(axis=1)


def expanded_region_scores(
    expansion: Sequence[tuple[np.ndarray, float]], candidates: np.ndarray
) -> np.ndarray:
    """Score-level query expansion with regional similarity: sum_i w_i S(E_i, c) / |sum_i w_i E_i|.

    ``expansion`` is [(regions, weight)], the query itself first with weight 1. With whole-image vectors
    this is exactly the cosine to the alpha-QE vector L2(sum w_i e_i); the norm uses S(E_i, E_j) in place
    of the dot products, with S(E, E) = 1.
    """
    total = np.zeros(len(candidates), np.float32)
    for regions, weight in expansion:
        total += np.float32(weight) * region_similarity(regions, candidates)
    norm_sq = 0.0
    for i, (ri, wi) in enumerate(expansion):
        for j, (rj, wj) in enumerate(expansion):
            sim = 1.0 if i == j else float(region_similarity(ri, rj[None])[0])
            norm_sq += wi * wj * sim
    return total / np.float32(math.sqrt(max(norm_sq, 1e-12)))
