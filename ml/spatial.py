"""Local features and spatial verification: the DELF stand-in that needs no download.

Features: OpenCV SIFT on the grey image shrunk to ``max_side``, the ``max_keypoints`` strongest by
response, described as RootSIFT (Arandjelovic & Zisserman 2012: L1-normalise, square root, so the dot
product of two descriptors is the Hellinger kernel). Keypoints are stored in the pixel coordinates of the
original image (after its EXIF rotation), so "why this match" lines can be drawn on any rendition of it.

Database features are computed once and cached on disk, one ``<id>.npz`` per image (raw SIFT as uint8,
128 bytes per keypoint; RootSIFT is derived when loaded), each written atomically.

Verification of a (query, database) pair: putative correspondences by nearest neighbour with Lowe's ratio
test (and optionally mutual nearest neighbours), then a robust geometric fit with OpenCV's MAGSAC++
(``cv2.USAC_MAGSAC``), a homography or a fundamental matrix. The score is the number of inliers, the
evidence lyakaap's pipeline uses (reference A.2, A.7).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import cv2
import numpy as np
from PIL import Image, ImageOps

from ml.atomic_files import replacing

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
F = TypeVar("F")

SIFT_KEY_PREFIX = "sift-root-"  # the start of every RootSIFT cache folder's name


@dataclass
class LocalFeatureConfig:
    """How local features are extracted; part of the cache's identity (see ``cache_key``)."""

    max_side: int = 1024  # long side the detector sees; DELF's largest scale is about this size
    max_keypoints: int = 1000  # strongest by response (DELF keeps 1000, reference A.2)
    contrast_threshold: float = 0.02  # lower than OpenCV's 0.04: keep enough candidates to choose from

    def cache_key(self) -> str:
        return f"{SIFT_KEY_PREFIX}s{self.max_side}-k{self.max_keypoints}-c{self.contrast_threshold:g}"


@dataclass
class MatchConfig:
    """How a pair is verified."""

    ratio: float = 0.8  # Lowe's ratio on descriptor distances; lower = stricter
    mutual: bool = True  # also require the match to be a nearest neighbour the other way round
    model: str = "homography"  # "homography" or "fundamental"
    threshold: float = 0.0  # RANSAC threshold in pixels of the original image; 0 = 0.5 % of its diagonal
    max_iters: int = 2000
    confidence: float = 0.999
    min_matches: int = 8  # fewer putative matches than this: no fit, 0 inliers

    def __post_init__(self) -> None:
        if self.model not in ("homography", "fundamental"):
            raise ValueError(f"model must be 'homography' or 'fundamental', got {self.model!r}")


@dataclass
class LocalFeatures:
    """Keypoints (N, 2) float32 in original-image pixels (x, y) and raw SIFT descriptors (N, 128) uint8."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]  # (width, height) of the original image, EXIF rotation applied

    def __len__(self) -> int:
        return len(self.keypoints)

    def root_sift(self) -> np.ndarray:
        """(N, 128) float32 RootSIFT, unit L2 norm: dot products are Hellinger kernels."""
        d = self.descriptors.astype(np.float32)
        d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
        return np.sqrt(d)


@dataclass
class Verification:
    """Result of verifying one pair: inlier count and the inlier correspondences for drawing."""

    inliers: int
    putative: int  # matches that passed the ratio / mutual tests
    query_points: np.ndarray  # (inliers, 2) float32, query original-image pixels
    database_points: np.ndarray  # (inliers, 2) float32, database original-image pixels


# ----------------------------------------------------------------------------------------------- extract


_SIFT_CACHE: dict[tuple[float, int], cv2.SIFT] = {}


def _sift(cfg: LocalFeatureConfig) -> cv2.SIFT:
    # Ask for 2x the cap: OpenCV's nfeatures cut happens before duplicate orientations are merged.
    key = (cfg.contrast_threshold, cfg.max_keypoints)
    if key not in _SIFT_CACHE:
        _SIFT_CACHE[key] = cv2.SIFT_create(nfeatures=2 * cfg.max_keypoints, contrastThreshold=cfg.contrast_threshold)
    return _SIFT_CACHE[key]


def open_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """A PIL image with its EXIF rotation applied (paths are opened; images are used as given)."""
    img = Image.open(source) if not isinstance(source, Image.Image) else source
    return ImageOps.exif_transpose(img)


def extract_local_features(
    source: str | os.PathLike | Image.Image, cfg: LocalFeatureConfig | None = None
) -> LocalFeatures:
    """RootSIFT-ready local features of one image (path or PIL image, EXIF rotation applied)."""
    cfg = cfg or LocalFeatureConfig()
    img = open_image(source)
    width, height = img.size
    grey = img.convert("L")
    scale = min(1.0, cfg.max_side / max(width, height))
    if scale < 1.0:
        grey = grey.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
    keypoints, desc = _sift(cfg).detectAndCompute(np.asarray(grey), None)
    if desc is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), (width, height))
    response = np.array([k.response for k in keypoints], dtype=np.float32)
    keep = np.argsort(-response, kind="stable")[: cfg.max_keypoints]
    xy = np.array([keypoints[i].pt for i in keep], dtype=np.float32)
    # Pixel centres: a point at x in the shrunk image is at (x + 0.5) / scale - 0.5 in the original.
    xy = (xy + 0.5) / np.float32(scale) - 0.5
    return LocalFeatures(xy, np.clip(np.rint(desc[keep]), 0, 255).astype(np.uint8), (width, height))


# ------------------------------------------------------------------------------------------------- cache


def cache_file_name(image_id: str) -> str:
    """The name of ``image_id``'s file in a feature cache; an id that could name another path is refused."""
    if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
        raise ValueError(f"image id {image_id!r} cannot name a cache file")
    return f"{image_id}.npz"


