"""Training data: manifests, aspect-ratio grouped batches, augmentations, and streaming from tar shards.

- ``TrainingManifest``: (image_id, path, label_index) per image plus the label <-> landmark id maps, from a
  GLDv2 ``train.csv`` (id,url,landmark_id), a GLDv2-clean csv (landmark_id,images), any data set folder
  ``ml.datasets.read_dataset`` reads, or plain records (the Django side builds them from the database).
- ``GroupedBatchSampler``: lyakaap's aspect-ratio grouping (ml-reference A.4): h/w quantised with
  ``bisect_right`` on the template's bins, each image resized to its group's fixed (W, H), batches cut per
  group and ordered by their first element's position in the epoch's sample order.
- ``ManifestDataset``: loads, resizes and augments (reference "soft"/"middle": random crop then scale back,
  shear, brightness/contrast) and normalises with ``ml.weights.IMAGE_MEAN/IMAGE_STD``. Every random draw
  of a sample comes from a seed the sampler hands over with its index, so an epoch is reproducible whatever
  the number of loader workers (exact resume in ``ml.train`` relies on this).
- ``TarShardDataset``: an ``IterableDataset`` over GLDv2-style tar shards (members ``a/b/c/<id>.jpg`` or
  ``<id>.jpg``), read one shard at a time as a stream, never extracted, with a shuffle buffer; the
  download-train-discard pattern of the reference (F) without the download. ``write_tar_shards`` writes them.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info
from torchvision.transforms.v2 import functional as TF

from ml.atomic_files import replacing
from ml.datasets import DatasetError, ImageRecord, gldv2_image_path, read_dataset
from ml.images import load_rgb
from ml.weights import IMAGE_MEAN, IMAGE_STD

Progress = Callable[[int, int], None]

# --- templates and aspect groups (reference A.4) ---------------------------------------------------

# (W, H) per aspect group, gid 0..4 (or 0..2); a name with "2" uses five groups.
TEMPLATES: dict[str, tuple[tuple[int, int], ...]] = {
    "SS2": ((480, 320), (480, 352), (384, 384), (352, 480), (320, 480)),
    "S2": ((512, 352), (512, 384), (448, 448), (384, 512), (352, 512)),
    "SM2": ((736, 512), (704, 544), (608, 608), (544, 704), (512, 736)),
    "M2": ((800, 544), (800, 608), (704, 704), (608, 800), (544, 800)),
    "L2": ((800, 544), (800, 608), (800, 800), (608, 800), (544, 800)),
    "S": ((512, 384), (448, 448), (384, 512)),
    "M": ((800, 608), (704, 704), (608, 800)),
    "L": ((800, 608), (800, 800), (608, 800)),
    "SS": ((384, 256), (256, 256), (256, 384)),
}
BINS_5 = (0.67, 0.77, 1.33, 1.5)
BINS_3 = (0.77, 1.33)


def template_sizes(template: str | Sequence[tuple[int, int]], max_side: int | None = None) -> list[tuple[int, int]]:
    """The (W, H) sizes of a template by name (or given), optionally scaled so the longest side is ``max_side``.

    Scaling keeps each group's shape; small sizes let tests run the same grouping at 64 px.
    """
    if isinstance(template, str) and template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATES)}")
    sizes = list(TEMPLATES[template]) if isinstance(template, str) else [tuple(s) for s in template]
    if len(sizes) not in (1, 3, 5):
        raise ValueError(f"a template has 3 or 5 sizes (one per aspect group) or 1, got {len(sizes)}")
    if max_side:
        scale = max_side / max(max(w, h) for w, h in sizes)
        sizes = [(max(8, round(w * scale)), max(8, round(h * scale))) for w, h in sizes]
    return sizes


def aspect_bins(num_groups: int) -> tuple[float, ...]:
    return BINS_5 if num_groups == 5 else BINS_3


def aspect_group(aspect: float, num_groups: int = 5) -> int:
    """Group id of an image with aspect = height / width (``bisect_right`` on the bins, as the reference)."""
    return bisect.bisect_right(aspect_bins(num_groups), aspect)


def aspect_groups(aspects: Sequence[float] | np.ndarray, num_groups: int = 5) -> np.ndarray:
    bins = aspect_bins(num_groups)
    return np.array([bisect.bisect_right(bins, float(a)) for a in aspects], dtype=np.int64)


# --- manifests -------------------------------------------------------------------------------------

class ManifestEntry(NamedTuple):
    image_id: str
    path: Path | None
    label: int


@dataclass
class TrainingManifest:
    """Training images with their label indices (0..num_classes-1) and the landmark id of each label.

    ``paths`` is None for large GLDv2 lists: paths are then derived from ``image_root`` on demand
    (``[train/]a/b/c/<id>.jpg``), which keeps 4M rows cheap. ``aspects`` (height / width), when known,
    feeds the aspect-ratio grouping; ``measure_aspects`` fills it from the files' headers.
    """

    image_ids: list[str]
    labels: np.ndarray
    landmark_ids: list[str]
    paths: list[Path | None] | None = None
    image_root: Path | None = None
    aspects: np.ndarray | None = None
    _label_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.image_ids):
            raise ValueError(f"{len(self.image_ids)} image ids but {len(self.labels)} labels")
        if self.paths is not None and len(self.paths) != len(self.image_ids):
            raise ValueError(f"{len(self.image_ids)} image ids but {len(self.paths)} paths")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.landmark_ids)):
            raise ValueError(f"labels must lie in 0..{len(self.landmark_ids) - 1}")
        self._label_index = {lid: i for i, lid in enumerate(self.landmark_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> ManifestEntry:
        return ManifestEntry(self.image_ids[i], self.path(i), int(self.labels[i]))

    @property
    def num_classes(self) -> int:
        return len(self.landmark_ids)

    def label_of_landmark(self, landmark_id: str) -> int:
        return self._label_index[str(landmark_id)]

    def path(self, i: int) -> Path | None:
        if self.paths is not None:
            return self.paths[i]
        if self.image_root is None:
            return None
        return gldv2_image_path(self.image_root, self.image_ids[i])

    def class_counts(self) -> list[int]:
        """Images per label index (what ``ModelConfig.class_counts`` wants for dynamic margins)."""
        return np.bincount(self.labels, minlength=self.num_classes).tolist()

    def label_by_image(self) -> dict[str, int]:
        """image id -> label index: what a tar-shard stream needs."""
        return dict(zip(self.image_ids, self.labels.tolist(), strict=True))

    def measure_aspects(self, progress: Progress | None = None) -> np.ndarray:
        """Read every image's header (no decoding) for its height / width; EXIF rotation respected."""
        aspects = np.empty(len(self), dtype=np.float64)
        for i in range(len(self)):
            aspects[i] = _file_aspect(self.path(i))
            if progress and (i + 1) % 1000 == 0:
                progress(i + 1, len(self))
        if progress:
            progress(len(self), len(self))
        self.aspects = aspects
        return aspects

    # -- builders --

    @classmethod
    def from_records(
        cls,
        records: Iterable[ImageRecord | tuple[str, Path | str | None, str] | Mapping[str, Any]],
        min_images_per_class: int = 1,
    ) -> TrainingManifest:
        """From (image_id, path, landmark_id) tuples, ``ImageRecord``s or dicts with those keys
        (plus optional ``width``/``height`` for the aspect grouping). Unlabelled images are skipped."""
        rows = []
        for rec in records:
            iid, path, lid, aspect = _record_fields(rec)
            if lid is not None and str(lid) != "":
                rows.append((iid, Path(path) if path is not None else None, str(lid), aspect))
        return cls._build(rows, min_images_per_class)

    @classmethod
    def from_csv(cls, csv_path: Path | str, image_root: Path | str | None = None,
                 min_images_per_class: int = 1) -> TrainingManifest:
        """From a GLDv2 ``train.csv`` (id,url,landmark_id) or a clean csv (landmark_id,images).

        Images are looked up under ``image_root`` (default: the csv's folder) at ``[train/]a/b/c/<id>.jpg``.
        """
        csv_path = Path(csv_path)
        root = Path(image_root) if image_root is not None else csv_path.parent
        pairs = list(_gldv2_pairs(csv_path))
        ids = [iid for iid, _ in pairs]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"{csv_path}: an image id appears more than once")
        manifest = cls._build([(iid, None, lid, None) for iid, lid in pairs], min_images_per_class)
        manifest.image_root = root
        return manifest

    @classmethod
    def from_dataset(cls, root: Path | str, splits: Sequence[str] | None = None,
                     min_images_per_class: int = 1) -> TrainingManifest:
        """From any data set folder ``ml.datasets.read_dataset`` knows, optionally only some splits."""
        listing = read_dataset(Path(root))
        images = [im for im in listing.images if splits is None or im.split in splits]
        return cls.from_records(images, min_images_per_class)

    @classmethod
    def _build(cls, rows: list[tuple[str, Path | None, str, float | None]],
               min_images_per_class: int) -> TrainingManifest:
        counts: dict[str, int] = {}
        for _, _, lid, _ in rows:
            counts[lid] = counts.get(lid, 0) + 1
        rows = [r for r in rows if counts[r[2]] >= min_images_per_class]
        landmark_ids = sorted({r[2] for r in rows}, key=_natural)
        index = {lid: i for i, lid in enumerate(landmark_ids)}
        has_paths = any(r[1] is not None for r in rows)
        has_aspects = bool(rows) and all(r[3] is not None for r in rows)
        return cls(
            image_ids=[r[0] for r in rows],
            labels=np.array([index[r[2]] for r in rows], dtype=np.int64),
            landmark_ids=landmark_ids,
            paths=[r[1] for r in rows] if has_paths else None,
            aspects=np.array([r[3] for r in rows], dtype=np.float64) if has_aspects else None,
        )


