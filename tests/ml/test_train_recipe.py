"""The `recommended` recipe and what it adds for transfer: frozen early blocks, distillation towards the
descriptor training started from. Real landmarks-mini photos at 64 px; a few optimizer steps each."""

from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F

from ml.data import ManifestDataset
from ml.models import ModelConfig, freeze_early_blocks
from ml.pipeline import get_pipeline
from ml.recipes import RECIPES, recipe_params
from ml.train import (
    Distillation,
    TrainConfig,
    accumulate_gradients,
    distillation_loss,
    embed_for_training,
    train,
)
from ml.weights import create_model, create_off_the_shelf, load_model, read_checkpoint
from tests.ml.test_train import BACKBONE, _manifest

torch.set_num_threads(1)


def _recipe_configs(**train_overrides) -> tuple[ModelConfig, TrainConfig]:
    params = recipe_params("recommended", train={"image_size": 64, "batch_size": 3, "max_steps": 2,
                                                 "warmup_steps": 1, "device": "cpu", **train_overrides})
    return ModelConfig(**params["model"]), TrainConfig(**params["train"])


def _tiny(**kw) -> ModelConfig:
    """A small random backbone with an identity neck (the descriptor is its GeM vector), 3 classes."""
    width = create_model(ModelConfig(backbone=BACKBONE, pretrained=None, head=None)).backbone.num_features
    return ModelConfig(backbone=BACKBONE, pretrained=None, embedding_dim=width, neck_init="identity",
                       head="arcface", num_classes=3, **kw)


def test_the_recommended_recipe_fine_tunes_the_default_pipelines_model_and_bounds_its_cost():
    params = recipe_params("recommended")
    model_cfg, train_cfg = ModelConfig(**params["model"]), TrainConfig(**params["train"])
    assert params["recipe"] == "recommended" and "recommended" in RECIPES
    assert model_cfg.backbone == get_pipeline("default").models[0] == "tf_efficientnet_lite2"
    assert model_cfg.neck_init == "identity" and train_cfg.head_init == "imprint" and train_cfg.freeze_bn
    assert train_cfg.freeze_blocks > 0 and train_cfg.distill_weight > 0
    # Bounded by design: a fixed number of steps of a fixed batch at a small size, on one thread.
    assert train_cfg.max_steps * train_cfg.batch_size <= 5000 and train_cfg.image_size <= 256
    assert train_cfg.threads == 1
    # Overrides win over the recipe; the rest keeps it.
    assert recipe_params("recommended", train={"max_steps": 3})["train"]["max_steps"] == 3
    assert recipe_params("recommended", train={"max_steps": 3})["train"]["freeze_blocks"] == train_cfg.freeze_blocks
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*recommended"):
        recipe_params("nope")


def test_the_recipe_trains_lite2_a_few_steps_on_real_photos(tmp_path):
    model_cfg, train_cfg = _recipe_configs()
    result = train(model_cfg, train_cfg, _manifest(3, 3), tmp_path)
    assert result.steps == 2 and all("distill" in row for row in result.metrics)
    # The first step starts from the packaged descriptor itself: nothing to distil yet.
    assert result.metrics[0]["distill"] == pytest.approx(0.0, abs=1e-5)
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt["train_config"]["freeze_blocks"] == train_cfg.freeze_blocks
    packaged = create_off_the_shelf("tf_efficientnet_lite2").state_dict()
    frozen = f"backbone.blocks.{train_cfg.freeze_blocks - 1}."
    trained = f"backbone.blocks.{train_cfg.freeze_blocks}."
    assert all(torch.equal(ckpt["model"][k], v) for k, v in packaged.items()
               if k.startswith(("backbone.conv_stem", frozen)))
    assert any(not torch.equal(ckpt["model"][k], v) for k, v in packaged.items()
               if k.startswith(trained) and v.is_floating_point() and "running" not in k)
    model = load_model(result.checkpoint)  # what the pipeline loads for `--model <checkpoint>`
    x = ManifestDataset(_manifest(1, 2), [(64, 64)], "none")[0][0][None]
    with torch.no_grad():
        assert model(x).shape == (1, 1280)


