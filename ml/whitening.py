"""Learned whitening of global descriptors from the database's labels (Radenović et al., "Fine-tuning CNN
image retrieval with no human annotation", TPAMI 2018, section 3.4: "Lw"), as cirtorch's ``whitenlearn``.

Two linear steps learned on labelled database descriptors: (1) whiten the differences between images of
the same landmark, so directions in which photos of one place vary (viewpoint, light, clutter) are shrunk;
(2) rotate onto the principal directions of the result, so the output dimensions are ordered by how much
they tell landmarks apart. Applied to query and database alike, then L2-normalised again.

A few hundred labelled images cannot estimate a D x D covariance (D = 1280 for lite2), so the intra-class
covariance is shrunk towards a multiple of the identity (``shrinkage`` x its mean eigenvalue): with 145
images and 34 landmarks, 0.1 to 0.3 measured best (docs/benchmarks-archive.md) and 1.0 already halves the gain.
Unsupervised PCA-whitening learned on so small a database hurt (61.8 -> 59 or less), so there is no
label-free variant here. On landmarks-mini Lw lifts lite2 multi-scale from 61.8 to 71.9 mAP on its own
(preset ``lite2-ms-lw``), but the product default does not use it: see the note in ml.pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.atomic_files import replacing

FILE_NAME = "whitening.npz"


@dataclass
class WhiteningConfig:
    method: str = "none"  # "none" or "learned" (Lw; used only when the database has labels)
    shrinkage: float = 0.1
    min_pairs: int = 10  # fewer same-landmark pairs than this: too little to learn from, no whitening

    def __post_init__(self) -> None:
        if self.method not in ("none", "learned"):
            raise ValueError(f"whitening method must be 'none' or 'learned', got {self.method!r}")
        if self.shrinkage < 0:
            raise ValueError(f"whitening shrinkage must be >= 0, got {self.shrinkage}")


@dataclass
class AdaptationConfig:
    """Whitening learned from the collection itself, no labels needed: each photo's ``neighbours`` nearest
    photos are spatially verified (RootSIFT), the pairs with at least ``min_inliers`` show the same place,
    and Lw is learned from them, for the global and the region descriptors alike."""

    neighbours: int = 0  # nearest neighbours of each photo checked; 0 = no adaptation
    min_inliers: int = 15
    shrinkage: float = 0.1
    min_pairs: int = 20  # fewer verified pairs: too little to learn from, the vectors stay as they are

    @property
    def enabled(self) -> bool:
        return self.neighbours > 0


@dataclass
class Whitening:
    """x -> normalise((x - mean) @ projection)."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, D')

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        single = x.ndim == 1
        out = (np.atleast_2d(x) - self.mean) @ self.projection
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def apply_regions(self, regions: np.ndarray) -> np.ndarray:
        """(..., R, D) region descriptors whitened alike; all-zero rows (padding) stay zero."""
        x = np.asarray(regions, dtype=np.float32)
        flat = x.reshape(-1, x.shape[-1])
        padding = ~flat.any(axis=1)
        out = self.apply(flat)
        out[padding] = 0.0
        return out.reshape(x.shape[:-1] + (out.shape[-1],))

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / FILE_NAME
        with replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=self.mean, projection=self.projection)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Whitening | None:
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            return None
        with np.load(path) as data:
            return cls(data["mean"].astype(np.float32), data["projection"].astype(np.float32))


def same_label_pairs(labels: Sequence[Hashable | None]) -> np.ndarray:
    """(P, 2) index pairs i < j of images with the same (known) label."""
    groups: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            groups.setdefault(label, []).append(i)
    pairs = [(a, b) for members in groups.values() for n, a in enumerate(members) for b in members[n + 1:]]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def learn_whitening(
    vectors: np.ndarray, labels: Sequence[Hashable | None], config: WhiteningConfig
) -> Whitening | None:
    """Lw from labelled database descriptors; None when the config says none or there are too few pairs."""
    if config.method == "none":
        return None
    return whitening_from_pairs(vectors, same_label_pairs(labels), config.shrinkage, config.min_pairs)


def whitening_from_pairs(vectors: np.ndarray, pairs: np.ndarray, shrinkage: float, min_pairs: int) -> Whitening | None:
    """Lw from (P, 2) pairs of rows of ``vectors`` known to show the same place (same label, or spatially
    verified); None with fewer than ``min_pairs``."""
    x = np.asarray(vectors, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) < min_pairs:
        return None
    mean = x.mean(axis=0)
    diffs = x[pairs[:, 0]] - x[pairs[:, 1]]
    intra = diffs.T @ diffs / len(diffs)
    intra += shrinkage * np.trace(intra) / len(intra) * np.eye(len(intra))
    eigval, eigvec = np.linalg.eigh(intra)
    whiten = eigvec / np.sqrt(np.maximum(eigval, 1e-12))  # x @ whiten = intra^-1/2, rotated
    z = (x - mean) @ whiten
    eigval2, eigvec2 = np.linalg.eigh(z.T @ z / len(z))
    rotation = eigvec2[:, np.argsort(-eigval2)]
    return Whitening(mean.astype(np.float32), (whiten @ rotation).astype(np.float32))
