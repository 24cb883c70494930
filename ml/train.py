"""Training a LandmarkNet with a margin head: the reference recipe (ml-reference A.4) with exact resume.

Recipe: SGD (momentum 0.9) or AdamW, lr 1e-3, weight decay 1e-5, linear warm-up then cosine annealing to
eta_min 3e-6 stepped every optimizer step, aspect-grouped batches, "soft"/"middle" augmentation, optional
BatchNorm freezing for the last epoch. Gradient accumulation averages the micro-batch losses (K5 summed
them, tripling its effective lr: ml-reference G). AMP (bf16, or fp16 with a GradScaler) on CUDA only.

A checkpoint written every ``checkpoint_every`` steps holds the model, optimizer, scheduler, scaler, step,
epoch and position in the epoch, and the torch / numpy / python RNG states. The data order and every
augmentation depend only on (seed, epoch, position), so a run resumed from step k computes the same losses
after k as one that never stopped.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ml.data import (
    GroupedBatchSampler,
    ManifestDataset,
    TarShardDataset,
    TrainingManifest,
    template_sizes,
)
from ml.models import LandmarkNet, ModelConfig, freeze_batchnorm, freeze_early_blocks
from ml.weights import backbone_width, create_model, read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
OnMetrics = Callable[[dict[str, float]], None]


@dataclass
class TrainConfig:
    """How to train. ``max_steps`` (optimizer steps), when set, replaces ``epochs`` as the length."""

    epochs: int = 5
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "sgd"  # "sgd" (momentum 0.9, as the reference) or "adamw"
    momentum: float = 0.9
    warmup_steps: int = 0
    eta_min: float = 3e-6
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    amp: str | None = None  # None, "bf16" or "fp16"; CUDA only (ignored on CPU)
    checkpoint_every: int = 0  # steps; 0 = only the final checkpoint
    checkpoint_dir: str | None = None  # default: <out_dir>/checkpoints
    keep_checkpoints: int = 0  # the newest intermediate checkpoints kept on disk; 0 = all (each holds the head)
    resume_from: str | None = None
    freeze_bn_last_epoch: bool = False
    # Few-shot fine-tuning (a handful of images per landmark): BatchNorm frozen throughout (batch statistics
    # of a few images are noise), the backbone at a fraction of the lr, and the head's class centres
    # imprinted from the mean descriptor of each class, so the first steps pull features towards their
    # landmark instead of towards random centres.
    freeze_bn: bool = False
    backbone_lr_mult: float = 1.0
    head_init: str = "random"  # "random" or "imprint" (needs a manifest, not tar shards)
    # Transfer to unseen landmarks: the backbone's stem and first ``freeze_blocks`` blocks keep their
    # pretrained weights (and are computed once per batch, without autograd), and ``distill_weight`` * mean
    # (1 - cosine) to the descriptor of the model as it started (a frozen copy: with the packaged weights
    # and an identity neck, the ImageNet GeM descriptor) is added to the loss, so it does not forget.
    freeze_blocks: int = 0
    distill_weight: float = 0.0
    threads: int = 0  # torch CPU threads for this run; 0 = leave torch's setting
    seed: int = 123456789
    device: str = "auto"
    image_size: int = 512  # square input when no template is given
    template: str | None = None  # aspect-grouped sizes, e.g. "SS2", "S2", "M2" (A.4)
    template_max_side: int | None = None  # scale the template down (small tests, quick runs)
    augmentation: str = "soft"  # "none", "soft" or "middle"
    balance_power: float = 0.0  # >0: class-balanced sampling, weight count^-power
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.head_init not in ("random", "imprint"):
            raise ValueError(f"head_init must be 'random' or 'imprint', got {self.head_init!r}")
        if self.backbone_lr_mult < 0:
            raise ValueError(f"backbone_lr_mult must be >= 0, got {self.backbone_lr_mult}")
        if self.grad_accum_steps < 1 or self.batch_size < 1:
            raise ValueError("batch_size and grad_accum_steps must be at least 1")
        if self.max_steps is None and self.epochs < 1:
            raise ValueError("give epochs >= 1 or max_steps")
        if self.freeze_blocks < 0 or self.distill_weight < 0 or self.threads < 0:
            raise ValueError("freeze_blocks, distill_weight and threads must be >= 0")


@dataclass
class TrainResult:
    checkpoint: Path  # the final model: ``ml.weights.load_model`` reads it
    metrics: list[dict[str, float]]  # per optimizer step: step, epoch, loss, accuracy, lr
    steps: int
    checkpoints: list[Path] = field(default_factory=list)  # intermediate ones written by this call


def few_shot_settings(backbone: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ModelConfig, TrainConfig) fields for a handful of photos per landmark: start from the ImageNet
    descriptor (identity neck), imprint the class centres, freeze BatchNorm. With AdamW, lr 1e-3, 10 epochs
    at 384 px it improved lite0 on landmarks-mini (docs/benchmarks-archive.md); a random neck made it worse."""
    return ({"neck_init": "identity", "embedding_dim": backbone_width(backbone)},
            {"freeze_bn": True, "head_init": "imprint"})