def test_frozen_early_blocks_get_no_gradient_and_the_split_forward_is_the_forward():
    model = create_model(_tiny()).eval()
    count = freeze_early_blocks(model, 2)
    assert count > 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.forward_late(model.forward_early(x, 2), 2), model(x), atol=1e-5)
    model.train()
    accumulate_gradients(model, [(torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2]))], freeze_blocks=2)
    bb = model.backbone
    early = [*bb.conv_stem.parameters(), *bb.bn1.parameters(), *bb.blocks[:2].parameters()]
    late = [p for p in bb.blocks[2:].parameters() if p.requires_grad]
    assert early and all(p.grad is None and not p.requires_grad for p in early)
    assert late and any(p.grad is not None and p.grad.abs().sum() > 0 for p in late)
    with pytest.raises(ValueError, match="freeze_blocks must be between"):
        freeze_early_blocks(model, 99)


def test_distillation_loss_is_one_minus_cosine_and_pulls_towards_the_teacher():
    teacher = F.normalize(torch.randn(4, 8), dim=1)
    assert distillation_loss(teacher * 3, teacher) == pytest.approx(0.0, abs=1e-6)  # the scale does not count
    assert distillation_loss(-teacher, teacher) == pytest.approx(2.0, abs=1e-6)
    student = torch.randn(4, 8, requires_grad=True)
    before = distillation_loss(student, teacher)
    before.backward()
    with torch.no_grad():
        after = distillation_loss(student - 0.5 * student.grad, teacher)
    assert after < before


def test_distillation_keeps_the_descriptor_near_the_one_training_started_from(tmp_path):
    """Same data, same steps: the distilled run drifts less from its starting descriptor."""
    manifest = _manifest(3, 3)
    cfg = TrainConfig(batch_size=3, image_size=64, augmentation="none", device="cpu", seed=7, lr=3e-4,
                      optimizer="adamw", max_steps=6, freeze_bn=True)
    drift = {}
    for weight in (0.0, 50.0):
        result = train(_tiny(), replace(cfg, distill_weight=weight), manifest, tmp_path / f"w{weight}")
        model = load_model(result.checkpoint)
        model_cfg = _tiny()
        torch.manual_seed(cfg.seed)  # as train seeds it before creating the model: the same start
        start = create_model(model_cfg).eval()
        images = torch.stack([ManifestDataset(manifest, [(64, 64)], "none")[i][0] for i in range(len(manifest))])
        with torch.no_grad():
            drift[weight] = float(distillation_loss(model(images), start(images)))
        if weight:
            assert result.metrics[0]["distill"] == pytest.approx(0.0, abs=1e-5)
            assert result.metrics[-1]["distill"] > 0
    assert drift[50.0] < drift[0.0] / 2


def test_teacher_shares_the_frozen_blocks_and_matches_a_full_forward():
    model = create_model(_tiny()).eval()
    freeze_early_blocks(model, 3)
    distill = Distillation(model, 1.0)
    assert distill.teacher.head is None and not any(p.requires_grad for p in distill.teacher.parameters())
    x = torch.randn(2, 3, 64, 64)
    shared, target = embed_for_training(model, x, 3, distill)
    full, full_target = embed_for_training(model, x, 0, distill)
    assert torch.allclose(target, full_target, atol=1e-5) and torch.allclose(shared, full, atol=1e-5)
    assert target.requires_grad is False and shared.requires_grad


def test_transfer_options_are_checked():
    with pytest.raises(ValueError, match="freeze_blocks, distill_weight and threads"):
        TrainConfig(distill_weight=-1)
    assert asdict(TrainConfig())["freeze_blocks"] == 0 and TrainConfig().distill_weight == 0
