"""LandmarkNet, GeM and the margin heads against hand-computed values."""

import math

import pytest
import torch

from ml.models import (
    HEAD_NAMES,
    AdaCosHead,
    ArcFaceHead,
    CosFaceHead,
    GeM,
    LandmarkNet,
    ModelConfig,
    SoftmaxHead,
    SubCenterArcFaceHead,
    dynamic_margins,
    freeze_batchnorm,
    fuse_conv_bn,
)
from ml.weights import create_model, save_checkpoint

torch.set_num_threads(1)  # the test machine is shared: one thread is fastest there


def small_config(**kwargs) -> ModelConfig:
    base = dict(pretrained=None, embedding_dim=16, num_classes=5, head="arcface")
    return ModelConfig(**{**base, **kwargs})


# ---------------------------------------------------------------------------------------------- GeM


def test_gem_matches_formula_on_hand_tensor():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -5.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    pooled = GeM(p=3.0)(x)
    expected0 = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    # Zero and negative values are clamped to eps = 1e-6 before the power.
    expected1 = ((2 * 1e-18 + 8 + 8) / 4) ** (1 / 3)
    assert pooled.shape == (1, 2)
    assert pooled[0, 0].item() == pytest.approx(expected0, rel=1e-6)
    assert pooled[0, 1].item() == pytest.approx(expected1, rel=1e-6)


def test_gem_p_is_a_parameter_only_when_learnable():
    learnable, fixed = GeM(3.0, learnable=True), GeM(3.0, learnable=False)
    assert [n for n, _ in learnable.named_parameters()] == ["p"]
    assert list(fixed.parameters()) == [] and "p" in dict(fixed.named_buffers())
    assert learnable.p.item() == 3.0


# ----------------------------------------------------------------------------------------- the network


def test_landmarknet_shapes_and_unnormalised_descriptor():
    model = create_model(small_config(embedding_dim=32)).eval()
    x = torch.randn(2, 3, 64, 96)
    assert model.forward_features(x).shape == (2, 1280, 2, 3)
    assert model.forward_pooled(x).shape == (2, 1280)
    emb = model(x)
    assert emb.shape == (2, 32)
    assert not torch.allclose(emb.norm(dim=1), torch.ones(2))  # normalised downstream, not here
    logits = model.head(emb, torch.tensor([0, 4]))
    assert logits.shape == (2, 5)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_every_head_gives_logits_with_and_without_labels(head):
    model = create_model(small_config(head=head, class_counts=[1, 2, 3, 4, 50])).train()
    emb = model(torch.randn(3, 3, 64, 64))
    labels = torch.tensor([0, 1, 4])
    train_logits = model.head(emb, labels)
    eval_logits = model.head(emb, None)
    assert train_logits.shape == eval_logits.shape == (3, 5)
    loss = torch.nn.functional.cross_entropy(train_logits, labels)
    loss.backward()
    assert model.fc.weight.grad is not None and torch.isfinite(model.fc.weight.grad).all()


def test_no_head_without_classes_and_config_validation():
    assert create_model(small_config(num_classes=0)).head is None
    assert create_model(small_config(head="none")).head is None
    with pytest.raises(ValueError, match="unknown head"):
        ModelConfig(head="triplet")
    with pytest.raises(ValueError, match="class_counts has 2 entries"):
        ModelConfig(num_classes=3, class_counts=[1, 2])
    with pytest.raises(ValueError, match="neither"):
        create_model(small_config(pretrained="/no/such/checkpoint.pt"))


# ---------------------------------------------------------------------------------------------- heads


def unit_head_weights(head: torch.nn.Module, rows: list[list[float]]) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor(rows))


