"""Spatial verification on the backbone's own feature maps (Deep Spatial Matching, Simeoni et al., CVPR 2019).

RootSIFT verification (``ml.spatial``) fails on day/night and summer/winter pairs: its detector finds other
keypoints in the other photo, so a true pair gets as few inliers as a random one. The CNN's intermediate
activations need no detector. Every position of a mid-level feature map (lite2's block 4: stride 16, 120
channels) is a local descriptor. Only the positions where the last layer fires hardest are kept, an
attention proxy as in DELF. They are matched by mutual nearest neighbour and verified with a MAGSAC++
homography on grid coordinates.

Measured on landmarks-mini (docs/benchmarks.md, "A lead for the unlabelled target"):
- at >= 20 inliers it accepts 76 of the 145 true query-database pairs, against 59 for RootSIFT at >= 15;
- it accepts 27 of the 4,785 false ones;
- fused by rank into ``default`` it gave 67.43 -> 73 mAP without labels and 80.7 -> 85 with them.

Not yet a step of ``ml.pipeline``: this module extracts and matches, and the pipeline step is still to build.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ml.embed import normalise, prepare_image
from ml.models import LandmarkNet

MIN_PAIRS = 5  # a homography needs 4 correspondences; fewer than 5 is no evidence


@dataclass(frozen=True)
class DenseMatchConfig:
    block: int = 4  # index into the backbone's ``blocks``; lite2's block 4 has stride 16
    image_size: int = 512
    keep: float = 0.5  # share of positions kept, those where the head's activations are strongest
    threshold: float = 1.5  # RANSAC reprojection threshold, in feature-map cells

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0 or self.threshold <= 0 or self.image_size < 32:
            raise ValueError(
                f"dense matching needs 0 < keep <= 1, threshold > 0 and image_size >= 32, got "
                f"keep={self.keep}, threshold={self.threshold}, image_size={self.image_size}"
            )


@dataclass
class DenseFeatures:
    descriptors: np.ndarray  # (K, C) float32, L2-normalised rows
    positions: np.ndarray  # (K, 2) float32 (x, y) in cells of the feature map

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
def extract_dense(model: LandmarkNet, image: Image.Image, cfg: DenseMatchConfig | None = None) -> DenseFeatures:
    """The kept local descriptors of one photo (EXIF rotation honoured, long side ``cfg.image_size``)."""
    cfg = cfg or DenseMatchConfig()
    img = ImageOps.exif_transpose(image).convert("RGB")
    device = next(model.parameters()).device
    x = normalise(prepare_image(img, cfg.image_size).unsqueeze(0).to(device))
    features, head = _block_and_head(model, x, cfg.block)
    channels, height, width = features.shape[1:]
    # Where the last layer responds strongly, on the chosen block's grid.
    attention = head.float().clamp(min=0).norm(dim=1, keepdim=True)
    attention = F.interpolate(attention, size=(height, width), mode="bilinear", align_corners=False).flatten()
    count = max(MIN_PAIRS, int(cfg.keep * attention.numel()))
    keep = torch.argsort(attention, descending=True)[:count]
    descriptors = F.normalize(features[0].float().reshape(channels, -1).T[keep], dim=1)
    ys, xs = keep // width, keep % width
    positions = torch.stack([xs, ys], dim=1).float()
    return DenseFeatures(descriptors.cpu().numpy(), positions.cpu().numpy())


def dense_inliers(query: DenseFeatures, other: DenseFeatures, cfg: DenseMatchConfig | None = None) -> int:
    """Mutual-nearest-neighbour matches of two photos that one homography explains (0 when too few)."""
    cfg = cfg or DenseMatchConfig()
    if len(query) < MIN_PAIRS or len(other) < MIN_PAIRS:
        return 0
    sims = query.descriptors @ other.descriptors.T
    forward, backward = sims.argmax(axis=1), sims.argmax(axis=0)
    mutual = np.nonzero(backward[forward] == np.arange(len(forward)))[0]
    if len(mutual) < MIN_PAIRS:
        return 0
    src, dst = query.positions[mutual], other.positions[forward[mutual]]
    _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, cfg.threshold)
    return 0 if mask is None else int(mask.sum())