class FeatureStore(Generic[F]):
    """Per-image features on disk (``<folder>/<key>/<id>.npz``, each written atomically) with a small memory
    cache. Subclasses say how features are extracted from an image file and how they map to arrays."""

    kind = "features"  # what they are, in error messages

    def __init__(self, folder: str | os.PathLike, key: str, memory_items: int = 4096):
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.memory_items = memory_items
        self._memory: OrderedDict[str, F] = OrderedDict()

    def extract(self, path: str | os.PathLike) -> F:
        raise NotImplementedError

    def _to_arrays(self, feats: F) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _from_arrays(self, data: Mapping[str, np.ndarray]) -> F:
        raise NotImplementedError

    def path(self, image_id: str) -> Path:
        return self.folder / cache_file_name(image_id)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._memory or self.path(image_id).is_file()

    def put(self, image_id: str, feats: F) -> None:
        # Readers see the old file or the whole new one.
        with replacing(self.path(image_id)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **self._to_arrays(feats))
        self._remember(image_id, feats)

    def get(self, image_id: str) -> F:
        if image_id in self._memory:
            self._memory.move_to_end(image_id)
            return self._memory[image_id]
        path = self.path(image_id)
        try:
            with np.load(path) as data:
                feats = self._from_arrays(data)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # cut short, overwritten, not ours
            raise ValueError(f"unreadable {self.kind} of {image_id} ({path}): {exc}") from exc
        self._remember(image_id, feats)
        return feats

    def readable(self, image_id: str) -> F | None:
        """``get``, or None (logged) when the file is missing or unreadable (lost, cut short, from another
        setting): a search then ranks that photo as unverified, "why this match" makes them from the photo."""
        try:
            return self.get(image_id)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("%s of %s cannot be read (searches rank it unverified): %s", self.kind, image_id, exc)
            return None

    def _remember(self, image_id: str, feats: F) -> None:
        self._memory[image_id] = feats
        self._memory.move_to_end(image_id)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def ensure(
        self, items: Sequence[tuple[str, str | os.PathLike]], progress: Progress | None = None
    ) -> int:
        """Extract and store features for every (id, path) not cached yet; returns how many were computed."""
        computed = 0
        for done, (image_id, path) in enumerate(items, start=1):
            if image_id not in self:
                self.put(image_id, self.extract(path))
                computed += 1
            if progress is not None:
                progress(done, len(items))
        return computed


class LocalFeatureStore(FeatureStore[LocalFeatures]):
    """RootSIFT features of database images (raw SIFT as uint8, 128 bytes a keypoint)."""

    kind = "local features"

    def __init__(self, folder: str | os.PathLike, cfg: LocalFeatureConfig | None = None, memory_items: int = 4096):
        self.cfg = cfg or LocalFeatureConfig()
        super().__init__(folder, self.cfg.cache_key(), memory_items)

    def extract(self, path: str | os.PathLike) -> LocalFeatures:
        return extract_local_features(path, self.cfg)

    def _to_arrays(self, feats: LocalFeatures) -> dict[str, np.ndarray]:
        return {"keypoints": feats.keypoints, "descriptors": feats.descriptors,
                "image_size": np.array(feats.image_size, dtype=np.int64)}

    def _from_arrays(self, data: Mapping[str, np.ndarray]) -> LocalFeatures:
        return LocalFeatures(data["keypoints"], data["descriptors"], tuple(int(v) for v in data["image_size"]))


# ----------------------------------------------------------------------------------------------- matching


def putative_matches(
    query: np.ndarray, database: np.ndarray, ratio: float = 0.8, mutual: bool = True
) -> np.ndarray:
    """(M, 2) index pairs (query row, database row) of RootSIFT descriptors passing the tests."""
    if len(query) < 2 or len(database) < 2:
        return np.zeros((0, 2), np.int64)
    return matches_from_similarities(query @ database.T, ratio, mutual)