def test_arcface_logit_equals_hand_computed_value():
    head = ArcFaceHead(2, 2, s=30.0, m=0.3)
    unit_head_weights(head, [[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    x = torch.tensor([[math.cos(t), math.sin(t)]]) * 7.0  # length must not matter
    logits = head(x, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(t + 0.3), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(30 * math.sin(t), abs=1e-4)  # non-target: plain cosine
    plain = head(x, None)
    assert plain[0, 0].item() == pytest.approx(30 * math.cos(t), abs=1e-4)


def test_arcface_past_pi_minus_m_uses_the_linear_branch():
    head = ArcFaceHead(2, 1, s=30.0, m=0.3)
    unit_head_weights(head, [[1.0, 0.0]])
    t = math.pi - 0.1  # theta + m > pi: cos(theta + m) would start increasing again
    cos = math.cos(t)
    logits = head(torch.tensor([[math.cos(t), math.sin(t)]]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * (cos - math.sin(math.pi - 0.3) * 0.3), abs=1e-4)


def test_arcface_label_smoothing_mixes_target_and_cosine():
    head = ArcFaceHead(2, 2, s=10.0, m=0.3, ls_eps=0.1)
    unit_head_weights(head, [[1.0, 0.0], [0.0, 1.0]])
    t = 0.4
    logits = head(torch.tensor([[math.cos(t), math.sin(t)]]), torch.tensor([0]))
    hot = 0.9 + 0.1 / 2
    expected = 10 * (hot * math.cos(t + 0.3) + (1 - hot) * math.cos(t))
    assert logits[0, 0].item() == pytest.approx(expected, abs=1e-4)


def test_subcenter_cosine_is_max_over_subcenters():
    head = SubCenterArcFaceHead(2, 2, subcenters=3, s=1.0, m=0.2)
    # class 0: sub-centers at 0, 90, 180 degrees; class 1: all at 45 degrees
    r = math.sqrt(0.5)
    unit_head_weights(head, [[1, 0], [0, 1], [-1, 0], [r, r], [r, r], [r, r]])
    x = torch.tensor([[0.0, 1.0]])
    cos = head.cosine(x)
    assert cos[0, 0].item() == pytest.approx(1.0, abs=1e-6)  # the 90-degree sub-center wins
    assert cos[0, 1].item() == pytest.approx(r, abs=1e-6)
    logits = head(x, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(math.cos(0.2), abs=1e-5)


def test_dynamic_margins_span_005_to_05_rarest_largest():
    counts = [1000, 1, 10, 100, 3]
    margins = dynamic_margins(counts)
    assert margins.min().item() == pytest.approx(0.05) and margins[0].item() == pytest.approx(0.05)
    assert margins.max().item() == pytest.approx(0.5) and margins[1].item() == pytest.approx(0.5)
    t = [c**-0.25 for c in counts]
    assert margins[2].item() == pytest.approx(0.05 + 0.45 * (t[2] - min(t)) / (max(t) - min(t)), rel=1e-5)
    assert torch.all(margins[[1, 4, 2, 3, 0]].diff() < 0)  # more images, smaller margin
    model = create_model(small_config(head="subcenter_arcface", class_counts=counts))
    assert torch.allclose(model.head.margins, margins)
    with pytest.raises(ValueError, match="positive"):
        dynamic_margins([3, 0])


def test_cosface_subtracts_margin_from_target_cosine():
    head = CosFaceHead(2, 2, s=30.0, m=0.3)
    unit_head_weights(head, [[1.0, 0.0], [0.0, 1.0]])
    t = 0.6
    logits = head(torch.tensor([[math.cos(t), math.sin(t)]]), torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(30 * (math.sin(t) - 0.3), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(t), abs=1e-4)


def test_adacos_updates_scale_by_its_formula_in_training_only():
    torch.manual_seed(0)
    head = AdaCosHead(8, 10, m=0.3, theta_zero=math.pi / 4)
    s0 = math.log(9) / math.cos(math.pi / 4)
    assert head.s.item() == pytest.approx(s0, rel=1e-6)
    x, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    cos = torch.nn.functional.linear(
        torch.nn.functional.normalize(x), torch.nn.functional.normalize(head.weight)
    ).detach()
    theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    non_target = torch.ones_like(cos).scatter_(1, labels[:, None], 0.0)
    b_avg = (torch.exp(s0 * cos) * non_target).sum() / 6
    s1 = torch.log(b_avg) / torch.cos(torch.clamp(torch.median(theta), max=math.pi / 4))

    head.eval()
    head(x, labels)
    assert head.s.item() == pytest.approx(s0, rel=1e-6)  # eval: frozen
    head.train()
    logits = head(x, labels)
    assert head.s.item() == pytest.approx(s1.item(), rel=1e-5)
    assert logits[0, 0].item() == pytest.approx(s1.item() * math.cos(theta[0, 0].item() + 0.3), rel=1e-4)
    assert logits[0, 1].item() == pytest.approx(s1.item() * cos[0, 1].item(), rel=1e-4)


def test_softmax_head_is_linear_and_ignores_labels():
    head = SoftmaxHead(4, 3)
    x = torch.randn(2, 4)
    assert torch.equal(head(x, torch.tensor([0, 1])), head(x, None))
    assert torch.allclose(head(x), x @ head.fc.weight.T + head.fc.bias)


# ------------------------------------------------------------------------------------ training helpers


def test_freeze_batchnorm_survives_train_and_keeps_statistics():
    model = create_model(small_config())
    frozen = freeze_batchnorm(model)
    assert frozen > 10
    model.train()
    before = model.bn.running_mean.clone(), model.backbone.bn1.running_var.clone()
    model(torch.randn(4, 3, 64, 64))
    assert torch.equal(model.bn.running_mean, before[0])
    assert torch.equal(model.backbone.bn1.running_var, before[1])
    assert not model.bn.weight.requires_grad and not model.backbone.bn1.bias.requires_grad
    assert model.fc.weight.requires_grad and model.backbone.conv_stem.weight.requires_grad
    # Keys unchanged: a frozen model's checkpoint loads into a fresh one.
    assert set(model.state_dict()) == set(LandmarkNet(small_config()).state_dict())


def test_create_model_from_checkpoint_path_keeps_trunk_drops_mismatched_head(tmp_path):
    source = create_model(small_config(num_classes=5))
    path = save_checkpoint(tmp_path / "stage1.pt", source, source.config)
    target = create_model(small_config(num_classes=7, pretrained=str(path)))
    assert torch.equal(target.backbone.conv_stem.weight, source.backbone.conv_stem.weight)
    assert torch.equal(target.fc.weight, source.fc.weight)
    assert target.head.weight.shape == (7, 16)  # new class set: fresh head
    same = create_model(small_config(num_classes=5, pretrained=str(path)))
    assert torch.equal(same.head.weight, source.head.weight)


def test_subcenters_only_for_the_subcenter_head():
    assert create_model(small_config(head="arcface", subcenters=3)).head.weight.shape == (5, 16)
    assert create_model(small_config(head="subcenter_arcface", subcenters=3)).head.weight.shape == (15, 16)


def test_fuse_conv_bn_keeps_outputs_and_leaves_the_original_alone():
    model = create_model(small_config(pretrained="packaged")).eval()
    original_stem = model.backbone.conv_stem.weight.clone()
    fused = fuse_conv_bn(model)
    bn2d = [m for m in fused.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn2d == [] and isinstance(fused.bn, torch.nn.BatchNorm1d)  # the neck's BN1d is not a conv's
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        assert torch.allclose(fused(x), model(x), atol=1e-4, rtol=1e-4)
    assert torch.equal(model.backbone.conv_stem.weight, original_stem)
