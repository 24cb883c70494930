"""Global descriptors for images: extraction (multi-scale, flip TTA), PCA whitening, ensembles, shard files.

How one image becomes a vector (``embed_images`` / ``embed_image``):

1. load as RGB with its EXIF rotation applied (``ml.images.load_rgb``), resize keeping the aspect so the
   long side is ``image_size``, each side rounded to a multiple of 32 (the backbone's stride);
2. normalise with the weights' ``IMAGE_MEAN``/``IMAGE_STD`` (``ml.weights``);
3. for each view (every scale in ``scales``, each also horizontally flipped when ``flip``): the backbone
   feature map, GeM-pooled to g_v (B, C) *before* the Linear+BN neck;
4. views are averaged the cirtorch way (reference C.4) in GeM-power space, v = (mean_v g_v^p)^(1/p), with p
   the model's own GeM p. Because each g_v is itself a p-power mean over positions, v is the GeM over
   all views' positions with every view weighted equally. (cirtorch averages its final descriptors this
   way; ours continue through a neck, and averaging before it keeps the neck's input in the range it was
   trained on. lyakaap's A.5 averages the FC+BN outputs instead: the neck is affine at eval, so that is
   the same as averaging pooled vectors with p = 1.)
5. descriptor = BN(FC(v)), L2-normalised.

Decoding and resizing run in DataLoader worker processes, overlapping the forward passes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from ml.images import load_rgb
from ml.models import LandmarkNet, fuse_conv_bn
from ml.weights import IMAGE_MEAN, IMAGE_STD

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
SIZE_MULTIPLE = 32  # EfficientNet's total stride: sides that divide evenly keep every feature cell whole


@dataclass
class EmbedConfig:
    """How to extract descriptors; defaults are tuned for CPU throughput (see docs/benchmarks.md)."""

    image_size: int = 512  # long side, pixels
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False  # also embed the mirrored image and average
    batch_size: int = 1
    num_workers: int = 1  # decode/resize processes; 0 = in the calling process
    channels_last: bool = True
    fuse_bn: bool = True  # fold BatchNorm into convolutions for batch extraction on the CPU (same outputs, faster)
    device: str = "auto"  # "auto" = cuda when available, else cpu
    amp: bool = True  # float16 autocast, on cuda only
    # Torch intra-op threads while extracting; None = the process's budget OMP_NUM_THREADS when set (a web
    # process's SEARCH_THREADS, one of several workers on a machine), else one per core not used by a
    # decode worker. On a busy 2-core machine 2 OpenMP threads ran ~10x slower than 1 (docs/benchmarks.md).
    torch_threads: int | None = None

    def resolved_threads(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        budget = os.environ.get("OMP_NUM_THREADS", "").strip()
        if budget.isdigit() and int(budget) > 0:
            return int(budget)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores - max(0, self.num_workers))

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


# ---------------------------------------------------------------------------------------- image input


def target_size(width: int, height: int, image_size: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(w, h) with the long side scaled to ``image_size``, the aspect kept, each side a multiple of 32."""
    scale = image_size / max(width, height)
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def prepare_image(img: Image.Image, image_size: int) -> torch.Tensor:
    """An RGB PIL image resized for the network, as a uint8 tensor (3, H, W); normalised later, on device.

    Shrinking goes through ``thumbnail`` exactly as ``load_rgb(max_side=...)`` does, so an uploaded photo
    passed as a PIL image gets the same pixels as the same file embedded from disk.
    """
    if max(img.size) > image_size:
        img = img.copy()
        img.thumbnail((image_size, image_size), Image.Resampling.LANCZOS)
    size = target_size(img.width, img.height, image_size)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class ImageItems(Dataset):
    """Paths or file-like objects -> (position, uint8 tensor); EXIF rotation applied while loading."""

    def __init__(self, items: Sequence[Any], image_size: int) -> None:
        self.items = items
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        item = self.items[i]
        try:
            img = load_rgb(item, max_side=self.image_size)
        except Exception as exc:
            raise ValueError(f"cannot load image {item!r}: {exc}") from exc
        return i, prepare_image(img, self.image_size)


EXIF_ORIENTATION = 0x0112


