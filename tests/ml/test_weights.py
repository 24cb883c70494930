"""Packaged ImageNet weights (mapped by position into timm) and checkpoint files."""

import csv
from pathlib import Path

import pytest
import timm
import torch

from ml.embed import normalise, prepare_image
from ml.images import load_rgb
from ml.models import ModelConfig
from ml.weights import (
    IMAGE_MEAN,
    IMAGE_STD,
    PACKAGED_WEIGHTS,
    WeightsError,
    create_model,
    load_model,
    load_packaged_backbone,
    map_state_in_order,
    packaged_weights_path,
    save_checkpoint,
)

torch.set_num_threads(1)  # the test machine is shared: one thread is fastest there
SUSPENSION_BRIDGE = 839  # ImageNet class index


@pytest.mark.parametrize("name", sorted(PACKAGED_WEIGHTS))
def test_packaged_weights_exist_and_load_into_timm(name):
    path = packaged_weights_path(name)
    assert path.is_file() and path.suffix == ".pth"
    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    load_packaged_backbone(backbone, name)
    source = list(torch.load(path, map_location="cpu", weights_only=True).values())
    assert torch.equal(backbone.conv_stem.weight, source[0])
    assert torch.equal(backbone.bn2.running_var, source[-4])  # then num_batches_tracked, _fc.weight, _fc.bias


def test_no_packaged_weights_for_other_backbones_says_what_to_do():
    with pytest.raises(WeightsError, match="no packaged weights for resnet50; pass a checkpoint path"):
        packaged_weights_path("resnet50")
    with pytest.raises(WeightsError, match="no packaged weights for resnet50"):
        create_model(ModelConfig(backbone="resnet50", pretrained="packaged", head=None))


def test_mapping_fails_loudly_on_shape_or_count_mismatch():
    source = torch.load(packaged_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
    broken = dict(source)
    broken["_bn0.weight"] = torch.zeros(31)
    with pytest.raises(
        WeightsError, match=r"tensor #1 '_bn0.weight' \(31,\) does not fit model tensor 'bn1.weight' \(32,\)"
    ):
        map_state_in_order(broken, target.state_dict())
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=0, global_pool="")
    with pytest.raises(WeightsError, match="tensors to load but the model has"):
        load_packaged_backbone(lite1, "tf_efficientnet_lite0")


def test_mapping_keeps_the_classifier_when_the_model_has_one():
    with_classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_packaged_backbone(with_classifier, "tf_efficientnet_lite0")
    source = torch.load(packaged_weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(with_classifier.classifier.weight, source["_fc.weight"])


def test_product_normalisation_is_timms_for_the_lite_models():
    for name in PACKAGED_WEIGHTS:
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        assert tuple(cfg["mean"]) == IMAGE_MEAN and tuple(cfg["std"]) == IMAGE_STD


def test_mapped_lite0_sees_a_suspension_bridge_in_london_bridge_photos(mini_dir):
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    load_packaged_backbone(classifier, "tf_efficientnet_lite0")
    with (mini_dir / "images.csv").open(newline="") as f:
        london = [r["id"] for r in csv.DictReader(f) if r["landmark_id"] == "1"]
    assert len(london) == 4
    # The product's own loading, resizing and normalisation, at 224 px (the weights' training size).
    images = [prepare_image(load_rgb(mini_dir / "images" / f"{i}.jpg"), 224) for i in london]
    hits = 0
    with torch.inference_mode():
        for img in images:
            top5 = classifier(normalise(img.unsqueeze(0))).topk(5).indices[0].tolist()
            hits += SUSPENSION_BRIDGE in top5
    assert hits >= 3, f"suspension bridge in the top 5 of only {hits} of 4 London Bridge photos"


# ---------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path: Path):
    cfg = ModelConfig(
        pretrained=None,
        embedding_dim=24,
        num_classes=6,
        head="subcenter_arcface",
        class_counts=[1, 2, 3, 4, 5, 6],
    )
    model = create_model(cfg)
    with torch.no_grad():
        model.pool.p.fill_(3.7)  # a trained p must survive
        model.bn.running_mean.uniform_()
    model.eval()
    path = save_checkpoint(tmp_path / "models" / "m.pt", model, cfg, epoch=4, metrics={"map": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded = load_model(path)
    assert not loaded.training and loaded.config == cfg
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
        assert torch.equal(model.head(model(x), None), loaded.head(loaded(x), None))
    extra = torch.load(path, weights_only=True)
    assert (
        extra["epoch"] == 4
        and extra["metrics"] == {"map": 0.5}
        and extra["config"]["head"] == "subcenter_arcface"
    )


def test_load_model_packaged_spec_is_off_the_shelf_gem(mini_dir):
    model = load_model("packaged:tf_efficientnet_lite0")
    same = load_model("tf_efficientnet_lite0")
    assert model.head is None and model.embedding_dim == 1280
    assert torch.equal(model.backbone.conv_stem.weight, same.backbone.conv_stem.weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        # Identity neck: the descriptor is the GeM vector (BatchNorm's eps aside).
        assert torch.allclose(model(x), model.forward_pooled(x) / (1 + 1e-5) ** 0.5, atol=1e-5)
    with pytest.raises(WeightsError, match="neither a checkpoint file nor a packaged backbone"):
        load_model("packaged:resnet50")


def test_load_model_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        load_model(bad)
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="lacks 'config' or 'model'"):
        load_model(tmp_path / "other.pt")
