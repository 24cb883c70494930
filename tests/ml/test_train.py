"""Training on a few real photos at 64 px with a tiny backbone: schedule, accumulation, exact resume, shards."""

import csv
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.data import TarShardDataset, TrainingManifest, write_tar_shards
from ml.models import ModelConfig, freeze_batchnorm
from ml.train import TrainConfig, accumulate_gradients, lr_at, set_rng_state, step_checkpoints, train
from ml.weights import create_model, load_model, read_checkpoint

MINI = Path(os.environ.get("LANDMARKS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) \
    / "landmarks-mini"
BACKBONE = "mobilenetv3_small_050"  # ~0.6M parameters: a step at 64 px takes milliseconds

torch.set_num_threads(1)


def _manifest(n_landmarks: int = 4, per_landmark: int = 4) -> TrainingManifest:
    rows, taken = [], {}
    with (MINI / "images.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            lid = row["landmark_id"]
            if (len(taken) < n_landmarks or lid in taken) and taken.get(lid, 0) < per_landmark:
                taken[lid] = taken.get(lid, 0) + 1
                rows.append({"image_id": row["id"], "path": MINI / "images" / f"{row['id']}.jpg",
                             "landmark_id": lid, "width": row["width"], "height": row["height"]})
    return TrainingManifest.from_records(rows)


def _model_config(**kw) -> ModelConfig:
    return ModelConfig(backbone=BACKBONE, pretrained=None, embedding_dim=32, **kw)


def _train_config(**kw) -> TrainConfig:
    base = dict(batch_size=2, image_size=64, augmentation="none", device="cpu", seed=7, lr=0.01)
    return TrainConfig(**{**base, **kw})


def _losses(result) -> list[float]:
    return [row["loss"] for row in result.metrics]


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, eta_min=3e-6, warmup_steps=4)
    assert [lr_at(s, cfg, 12) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lr_at(4, cfg, 12) == pytest.approx(1e-3)  # the cosine starts at the top
    assert lr_at(8, cfg, 12) == pytest.approx((1e-3 + 3e-6) / 2)  # half way down
    assert lr_at(12, cfg, 12) == pytest.approx(3e-6)
    values = [lr_at(s, cfg, 12) for s in range(4, 13)]
    assert values == sorted(values, reverse=True)
    no_warmup = TrainConfig(lr=1e-3, eta_min=3e-6)
    assert lr_at(5, no_warmup, 10) == pytest.approx(3e-6 + (1e-3 - 3e-6) * 0.5 * (1 + math.cos(math.pi / 2)))


def test_accumulated_gradients_are_averaged_not_summed():
    torch.manual_seed(0)
    model = create_model(_model_config(num_classes=3, head="arcface"))
    freeze_batchnorm(model)  # batch statistics would make batch 2b differ from 2 x batch b
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])

    def grads(micro):
        model.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradients(model, micro)
        return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    loss_full, full = grads([(x, y)])
    loss_acc, acc = grads([(x[:2], y[:2]), (x[2:], y[2:])])
    assert loss_acc == pytest.approx(loss_full, rel=1e-5)
    assert len(full) == len(acc) > 0
    for a, b in zip(full, acc, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in full)


def test_batch_2b_equals_two_accumulated_batches_of_b(tmp_path):
    manifest = _manifest(4, 2)
    # epochs=1 with freeze_bn_last_epoch: BatchNorm is frozen throughout, so batch composition is all that
    # differs between the two runs, and the sampler gives them the same images.
    big = train(_model_config(), _train_config(batch_size=4, epochs=1, freeze_bn_last_epoch=True),
                manifest, tmp_path / "big")
    acc = train(_model_config(), _train_config(batch_size=2, grad_accum_steps=2, epochs=1,
                                               freeze_bn_last_epoch=True), manifest, tmp_path / "acc")
    assert big.steps == acc.steps == 2
    assert _losses(acc) == pytest.approx(_losses(big), abs=1e-5)
    a, b = read_checkpoint(big.checkpoint)["model"], read_checkpoint(acc.checkpoint)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_exact_resume_reproduces_the_loss_curve(tmp_path):
    manifest = _manifest(4, 4)
    # Aspect-grouped sizes, the reference's "middle" augmentation, warm-up, accumulation, a BN freeze for
    # the last epoch and an epoch boundary between the checkpoint and the end: every piece of state.
    cfg = _train_config(template="SS2", template_max_side=64, augmentation="middle", grad_accum_steps=2,
                        warmup_steps=2, max_steps=7, checkpoint_every=3, freeze_bn_last_epoch=True, lr=1e-3)
    seen = []
    full = train(_model_config(), cfg, manifest, tmp_path / "full", progress=lambda d, t: seen.append((d, t)))
    assert full.steps == 7 and seen[-1] == (7, 7)
    assert [p.name for p in full.checkpoints] == ["step-0000003.pt", "step-0000006.pt"]
    assert len({row["epoch"] for row in full.metrics}) >= 2
    assert all(math.isfinite(v) for v in _losses(full))
    resumed_cfg = _train_config(**{**cfg.__dict__, "resume_from": str(full.checkpoints[0])})
    resumed = train(_model_config(), resumed_cfg, manifest, tmp_path / "resumed")
    assert [row["step"] for row in resumed.metrics] == list(range(1, 8))
    assert _losses(resumed)[3:] == pytest.approx(_losses(full)[3:], abs=1e-5)
    assert [r["lr"] for r in resumed.metrics] == pytest.approx([r["lr"] for r in full.metrics])
    a, b = read_checkpoint(full.checkpoint)["model"], read_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    # The lrs are the warm-up then cosine schedule, stepped per optimizer step.
    assert [r["lr"] for r in full.metrics] == pytest.approx([lr_at(s, cfg, 7) for s in range(7)])
    # Keeping only the newest intermediate checkpoint (each holds the whole head: 800 MB at 203 k landmarks).
    train(_model_config(), _train_config(**{**cfg.__dict__, "keep_checkpoints": 1}), manifest, tmp_path / "kept")
    assert [p.name for p in step_checkpoints(tmp_path / "kept" / "checkpoints")] == ["step-0000006.pt"]


def test_loss_decreases_and_checkpoint_loads(tmp_path):
    manifest = _manifest(3, 2)
    result = train(_model_config(head="arcface"), _train_config(batch_size=6, optimizer="adamw", lr=3e-3,
                                                                max_steps=12), manifest, tmp_path)
    losses = _losses(result)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    assert result.metrics[-1]["accuracy"] > result.metrics[0]["accuracy"] or result.metrics[-1]["accuracy"] == 1.0
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt["landmark_ids"] == manifest.landmark_ids and ckpt["config"]["num_classes"] == 3
    model = load_model(result.checkpoint)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 32)