def shape_order(items: Sequence[Any], image_size: int) -> list[int]:
    """Positions of ``items`` sorted by the shape they will be embedded at, read from file headers (EXIF
    rotation included), so each batch mostly holds one shape: full forward passes instead of a few images
    of each shape, and on CUDA fewer distinct shapes to select kernels for (the first fp16 pass over many
    shapes ran 30x slower than the next one, docs/benchmarks.md). Unreadable files sort first; loading
    them reports the error as before."""
    def key(i: int) -> tuple[int, int, int]:
        return (*(embedding_size(items[i], image_size) or (0, 0)), i)

    return sorted(range(len(items)), key=key)


def embedding_size(item: Any, image_size: int) -> tuple[int, int] | None:
    """(w, h) the image file ``item`` is embedded at, from its header (EXIF rotation included); None when
    the header cannot be read (loading the image then reports why)."""
    try:
        with Image.open(item) as img:
            w, h = img.size
            if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception:
        return None
    return target_size(w, h, image_size)


def _collate(batch: list[tuple[int, torch.Tensor]]) -> list[tuple[int, torch.Tensor]]:
    return batch  # images differ in shape; grouped by shape in the main process


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only decode and resize; leave the cores to the forward pass


# ------------------------------------------------------------------------------------------ extraction


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, scaled by the pretrained weights' mean/std."""
    mean = torch.tensor(IMAGE_MEAN, device=batch.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGE_STD, device=batch.device).view(1, 3, 1, 1) * 255.0
    return (batch.float() - mean) / std


def _views(x: torch.Tensor, scales: Sequence[float], flip: bool):
    """Every (scale, flip) variant of a normalised batch."""
    height, width = x.shape[-2:]
    for s in scales:
        if s == 1.0:
            xs = x
        else:
            size = (
                max(SIZE_MULTIPLE, round(height * s / SIZE_MULTIPLE) * SIZE_MULTIPLE),
                max(SIZE_MULTIPLE, round(width * s / SIZE_MULTIPLE) * SIZE_MULTIPLE),
            )
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        yield xs
        if flip:
            yield xs.flip(-1)


def view_position(scales: Sequence[float], flip: bool, scale: float = 1.0) -> int | None:
    """Where the unmirrored view at ``scale`` comes in ``_views``'s order; None when it is not one of them."""
    scales = list(scales)
    if scale not in scales:
        return None
    return scales.index(scale) * (2 if flip else 1)


def power_mean(pooled: Sequence[torch.Tensor], p: float) -> torch.Tensor:
    """(mean_v g_v^p)^(1/p) of positive pooled vectors: cirtorch's multi-scale average (C.4)."""
    if len(pooled) == 1:
        return pooled[0]
    return torch.stack(pooled).pow(p).mean(dim=0).pow(1.0 / p)


@torch.inference_mode()
def embed_batch(model: LandmarkNet, images: torch.Tensor, cfg: EmbedConfig) -> torch.Tensor:
    """L2-normalised descriptors (B, D) for a uint8 batch of same-sized images already on the device."""
    device = images.device
    x = normalise(images)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    use_amp = cfg.amp and device.type == "cuda"
    p = float(model.pool.p.detach().float().mean())
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        pooled = [model.forward_pooled(v).float() for v in _views(x, cfg.scales, cfg.flip)]
        emb = model.forward_neck(power_mean(pooled, p))
    return F.normalize(emb.float(), dim=1)


class _ModelPrepared:
    """The network to extract with: on the device, eval mode, optionally BN-fused and channels-last.

    The caller's model is moved to the device and put in eval mode (its train mode is restored on exit);
    with ``fuse`` a fused copy runs and is the only one made channels-last, otherwise the model itself
    is. Torch's thread count is restored on exit too.
    """

    def __init__(self, model: LandmarkNet, cfg: EmbedConfig, fuse: bool) -> None:
        self.model, self.cfg, self.fuse = model, cfg, fuse
        self.device = cfg.resolved_device()

    def __enter__(self) -> tuple[LandmarkNet, torch.device]:
        self.was_training = self.model.training
        self.threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.resolved_threads())
        net = self.model.to(self.device).eval()
        # On the CPU only: there it saves ~20%; on CUDA TF32 convolutions make the probe comparison fail
        # (every call then warned and fell back to the unfused copy), and cuDNN is fast without it.
        if self.fuse and self.device.type == "cpu":
            net = fuse_conv_bn(net)
        if self.cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        return net, self.device

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
        torch.set_num_threads(self.threads)


