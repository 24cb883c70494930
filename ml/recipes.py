"""Training recipes: named settings of ``ml.models.ModelConfig`` and ``ml.train.TrainConfig`` that a retrain
(the curation loop's first step) starts from. A recipe changes only what it names; the rest keeps the
dataclasses' defaults, which are also ``manage.py train``'s. A new recipe is one more entry here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_RECIPE = "recommended"  # what the curation loop offers first: trained to transfer (docs/benchmarks.md)


@dataclass(frozen=True)
class Recipe:
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "current": Recipe("the default training (the train job's defaults): lite0, ArcFace (s 30, m 0.3), 512 px, "
                      "5 epochs, SGD at lr 1e-3, soft augmentation"),
    "recommended": Recipe(
        "fine-tunes lite2 (the default pipeline's model) so it transfers to unseen landmarks: ArcFace on GeM "
        "from the ImageNet descriptor (identity neck, imprinted centres, frozen BN), stem + first 5 of 7 blocks "
        "frozen (dense matching's block 4 unchanged), distilled towards the packaged descriptor, middle "
        "augmentation; bounded cost: 240 AdamW steps of 16 photos at 224 px, one thread (7.2 min on 2 busy cores)",
        model={"backbone": "tf_efficientnet_lite2", "head": "arcface", "s": 30.0, "m": 0.3,
               "neck_init": "identity", "embedding_dim": 1280, "pretrained": "packaged"},
        train={"max_steps": 240, "batch_size": 16, "image_size": 224, "template": None, "optimizer": "adamw",
               "lr": 3e-4, "backbone_lr_mult": 1.0, "warmup_steps": 20, "augmentation": "middle",
               "freeze_bn": True, "head_init": "imprint", "freeze_blocks": 5, "distill_weight": 5.0,
               "threads": 1}),
}


def recipe_params(name: str = DEFAULT_RECIPE, model: dict | None = None, train: dict | None = None) -> dict:
    """A train job's parameters: the recipe's settings with ``model`` and ``train`` overrides on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    return {"recipe": name, "model": {**recipe.model, **(model or {})}, "train": {**recipe.train, **(train or {})}}
