"""Training recipes: named settings of ``ml.models.ModelConfig`` and ``ml.train.TrainConfig`` that a retrain
(the curation loop's first step) starts from. A recipe changes only what it names; the rest keeps the
dataclasses' defaults, which are also ``manage.py train``'s. A new recipe is one more entry here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_RECIPE = "current"


@dataclass(frozen=True)
class Recipe:
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "current": Recipe("the default training (the train job's defaults): lite0, ArcFace (s 30, m 0.3), 512 px, "
                      "5 epochs, SGD at lr 1e-3, soft augmentation"),
}


def recipe_params(name: str = DEFAULT_RECIPE, model: dict | None = None, train: dict | None = None) -> dict:
    """A train job's parameters: the recipe's settings with ``model`` and ``train`` overrides on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    return {"recipe": name, "model": {**recipe.model, **(model or {})}, "train": {**recipe.train, **(train or {})}}