def _num_workers(items: Sequence[Any], cfg: EmbedConfig) -> int:
    if cfg.num_workers <= 0:
        return 0
    if multiprocessing.current_process().daemon:
        # A Celery prefork child is daemonic and may not start processes: decode in-process.
        log.info("daemonic process: decoding images without DataLoader workers")
        return 0
    if not all(isinstance(item, str | os.PathLike) for item in items):
        return 0  # file-like objects (uploads) may not survive pickling into a worker
    return min(cfg.num_workers, max(1, len(items)))


class PassTap(Protocol):
    """Something that keeps more than the descriptors from the embedding's forward passes
    (``ml.dense_matching.DenseCacheFill``: the photos' dense features)."""

    def attach(self, net: LandmarkNet) -> AbstractContextManager:
        """Hooks on ``net``, the network that runs (a BN-fused copy on the CPU), while the context lasts."""

    def collect(self, positions: list[int]) -> None:
        """Called after each batch of same-sized images (``positions`` in ``items``) is embedded."""


def tapped(tap: PassTap | None, net: LandmarkNet) -> AbstractContextManager:
    return tap.attach(net) if tap is not None else nullcontext()


def embed_images(
    model: LandmarkNet, items: Sequence[Any], cfg: EmbedConfig | None = None, progress: Progress | None = None,
    tap: PassTap | None = None,
) -> np.ndarray:
    """Descriptors (N, D) float32, L2-normalised, in the order of ``items`` (paths or file-like objects);
    ``tap`` sees every batch's forward passes."""
    cfg = cfg or EmbedConfig()
    out = np.zeros((len(items), model.embedding_dim), dtype=np.float32)
    if len(items) == 0:
        return out
    done = 0
    with _ModelPrepared(model, cfg, fuse=cfg.fuse_bn) as (net, device), tapped(tap, net):
        for groups, size in decoded_batches(items, cfg):
            for positions, images in groups:
                out[positions] = embed_batch(net, images.to(device, non_blocking=True), cfg).cpu().numpy()
                if tap is not None:
                    tap.collect(positions)
            done += size
            if progress is not None:
                progress(done, len(items))
    return out