# --- schedule --------------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up to ``lr`` over ``warmup_steps``,
    then cosine from ``lr`` down to ``eta_min`` at ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.eta_min + (cfg.lr - cfg.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The neck, pooling and head at ``lr`` (the first group, whose lr the metrics report), the backbone at
    ``lr * backbone_lr_mult``; frozen parameters (BatchNorm under ``freeze_bn``) are left out."""
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    if cfg.backbone_lr_mult == 0 and backbone is not None:
        backbone.requires_grad_(False)  # a linear probe: only the neck and head learn
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in backbone_ids]}]
    backbone_params = [p for p in trainable if id(p) in backbone_ids]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_mult})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """One schedule for every parameter group, as a factor of each group's own starting lr."""
    base = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg, total_steps) / base)


@torch.no_grad()
def imprint_head(model: LandmarkNet, manifest: TrainingManifest, image_size: int, device: torch.device) -> None:
    """Set every class centre of a margin head to the normalised mean descriptor of that class's images
    (un-augmented, eval mode); classes without images keep their random centre. Sub-centres each get it."""
    weight = getattr(model.head, "weight", None)
    if weight is None or isinstance(model.head, torch.nn.Linear):
        raise ValueError("head_init='imprint' needs a margin head (arcface, cosface, adacos, subcenter_arcface)")
    was_training = model.training
    model.eval()
    loader = DataLoader(ManifestDataset(manifest, [(image_size, image_size)], "none"), batch_size=16)
    sums = torch.zeros(manifest.num_classes, model.embedding_dim, device=device)
    for x, y in loader:
        emb = F.normalize(model(x.to(device)).float(), dim=1)
        sums.index_add_(0, y.to(device), emb)
    seen = sums.norm(dim=1) > 0
    centres = F.normalize(sums, dim=1)
    k = weight.shape[0] // manifest.num_classes  # sub-centres per class (1 for the plain heads)
    for j in range(k):
        rows = torch.arange(manifest.num_classes, device=device) * k + j
        weight.data[rows[seen]] = centres[seen].to(weight.dtype)
    model.train(was_training)


# --- transfer: frozen early blocks, distillation ------------------------------------------------------

class Distillation:
    """A frozen copy of the model as training starts (the teacher) and the weight of the term that keeps the
    trained descriptor close to the teacher's: ``weight * mean(1 - cos(student, teacher))``."""

    def __init__(self, model: LandmarkNet, weight: float) -> None:
        self.weight = weight
        self.teacher = copy.deepcopy(model).eval()
        self.teacher.head = None
        self.teacher.requires_grad_(False)

    @torch.no_grad()
    def target(self, x: torch.Tensor, early: torch.Tensor | None = None, blocks: int = 0) -> torch.Tensor:
        """The teacher's descriptor of ``x``; from ``early`` (the shared frozen blocks' output) when given."""
        return self.teacher.forward_late(early, blocks) if early is not None else self.teacher(x)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean(1 - cosine) between each descriptor and its teacher's: 0 when they point the same way."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()