def _record_fields(rec: Any) -> tuple[str, Any, Any, float | None]:
    if isinstance(rec, ImageRecord):
        return rec.image_id, rec.path, rec.landmark_id, None
    if isinstance(rec, Mapping):
        w, h = rec.get("width"), rec.get("height")
        aspect = float(h) / float(w) if w and h else None
        return str(rec["image_id"]), rec.get("path"), rec.get("landmark_id"), aspect
    iid, path, lid = rec[:3]
    return str(iid), path, lid, None


def _gldv2_pairs(csv_path: Path) -> Iterator[tuple[str, str]]:
    """(image id, landmark id) from either GLDv2 csv form; a clean csv lists its ids space-separated."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = set(h.strip() for h in reader.fieldnames or [])
            reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
            if {"id", "landmark_id"} <= header:
                for n, row in enumerate(reader, start=1):
                    iid, lid = (row["id"] or "").strip(), (row["landmark_id"] or "").strip()
                    _check_row(csv_path, n, iid, lid)
                    yield iid, lid
            elif {"landmark_id", "images"} <= header:
                for n, row in enumerate(reader, start=1):
                    lid = (row["landmark_id"] or "").strip()
                    for iid in (row["images"] or "").split():
                        _check_row(csv_path, n, iid, lid)
                        yield iid, lid
            else:
                raise DatasetError(f"{csv_path}: columns {sorted(header)}; expected id,url,landmark_id "
                                   "(GLDv2) or landmark_id,images (GLDv2-clean)")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: unreadable CSV: {exc}") from exc


def _check_row(csv_path: Path, n: int, iid: str, lid: str) -> None:
    if len(iid) < 3 or not iid.isalnum() or not lid:
        raise DatasetError(f"{csv_path} row {n}: bad image id {iid!r} or landmark id {lid!r}")


def _natural(s: str) -> tuple[int, int, str]:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _file_aspect(path: Path | None) -> float:
    if path is None:
        raise ValueError("image has no path; cannot measure its aspect ratio")
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            w, h = h, w
    return h / w


# --- samplers --------------------------------------------------------------------------------------

def epoch_order(num_samples: int, seed: int, epoch: int, labels: np.ndarray | None = None,
                balance_power: float = 0.0) -> np.ndarray:
    """The epoch's sample order: a permutation (RandomSampler), or, with ``balance_power`` > 0, as many
    draws with replacement, each image weighted count(class)^-power (1 = every class equally likely)."""
    rng = np.random.default_rng([seed, epoch])
    if balance_power <= 0 or labels is None:
        return rng.permutation(num_samples)
    counts = np.bincount(labels)
    weights = counts[labels].astype(np.float64) ** -balance_power
    return rng.choice(num_samples, size=num_samples, replace=True, p=weights / weights.sum())


def group_batches(order: Sequence[int], group_ids: np.ndarray, batch_size: int,
                  drop_uneven: bool = True) -> list[list[int]]:
    """maskrcnn-benchmark's GroupedBatchSampler step: split ``order`` by group, cut each group into batches,
    and order the batches by the position of their first element in ``order``."""
    open_batch: dict[int, list[int]] = {}
    batches: list[tuple[int, list[int]]] = []
    for position, idx in enumerate(order):
        gid = int(group_ids[idx])
        batch = open_batch.get(gid)
        if batch is None:
            batch = open_batch[gid] = []
            batches.append((position, batch))  # appended in first-element order already
        batch.append(int(idx))
        if len(batch) == batch_size:
            del open_batch[gid]
    return [b for _, b in batches if not drop_uneven or len(b) == batch_size]


class GroupedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Aspect-grouped batches of ``(index, sample_seed)`` for ``ManifestDataset``.

    The order of epoch e depends only on (seed, e); ``start_batch`` skips the batches a resumed run has
    already trained on. Without aspects every image is in one group (plain random batches).
    """

    def __init__(self, num_samples: int, batch_size: int, group_ids: np.ndarray | None = None, seed: int = 0,
                 drop_uneven: bool = True, labels: np.ndarray | None = None, balance_power: float = 0.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.group_ids = group_ids if group_ids is not None else np.zeros(num_samples, dtype=np.int64)
        self.seed = seed
        self.drop_uneven = drop_uneven
        self.labels = labels
        self.balance_power = balance_power
        self.epoch = 0
        self.start_batch = 0
        self._cache: tuple[int, list[list[tuple[int, int]]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[list[int]]:
        return [[idx for idx, _ in batch] for batch in self._keyed_batches()]

    def _keyed_batches(self) -> list[list[tuple[int, int]]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        order = epoch_order(self.num_samples, self.seed, self.epoch, self.labels, self.balance_power)
        # A sample's seed follows its position in the epoch order, not its batch, so batch 2b and
        # 2 x batch b with accumulation see the same augmented images.
        seeds = np.random.default_rng([self.seed, self.epoch, 99]).integers(0, 2**63 - 1, size=len(order))
        positions = group_batches(np.arange(len(order)), self.group_ids[order], self.batch_size, self.drop_uneven)
        keyed = [[(int(order[p]), int(seeds[p])) for p in batch] for batch in positions]
        self._cache = (self.epoch, keyed)
        return keyed

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self._keyed_batches()[self.start_batch:]

    def __len__(self) -> int:
        return max(0, len(self._keyed_batches()) - self.start_batch)


def sample_seed(seed: int, epoch: int, position: int, stream: int = 0) -> int:
    """A 63-bit seed for one sample's augmentation, fixed by its place in the run."""
    return int(np.random.SeedSequence([seed, epoch, stream, position]).generate_state(2, np.uint64)[0] >> 1)


# --- transforms ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """Reference augmentations (A.4): random crop of h*(1±U(scale)) x w*(1±U(scale)) scaled back to size,
    shear in degrees, additive brightness and multiplicative contrast limits, optional horizontal flip."""

    scale_limit: float = 0.0
    shear: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    hflip: bool = False


AUGMENTATIONS = {
    "none": Augmentation(),
    "soft": Augmentation(scale_limit=0.2, brightness=0.1),
    "middle": Augmentation(scale_limit=0.3, shear=4.0, brightness=0.1, contrast=0.1),
}


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def random_crop_then_scale(img: torch.Tensor, limit: float, g: torch.Generator) -> torch.Tensor:
    """lyakaap's RandomCropThenScaleToOriginalSize on a (C, H, W) float tensor: a crop whose sides are
    (1 ± U(limit)) times the image's, at a random place (reflect-padded where it is larger), resized back."""
    _, h, w = img.shape
    ch = max(1, round(h * (1 + _uniform(g, -limit, limit))))
    cw = max(1, round(w * (1 + _uniform(g, -limit, limit))))
    top = math.floor((h - ch) * _uniform(g, 0, 1))
    left = math.floor((w - cw) * _uniform(g, 0, 1))
    pad_t, pad_l = max(0, -top), max(0, -left)
    pad_b, pad_r = max(0, top + ch - h), max(0, left + cw - w)
    if pad_t or pad_l or pad_b or pad_r:
        mode = "reflect" if max(pad_t, pad_b) < h and max(pad_l, pad_r) < w else "replicate"
        img = F.pad(img.unsqueeze(0), (pad_l, pad_r, pad_t, pad_b), mode=mode).squeeze(0)
        top, left = top + pad_t, left + pad_l
    crop = img[:, top:top + ch, left:left + cw]
    return F.interpolate(crop.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True).squeeze(0)


def augment(img: torch.Tensor, aug: Augmentation, g: torch.Generator) -> torch.Tensor:
    """Apply ``aug`` to a (C, H, W) float tensor in [0, 1]; all randomness from ``g``."""
    if aug.scale_limit > 0:
        img = random_crop_then_scale(img, aug.scale_limit, g)
    if aug.shear > 0:
        shear = _uniform(g, -aug.shear, aug.shear)
        img = TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[shear, 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR)
    if aug.hflip and float(torch.rand((), generator=g)) < 0.5:
        img = img.flip(-1)
    if aug.brightness > 0 or aug.contrast > 0:
        # albumentations' RandomBrightnessContrast (brightness_by_max): img * alpha + beta.
        alpha = 1 + _uniform(g, -aug.contrast, aug.contrast)
        beta = _uniform(g, -aug.brightness, aug.brightness)
        img = (img * alpha + beta).clamp(0, 1)
    return img


def normalize(img: torch.Tensor, mean: Sequence[float] = IMAGE_MEAN, std: Sequence[float] = IMAGE_STD) -> torch.Tensor:
    return TF.normalize(img, list(mean), list(std))


def image_to_tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB image resized to exactly (W, H) (no crop: the aspect bends slightly, as the reference does),
    as a (3, H, W) float tensor in [0, 1]."""
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def load_training_image(source: Path | str | io.BytesIO, size: tuple[int, int], aug: Augmentation,
                        seed: int | None) -> torch.Tensor:
    """Load, resize to (W, H), augment with a generator seeded by ``seed`` (None: no augmentation), normalise."""
    img = load_rgb(source, max_side=2 * max(size))
    x = image_to_tensor(img, size)
    if seed is not None and aug != AUGMENTATIONS["none"]:
        x = augment(x, aug, torch.Generator().manual_seed(seed))
    return normalize(x)


# --- datasets --------------------------------------------------------------------------------------

class ManifestDataset(Dataset):
    """Map-style dataset over a manifest; keys are indices or ``(index, sample_seed)`` pairs.

    Each image is resized to its aspect group's template size (one fixed size when ``sizes`` has one
    entry or aspects are unknown); returns ``(image tensor, label index)``.
    """

    def __init__(self, manifest: TrainingManifest, sizes: Sequence[tuple[int, int]],
                 augmentation: Augmentation | str = "none") -> None:
        self.manifest = manifest
        self.sizes = list(sizes)
        self.augmentation = AUGMENTATIONS[augmentation] if isinstance(augmentation, str) else augmentation
        if len(self.sizes) in (3, 5) and manifest.aspects is not None:
            self.group_ids = aspect_groups(manifest.aspects, len(self.sizes))
        else:
            self.group_ids = np.full(len(manifest), len(self.sizes) // 2, dtype=np.int64)  # the square size

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        idx, seed = key if isinstance(key, tuple) else (key, None)
        entry = self.manifest[idx]
        if entry.path is None:
            raise ValueError(f"image {entry.image_id} has no path")
        size = self.sizes[int(self.group_ids[idx])]
        return load_training_image(entry.path, size, self.augmentation, seed), entry.label


def tar_member_id(name: str) -> str | None:
    """Image id of a shard member ``a/b/c/<id>.jpg`` or ``<id>.jpg``; None for anything else."""
    base = os.path.basename(name)
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in (".jpg", ".jpeg") and stem else None


class TarShardDataset(IterableDataset):
    """Stream ``(image tensor, label index)`` from tar shards, one shard open at a time, never extracted.

    Members whose id ``label_by_image`` does not know (cleaned-out or unlabelled images) are skipped.
    Shards are shuffled per epoch and split across loader workers (and ``world_size`` processes); samples
    pass through a shuffle buffer of ``buffer_size``. Everything random depends on (seed, epoch), so
    ``skip`` (samples already consumed this epoch, per worker when there are several) resumes where each
    worker stopped (the same batches; their interleaving across workers is exact with 0 or 1 worker).
    Every image gets the one size ``size`` (W, H). Yields ``(image, label, worker id)``.
    """

    def __init__(self, shards: Sequence[Path | str], label_by_image: Mapping[str, int], size: tuple[int, int],
                 augmentation: Augmentation | str = "none", buffer_size: int = 256, seed: int = 0,
                 rank: int = 0, world_size: int = 1, landmark_ids: Sequence[str] | None = None) -> None:
        super().__init__()
        # label index -> landmark id (e.g. ``TrainingManifest.landmark_ids``); kept in trained checkpoints.
        self.landmark_ids = list(landmark_ids) if landmark_ids is not None else None
        if not shards:
            raise ValueError("no tar shards given")
        self.shards = [Path(s) for s in shards]
        self.label_by_image = label_by_image
        self.size = tuple(size)
        self.augmentation = AUGMENTATIONS[augmentation] if isinstance(augmentation, str) else augmentation
        self.buffer_size = max(1, buffer_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.skip: list[int] = [0]

    def set_epoch(self, epoch: int, skip: int | Sequence[int] = 0) -> None:
        """Start epoch ``epoch``; ``skip`` samples per worker (an int: for worker 0 / no workers)."""
        self.epoch = epoch
        self.skip = [skip] if isinstance(skip, int) else list(skip)

    def _my_shards(self, worker: int, num_workers: int) -> list[Path]:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        shards = [self.shards[i] for i in rng.permutation(len(self.shards))]
        shards = shards[self.rank::self.world_size]
        return shards[worker::num_workers]

    def _raw_samples(self, shards: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
        for shard in shards:
            # "r|*": a forward-only stream, so a shard never needs seeking or extracting (and may be .tar.gz).
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    image_id = tar_member_id(member.name) if member.isfile() else None
                    if image_id is None or image_id not in self.label_by_image:
                        continue
                    data = tar.extractfile(member)
                    if data is not None:
                        yield image_id, data.read()

    def _shuffled(self, samples: Iterator[tuple[str, bytes]], rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
        buffer: list[tuple[str, bytes]] = []
        for sample in samples:
            if len(buffer) < self.buffer_size:
                buffer.append(sample)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], sample = sample, buffer[j]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        skip = self.skip[worker] if worker < len(self.skip) else 0
        stream = self._shuffled(self._raw_samples(self._my_shards(worker, num_workers)), rng)
        for n, (image_id, data) in enumerate(stream):
            if n < skip:
                continue  # resumed: bytes read but not decoded
            seed = sample_seed(self.seed, self.epoch, n, stream=1 + self.rank * 1024 + worker)
            x = load_training_image(io.BytesIO(data), self.size, self.augmentation, seed)
            yield x, self.label_by_image[image_id], worker


def list_shards(folder: Path | str) -> list[Path]:
    """The ``.tar`` (or ``.tar.gz``/``.tgz``) files in ``folder``, sorted by name."""
    folder = Path(folder)
    shards = sorted(p for p in folder.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    if not shards:
        raise DatasetError(f"{folder}: no tar shards (*.tar, *.tar.gz)")
    return shards


def write_tar_shards(records: Iterable[ImageRecord | ManifestEntry | tuple[str, Path | str]], out_dir: Path | str,
                     images_per_shard: int = 1000, layout: str = "gldv2", prefix: str = "shard",
                     progress: Progress | None = None) -> list[Path]:
    """Pack image files into tar shards of ``images_per_shard``, members ``a/b/c/<id>.jpg`` (``layout="gldv2"``)
    or ``<id>.jpg`` (``"flat"``). Each shard is written to a temporary name and renamed when complete."""
    if images_per_shard < 1:
        raise ValueError("images_per_shard must be at least 1")
    if layout not in ("gldv2", "flat"):
        raise ValueError(f"layout must be 'gldv2' or 'flat', got {layout!r}")
    items = [_id_and_path(r) for r in records]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, len(items), images_per_shard)):
        final = out_dir / f"{prefix}-{s:06d}.tar"
        with replacing(final) as tmp, tarfile.open(tmp, mode="w") as tar:
            for image_id, path in items[start:start + images_per_shard]:
                name = f"{image_id}.jpg" if layout == "flat" else "/".join([*image_id[:3], f"{image_id}.jpg"])
                tar.add(str(path), arcname=name, recursive=False)
        shards.append(final)
        if progress:
            progress(min(start + images_per_shard, len(items)), len(items))
    return shards


def _id_and_path(rec: Any) -> tuple[str, Path]:
    if isinstance(rec, ImageRecord):
        return rec.image_id, rec.path
    iid, path = rec[0], rec[1]
    if path is None:
        raise ValueError(f"image {iid} has no path to pack")
    if len(str(iid)) < 3:
        raise ValueError(f"image id {iid!r} is shorter than the 3 characters a GLDv2 path needs")
    return str(iid), Path(path)