def decoded_batches(
    items: Sequence[Any], cfg: EmbedConfig
) -> Iterator[tuple[list[tuple[list[int], torch.Tensor]], int]]:
    """The images of ``items`` decoded and resized (in DataLoader workers when ``cfg`` asks for them), in
    batches of ``cfg.batch_size`` (ordered by shape when batching, so batches are full): per batch, its
    [(positions in ``items``, uint8 tensor of same-sized images)] groups and its size."""
    workers = _num_workers(items, cfg)
    paths = all(isinstance(item, str | os.PathLike) for item in items)
    order = shape_order(items, cfg.image_size) if cfg.batch_size > 1 and paths else None
    loader = DataLoader(
        ImageItems(items, cfg.image_size),
        batch_size=cfg.batch_size,
        sampler=order,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    for batch in loader:
        yield list(_group_by_shape(batch)), len(batch)


def _group_by_shape(batch: list[tuple[int, torch.Tensor]]):
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, tensor in batch:
        groups.setdefault(tuple(tensor.shape), []).append((i, tensor))
    for members in groups.values():
        yield [i for i, _ in members], torch.stack([t for _, t in members])


def embed_image(model: LandmarkNet, image: Image.Image, cfg: EmbedConfig | None = None) -> np.ndarray:
    """Descriptor (D,) of one PIL image (an uploaded query photo); EXIF rotation applied if still pending.

    A JPEG not yet loaded is decoded at reduced size like ``load_rgb`` does (``draft`` changes ``image``).
    """
    cfg = cfg or EmbedConfig()
    if image.format == "JPEG":
        # As load_rgb does for files (a no-op once loaded), so an upload gets the pixels its file would.
        image.draft("RGB", (cfg.image_size, cfg.image_size))
    img = ImageOps.exif_transpose(image).convert("RGB")
    # No BN fusion for a single image: folding costs about as much as it saves on one forward.
    with _ModelPrepared(model, cfg, fuse=False) as (net, device):
        vec = embed_batch(net, prepare_image(img, cfg.image_size).unsqueeze(0).to(device), cfg)
    return vec[0].cpu().numpy()


# ------------------------------------------------------------------------------------- post-processing


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@dataclass
class PCAWhitening:
    """PCA whitening (cirtorch ``pcawhitenlearn``, C.3): x' = P (x - m), P = diag(lambda^-1/2) E^T.

    ``projection`` has one row per kept component, eigenvalues descending. (lyakaap's WhiteningPCA
    indexed the eigenvectors by row; they are the columns of eigh's result, section G.)
    """

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (d, D)

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int | None = None, rel_eps: float = 1e-9) -> PCAWhitening:
        """Learn from (N, D) vectors; keeps ``dim`` components (default: all with non-zero variance)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 vectors as an (N, D) array, got shape {x.shape}")
        mean = x.mean(axis=0)
        xc = x - mean
        cov = xc.T @ xc / x.shape[0]
        cov = (cov + cov.T) / 2
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = eigval[order], eigvec[:, order]
        # Directions without variance (N < D) would be divided by ~0 and amplify noise: drop them.
        usable = int((eigval > rel_eps * eigval[0]).sum())
        if dim is not None:
            if dim > usable:
                raise ValueError(
                    f"dim={dim} but only {usable} components have variance ({x.shape[0]} vectors)"
                )
            usable = dim
        projection = (eigvec[:, :usable] / np.sqrt(eigval[:usable])).T
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    @property
    def dim(self) -> int:
        return self.projection.shape[0]

    def apply(self, vectors: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Whitened (N, d) float32 vectors, L2-normalised unless ``normalize=False``."""
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.projection.T
        return l2_normalize(out) if normalize else out

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}.npz")
        try:
            np.savez(tmp, mean=self.mean, projection=self.projection)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PCAWhitening:
        with np.load(path) as data:
            return cls(data["mean"], data["projection"])


def concat_ensemble(arrays: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """lyakaap's ensemble (A.4): L2-normalise each model's vectors, scale by its weight, concatenate, L2."""
    if not arrays:
        raise ValueError("concat_ensemble needs at least one array")
    weights = [1.0] * len(arrays) if weights is None else list(weights)
    if len(weights) != len(arrays):
        raise ValueError(f"{len(arrays)} arrays but {len(weights)} weights")
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"arrays differ in length: {[len(a) for a in arrays]}")
    return l2_normalize(
        np.concatenate([w * l2_normalize(a) for a, w in zip(arrays, weights, strict=True)], axis=1)
    )


# ------------------------------------------------------------------------------------------ shard files

MANIFEST = "manifest.json"