def embed_for_training(model: LandmarkNet, x: torch.Tensor, freeze_blocks: int = 0,
                       distill: Distillation | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(descriptors, the teacher's descriptors or None). Frozen early blocks run once, without autograd,
    and feed both the model and the teacher (their weights are the same there)."""
    if freeze_blocks:
        with torch.no_grad():
            early = model.forward_early(x, freeze_blocks)
        embeddings = model.forward_late(early, freeze_blocks)
        target = distill.target(x, early, freeze_blocks) if distill else None
    else:
        embeddings = model(x)
        target = distill.target(x) if distill else None
    return embeddings, target


# --- one optimizer step --------------------------------------------------------------------------------

def accumulate_gradients(
    model: LandmarkNet,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    distill: Distillation | None = None,
    freeze_blocks: int = 0,
    parts: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Forward + backward every micro-batch, each loss divided by their number, so the gradients are those
    of the mean loss over all of them. Returns (mean loss, accuracy); does not step the optimizer. With
    ``distill`` the loss includes its term, whose mean (unweighted) goes to ``parts["distill"]``."""
    if model.head is None:
        raise ValueError("training needs a model with a head (ModelConfig.head and num_classes > 0)")
    n = len(micro_batches)
    total_loss, correct, seen, distilled = 0.0, 0, 0, 0.0
    for x, y in micro_batches:
        device_type = x.device.type
        ctx = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with ctx:
            embeddings, target = embed_for_training(model, x, freeze_blocks, distill)
            logits = model.head(embeddings, y)
            loss = F.cross_entropy(logits.float(), y)
            if distill is not None:
                term = distillation_loss(embeddings, target)
                distilled += float(term.detach()) / n
                loss = loss + distill.weight * term
            loss = loss / n
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total_loss += float(loss.detach())
        with torch.no_grad():
            # Accuracy from the plain cosine logits: the margin would understate it.
            correct += int((model.head(embeddings.detach(), None).argmax(1) == y).sum())
            seen += len(y)
    if parts is not None and distill is not None:
        parts["distill"] = distilled
    return total_loss, correct / max(1, seen)


# --- data ------------------------------------------------------------------------------------------

class _Batches:
    """Micro-batches of either source, per epoch, resumable at a position inside the epoch."""

    def __init__(self, source: TrainingManifest | TarShardDataset, cfg: TrainConfig) -> None:
        self.cfg = cfg
        # A private generator: a DataLoader otherwise draws its worker seed from the global torch RNG,
        # which would shift every later random draw of a resumed run.
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.streaming = isinstance(source, TarShardDataset)
        if self.streaming:
            self.dataset = source
            self.estimated_batches = len(source.label_by_image) // cfg.batch_size
            self.loader = DataLoader(source, batch_size=cfg.batch_size, drop_last=True,
                                     num_workers=cfg.num_workers, generator=self.generator)
            return
        if cfg.template:
            sizes = template_sizes(cfg.template, cfg.template_max_side)
            if source.aspects is None:
                source.measure_aspects()
        else:
            sizes = [(cfg.image_size, cfg.image_size)]
        self.dataset = ManifestDataset(source, sizes, cfg.augmentation)
        self.sampler = GroupedBatchSampler(len(source), cfg.batch_size, self.dataset.group_ids, seed=cfg.seed,
                                           drop_uneven=True, labels=source.labels,
                                           balance_power=cfg.balance_power)
        self.estimated_batches = len(self.sampler)
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=cfg.num_workers,
                                 generator=self.generator)

    def epoch(self, epoch: int, position: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        """Yield (x, y, position after this batch) for ``epoch``, starting at ``position``."""
        self.generator.manual_seed(self.cfg.seed + epoch)
        if self.streaming:
            counts = list(position or [0])
            self.dataset.set_epoch(epoch, counts)
            for x, y, workers in self.loader:
                w = int(workers[0])
                counts += [0] * (w + 1 - len(counts))
                counts[w] += len(y)
                yield x, y, list(counts)
        else:
            start = int(position or 0)
            self.sampler.set_epoch(epoch, start)
            for b, (x, y) in enumerate(self.loader, start=start + 1):
                yield x, y, b


# --- the loop --------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    manifest_or_dataset: TrainingManifest | TarShardDataset,
    out_dir: Path | str,
    progress: Progress | None = None,
    on_metrics: OnMetrics | None = None,
) -> TrainResult:
    """Train (or resume training) and write ``<out_dir>/final.pt``; see the module docstring.

    ``model_config.num_classes=0`` takes the number of labels from the data; ``class_counts=[]`` fills the
    per-class image counts from it (dynamic margins). Checkpoints also hold ``landmark_ids`` (label index
    -> landmark id), ``train_config`` and the metrics so far. ``progress(step, total_steps)`` and
    ``on_metrics(row)`` are called after every optimizer step. With tar shards, resume is exact with
    ``num_workers`` 0 or 1; with more, each worker resumes where it stopped but batches may interleave
    differently.
    """
    cfg = train_config
    out_dir = Path(out_dir)
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out_dir / "checkpoints"
    device = resolve_device(cfg.device)
    landmark_ids, num_classes, class_counts = _label_space(manifest_or_dataset)
    model_config = _fit_label_space(model_config, num_classes, class_counts)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    model = create_model(model_config).to(device)
    if cfg.freeze_bn:
        freeze_batchnorm(model)
    if cfg.freeze_blocks:
        freeze_early_blocks(model, cfg.freeze_blocks)
    # The teacher is the model as created (before imprinting, which touches only the head it drops), so a
    # resumed run distils towards the same descriptor.
    distill = Distillation(model, cfg.distill_weight) if cfg.distill_weight > 0 else None
    if cfg.head_init == "imprint" and not cfg.resume_from:
        if not isinstance(manifest_or_dataset, TrainingManifest):
            raise ValueError("head_init='imprint' needs a training manifest (tar shards are read only once)")
        imprint_head(model, manifest_or_dataset, cfg.image_size, device)
    batches = _Batches(manifest_or_dataset, cfg)
    if batches.estimated_batches < cfg.grad_accum_steps:
        raise ValueError(f"too little data: {batches.estimated_batches} batch(es) of {cfg.batch_size} per epoch, "
                         f"fewer than grad_accum_steps={cfg.grad_accum_steps}")
    steps_per_epoch = batches.estimated_batches / cfg.grad_accum_steps
    total_steps = (cfg.max_steps if cfg.max_steps is not None
                   else int(cfg.epochs * batches.estimated_batches) // cfg.grad_accum_steps)
    last_epoch = max(0, math.ceil(total_steps / steps_per_epoch) - 1)

    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    autocast_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None

    state = {"step": 0, "epoch": 0, "position": None}
    metrics: list[dict[str, float]] = []
    if cfg.resume_from:
        metrics = _restore(cfg.resume_from, model, optimizer, scheduler, scaler, state, device)

    written: list[Path] = []
    extra = {"landmark_ids": landmark_ids, "train_config": asdict(cfg), "total_steps": total_steps}
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.train()
    while state["step"] < total_steps:
        epoch = state["epoch"]
        if cfg.freeze_bn_last_epoch and epoch >= last_epoch:
            freeze_batchnorm(model)
        seen_batch = False
        for x, y, position in batches.epoch(epoch, state["position"]):
            seen_batch = True
            pending.append((x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
            if len(pending) < cfg.grad_accum_steps:
                continue
            row = _optimizer_step(model, optimizer, scheduler, scaler, autocast_dtype, pending, cfg, distill)
            pending = []
            state["step"] += 1
            state["position"] = position
            row.update(step=state["step"], epoch=epoch)
            metrics.append(row)
            if on_metrics:
                on_metrics(row)
            if progress:
                progress(state["step"], total_steps)
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                path = ckpt_dir / f"step-{state['step']:07d}.pt"
                written.append(_save(path, model, model_config, optimizer, scheduler, scaler, state, metrics, extra))
                _drop_older(ckpt_dir, cfg.keep_checkpoints)
            if state["step"] >= total_steps:
                break
        else:
            # The epoch ran out: the next one starts at its beginning. Micro-batches not yet stepped carry
            # over; a checkpoint is only written between steps, where none are pending.
            if not seen_batch and state["position"] is None:
                raise ValueError(f"epoch {epoch} produced no batch of {cfg.batch_size}: too few images "
                                 "(or no tar-shard member whose id is in the manifest)")
            state["epoch"] += 1
            state["position"] = None
    final = _save(out_dir / "final.pt", model, model_config, optimizer, scheduler, scaler, state, metrics, extra)
    return TrainResult(final, metrics, state["step"], written)


def _optimizer_step(model, optimizer, scheduler, scaler, autocast_dtype, micro_batches, cfg,
                    distill=None) -> dict[str, float]:
    lr = optimizer.param_groups[0]["lr"]
    parts: dict[str, float] = {}
    loss, accuracy = accumulate_gradients(model, micro_batches, scaler, autocast_dtype, distill,
                                          cfg.freeze_blocks, parts)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return {"loss": loss, "accuracy": accuracy, "lr": lr, **parts}


def _fit_label_space(cfg: ModelConfig, num_classes: int, class_counts: list[int]) -> ModelConfig:
    """num_classes=0 means "as many as the data has"; class_counts=[] means "count them in the data"
    (for dynamic margins)."""
    if cfg.num_classes and cfg.num_classes < num_classes:
        raise ValueError(f"model_config.num_classes={cfg.num_classes} but the data has {num_classes} labels")
    n = cfg.num_classes or num_classes
    counts = cfg.class_counts
    if counts == []:
        counts = class_counts + [1] * (n - len(class_counts))  # classes absent from the data: count 1
    return replace(cfg, num_classes=n, class_counts=counts)


def _label_space(source: TrainingManifest | TarShardDataset) -> tuple[list[str], int, list[int]]:
    if isinstance(source, TrainingManifest):
        if len(source) == 0:
            raise ValueError("the training manifest is empty")
        return list(source.landmark_ids), source.num_classes, source.class_counts()
    labels = np.fromiter(source.label_by_image.values(), dtype=np.int64)
    if labels.size == 0:
        raise ValueError("the tar-shard dataset has no labelled image")
    num_classes = len(source.landmark_ids) if source.landmark_ids else int(labels.max()) + 1
    ids = source.landmark_ids or [str(i) for i in range(num_classes)]
    return ids, num_classes, np.bincount(labels, minlength=num_classes).tolist()


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp is None:
        return None
    if device.type != "cuda":
        log.warning("amp=%s ignored: mixed precision is used on CUDA only", cfg.amp)
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- checkpoints -----------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """torch (and CUDA), numpy and python RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_checkpoints(folder: str | Path) -> list[Path]:
    """The intermediate checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    return sorted(folder.glob("step-*.pt")) if folder.is_dir() else []


def _drop_older(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest intermediate checkpoints (the one just written among them); 0 keeps all."""
    if keep > 0:
        for path in step_checkpoints(folder)[:-keep]:
            path.unlink(missing_ok=True)


def _save(path, model, model_config, optimizer, scheduler, scaler, state, metrics, extra) -> Path:
    return save_checkpoint(
        path, model, model_config,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler is not None else None,
        step=state["step"], epoch=state["epoch"], position=state["position"],
        rng=rng_state(), metrics=list(metrics), **extra,
    )


def _restore(path, model, optimizer, scheduler, scaler, state, device) -> list[dict[str, float]]:
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "step", "rng") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} cannot resume training: it lacks {', '.join(missing)} "
                         "(to fine-tune from it, use ModelConfig.pretrained instead)")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    model.to(device)
    state.update(step=ckpt["step"], epoch=ckpt["epoch"], position=ckpt.get("position"))
    set_rng_state(ckpt["rng"])
    return list(ckpt.get("metrics", []))