def test_train_from_tar_shards_and_resume(tmp_path):
    manifest = _manifest(4, 3)
    # GLDv2 layout: members a/b/c/<id>.jpg, read straight from the tar files.
    shards = write_tar_shards([(e.image_id, e.path) for e in (manifest[i] for i in range(len(manifest)))],
                              tmp_path / "shards", images_per_shard=5)

    def stream():
        return TarShardDataset(shards, manifest.label_by_image(), size=(64, 64), augmentation="soft",
                               buffer_size=4, seed=3, landmark_ids=manifest.landmark_ids)

    cfg = _train_config(batch_size=3, max_steps=6, checkpoint_every=2)
    full = train(_model_config(head="cosface"), cfg, stream(), tmp_path / "full")
    assert full.steps == 6 and len({row["epoch"] for row in full.metrics}) == 2  # 12 images = 4 steps/epoch
    resumed_cfg = _train_config(**{**cfg.__dict__, "resume_from": str(full.checkpoints[1])})
    resumed = train(_model_config(head="cosface"), resumed_cfg, stream(), tmp_path / "resumed")
    assert _losses(resumed)[4:] == pytest.approx(_losses(full)[4:], abs=1e-5)
    assert read_checkpoint(full.checkpoint)["landmark_ids"] == manifest.landmark_ids


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="too little data"):
        train(_model_config(), _train_config(batch_size=64, epochs=1), _manifest(2, 2), tmp_path)
    not_resumable = tmp_path / "weights.pt"
    torch.save({"model": {}}, not_resumable)
    with pytest.raises(ValueError, match="cannot resume"):
        train(_model_config(), _train_config(max_steps=1, resume_from=str(not_resumable)), _manifest(2, 2),
              tmp_path / "out")