def matches_from_similarities(sims: np.ndarray, ratio: float = 0.8, mutual: bool = True) -> np.ndarray:
    """Ratio-test (and mutual-NN) matches from a (query x database) similarity block; overwrites ``sims``."""
    if sims.shape[0] < 2 or sims.shape[1] < 2:
        return np.zeros((0, 2), np.int64)
    rows = np.arange(sims.shape[0])
    nn = sims.argmax(axis=1)
    s_best = sims[rows, nn]
    back = sims.argmax(axis=0) if mutual else None
    sims[rows, nn] = -1.0  # now the row maximum is the second-best similarity
    s_second = sims.max(axis=1)
    # Unit vectors: squared distance = 2 - 2 * similarity; the ratio test compares distances.
    d1 = np.sqrt(np.maximum(2.0 - 2.0 * s_best, 0.0))
    d2 = np.sqrt(np.maximum(2.0 - 2.0 * s_second, 0.0))
    ok = d1 < ratio * d2
    if back is not None:
        ok &= back[nn] == rows
    rows = np.flatnonzero(ok)
    return np.stack([rows, nn[rows]], axis=1).astype(np.int64)


def verify_pair(
    query: LocalFeatures,
    database: LocalFeatures,
    cfg: MatchConfig | None = None,
    query_root: np.ndarray | None = None,
    database_root: np.ndarray | None = None,
) -> Verification:
    """Inliers of the geometric model fitted to the putative matches of two images.

    ``*_root`` may pass RootSIFT descriptors already computed (a query verified against many images).
    """
    cfg = cfg or MatchConfig()
    q_root = query.root_sift() if query_root is None else query_root
    d_root = database.root_sift() if database_root is None else database_root
    return fit_geometry(query, database, putative_matches(q_root, d_root, cfg.ratio, cfg.mutual), cfg)


def fit_geometry(query: LocalFeatures, database: LocalFeatures, pairs: np.ndarray, cfg: MatchConfig) -> Verification:
    """MAGSAC++ fit of the configured model to putative ``pairs``; inliers and their coordinates."""
    empty = np.zeros((0, 2), np.float32)
    if len(pairs) < max(cfg.min_matches, 8 if cfg.model == "fundamental" else 4):
        return Verification(0, len(pairs), empty, empty)
    src = query.keypoints[pairs[:, 0]].astype(np.float32)
    dst = database.keypoints[pairs[:, 1]].astype(np.float32)
    threshold = cfg.threshold or 0.005 * float(np.hypot(*database.image_size))
    try:
        if cfg.model == "homography":
            model, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, maxIters=cfg.max_iters,
                                             confidence=cfg.confidence)
        else:
            model, mask = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, threshold, cfg.confidence,
                                                 cfg.max_iters)
    except cv2.error as exc:  # degenerate configurations (all points on a line, ...)
        log.debug("geometric fit failed: %s", exc)
        return Verification(0, len(pairs), empty, empty)
    if model is None or mask is None:
        return Verification(0, len(pairs), empty, empty)
    inl = mask.ravel().astype(bool)
    return Verification(int(inl.sum()), len(pairs), src[inl], dst[inl])


def verify_many(
    query: LocalFeatures,
    database: Sequence[LocalFeatures],
    cfg: MatchConfig | None = None,
    query_root: np.ndarray | None = None,
    batch_keypoints: int = 65_536,
) -> list[Verification]:
    """``verify_pair`` of one query against several images, the same results, faster.

    The descriptor similarities of many images come from one large matrix product (one BLAS call uses
    every core and runs near peak, where many 1000 x 1000 products do not).
    """
    cfg = cfg or MatchConfig()
    q_root = query.root_sift() if query_root is None else query_root
    results: list[Verification] = []
    start = 0
    while start < len(database):
        group, total = [], 0
        while start + len(group) < len(database) and (not group or total + len(database[start + len(group)]) <= batch_keypoints):
            total += len(database[start + len(group)])
            group.append(database[start + len(group)])
        roots = [d.root_sift() for d in group]
        sims = q_root @ np.concatenate(roots).T if total and len(q_root) else np.zeros((len(q_root), 0), np.float32)
        offset = 0
        for feats, root in zip(group, roots, strict=True):
            block = sims[:, offset : offset + len(root)]
            offset += len(root)
            pairs = matches_from_similarities(block, cfg.ratio, cfg.mutual) if len(root) >= 2 and len(q_root) >= 2 \
                else np.zeros((0, 2), np.int64)
            results.append(fit_geometry(query, feats, pairs, cfg))
        start += len(group)
    return results