def write_embedding_shards(
    out_dir: str | os.PathLike, ids: Sequence[str], vectors: np.ndarray, shard_size: int = 50_000,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write vectors as float16 ``shard-NNNNN.npy`` + ``shard-NNNNN.ids.txt`` files, published atomically.

    Everything goes to a temporary sibling folder that is renamed to ``out_dir`` at the end, so readers
    see either nothing or the whole set. ``out_dir`` must not exist yet (embedding sets are immutable).
    ``vectors`` may be memory-mapped: it is read one shard at a time. ``extra(folder)`` may add files
    (region descriptors) to the set before it is published.
    """
    if np.ndim(vectors) != 2 or len(ids) != len(vectors):
        raise ValueError(f"need one vector per id: {len(ids)} ids, vectors of shape {np.shape(vectors)}")
    blocks = ((ids[s : s + shard_size], vectors[s : s + shard_size]) for s in range(0, len(ids), shard_size))
    return write_embedding_blocks(out_dir, blocks, int(np.shape(vectors)[1]), shard_size, extra)


def write_embedding_blocks(
    out_dir: str | os.PathLike, blocks: Iterable[tuple[Sequence[str], np.ndarray]], dim: int,
    shard_size: int = 50_000, extra: Callable[[Path], None] | None = None,
) -> Path:
    """``write_embedding_shards`` from consecutive (ids, vectors) blocks, such as an embedding job's chunk
    files: at most one shard is held in memory, whatever the size of the set."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"embedding folder already exists: {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        shards = []
        for n, (ids, vectors) in enumerate(_as_shards(blocks, dim, shard_size)):
            name = f"shard-{n:05d}"
            np.save(tmp / f"{name}.npy", vectors)
            (tmp / f"{name}.ids.txt").write_text("".join(f"{i}\n" for i in ids))
            shards.append({"name": name, "count": len(ids)})
        count = sum(s["count"] for s in shards)
        (tmp / MANIFEST).write_text(json.dumps({"count": count, "dim": dim, "dtype": "float16", "shards": shards},
                                               indent=1))
        if extra is not None:
            extra(tmp)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _as_shards(
    blocks: Iterable[tuple[Sequence[str], np.ndarray]], dim: int, shard_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Blocks of any length, checked and re-cut into float16 shards of ``shard_size`` rows (the last shorter)."""
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for block_ids, block in blocks:
        block = np.asarray(block, dtype=np.float16)
        if block.ndim != 2 or block.shape[1] != dim or len(block_ids) != len(block):
            raise ValueError(f"need one {dim}-d vector per id: {len(block_ids)} ids, vectors of shape {block.shape}")
        bad = [i for i in block_ids if not isinstance(i, str) or not i or "\n" in i or "\r" in i]
        if bad:
            raise ValueError(f"ids must be non-empty one-line strings; bad: {bad[:3]!r}")
        ids.extend(block_ids)
        parts.append(block)
        while len(ids) >= shard_size:
            joined = np.concatenate(parts)
            yield ids[:shard_size], joined[:shard_size]
            ids, parts = ids[shard_size:], [joined[shard_size:]]
    if ids:
        yield ids, np.concatenate(parts)


class StackedRows:
    """The rows of several memory-mapped shards as one read-only array-like, read on demand: ``shape``,
    ``len``, row slices (which read only the shards they cross) and ``np.asarray`` (which reads them all).
    Lets a build stream millions of stored vectors without holding them in memory."""

    def __init__(self, parts: Sequence[np.ndarray]):
        if not parts:
            raise ValueError("no shards")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            return np.asarray(self)[key]
        start, stop, _ = key.indices(len(self))
        pieces = []
        for part, lo in zip(self.parts, self.starts[:-1], strict=True):
            a, b = max(start - lo, 0), min(stop - lo, len(part))
            if a < b:
                pieces.append(part[a:b])
        return np.concatenate(pieces) if pieces else np.zeros((0, *self.shape[1:]), self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype, copy=False)


def read_embedding_shards(
    directory: str | os.PathLike, mmap: bool = True, dtype: np.dtype | type | None = None, lazy: bool = False
) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of a folder written by ``write_embedding_shards``.

    Vectors stay float16 as stored unless ``dtype`` says otherwise; with ``mmap`` and a single shard they
    are memory-mapped rather than read (several shards are concatenated in memory, unless ``lazy``: then
    they come as one ``StackedRows`` over the memory-mapped shards, in their stored dtype).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"not an embedding folder (no {MANIFEST}): {directory}")
    manifest = json.loads(manifest_path.read_text())
    ids: list[str] = []
    parts = []
    for shard in manifest["shards"]:
        part = np.load(directory / f"{shard['name']}.npy", mmap_mode="r" if mmap else None)
        shard_ids = (directory / f"{shard['name']}.ids.txt").read_text().splitlines()
        if len(shard_ids) != len(part) or len(part) != shard["count"]:
            raise ValueError(f"{directory}/{shard['name']}: {len(shard_ids)} ids for {len(part)} vectors")
        ids.extend(shard_ids)
        parts.append(part)
    if not parts:
        vectors = np.zeros((0, manifest["dim"]), dtype=np.float16)
    elif len(parts) == 1:
        vectors = parts[0]
    elif lazy and mmap and dtype is None:
        return ids, StackedRows(parts)
    else:
        vectors = np.concatenate(parts)
    if dtype is not None and vectors.dtype != np.dtype(dtype):
        vectors = vectors.astype(dtype)
    return ids, vectors