def test_checkpoint_rng_state_restores_every_generator(tmp_path):
    result = train(_model_config(), _train_config(max_steps=1), _manifest(2, 2), tmp_path)
    saved = read_checkpoint(result.checkpoint)["rng"]  # loads with weights_only=True
    set_rng_state(saved)
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_few_shot_options_imprint_identity_neck_frozen_bn_and_lr_groups(tmp_path):
    import torch.nn.functional as F

    from ml.data import ManifestDataset
    from ml.train import imprint_head, make_optimizer

    manifest = _manifest(3, 3)
    width = create_model(_model_config(head=None)).backbone.num_features
    mcfg = ModelConfig(backbone=BACKBONE, pretrained=None, embedding_dim=width, head="arcface", num_classes=3,
                       neck_init="identity")
    model = create_model(mcfg).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the identity neck: the descriptor is the pooled backbone vector itself
        assert torch.allclose(model(x), model.forward_pooled(x), atol=1e-4)

    # Imprinting: each class centre is the normalised mean descriptor of that class's (un-augmented) images.
    imprint_head(model, manifest, 64, torch.device("cpu"))
    images = ManifestDataset(manifest, [(64, 64)], "none")
    with torch.no_grad():
        first = [F.normalize(model(images[i][0][None]), dim=1)[0] for i in range(len(manifest))
                 if manifest[i].label == 0]
    assert torch.allclose(model.head.weight[0], F.normalize(torch.stack(first).mean(0), dim=0), atol=1e-5)

    # lr groups: neck + head at lr, backbone at lr * mult; frozen BatchNorm leaves the optimizer.
    cfg = _train_config(lr=0.01, backbone_lr_mult=0.1, freeze_bn=True, optimizer="adamw")
    frozen = freeze_batchnorm(model)
    opt = make_optimizer(model, cfg)
    assert frozen > 0 and [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    bn_params = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn_params and not any(id(p) in in_opt for p in bn_params)
    probe = make_optimizer(create_model(mcfg), _train_config(backbone_lr_mult=0.0))
    assert len(probe.param_groups) == 1  # a linear probe: the backbone is not trained at all

    # End to end: BN statistics stay as they were, and the run trains.
    stats = [k for k in model.state_dict() if "running_mean" in k or "running_var" in k]
    result = train(mcfg, _train_config(
        max_steps=3, batch_size=3, freeze_bn=True, head_init="imprint", backbone_lr_mult=0.1), manifest,
        tmp_path)
    after = read_checkpoint(result.checkpoint)["model"]
    fresh = create_model(mcfg).state_dict()
    assert stats and all(torch.equal(after[k], fresh[k]) for k in stats)
    assert result.steps == 3


def test_few_shot_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="head_init"):
        TrainConfig(head_init="mean")
    with pytest.raises(ValueError, match="neck_init='identity' needs embedding_dim"):
        create_model(ModelConfig(backbone=BACKBONE, pretrained=None, embedding_dim=7, neck_init="identity"))
    with pytest.raises(ValueError, match="margin head"):
        train(_model_config(head="softmax"), _train_config(max_steps=1, head_init="imprint"), _manifest(2, 2),
              tmp_path)
