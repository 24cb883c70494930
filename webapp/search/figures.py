"""Evaluation figures of model and index versions on one evaluation set, each beside the change against its
parent (the version it replaced). An index's figures are its own Evaluation; a model's are those of the
latest index built with it that was evaluated on the set."""

from __future__ import annotations

from dataclasses import dataclass

from webapp.search.models import Evaluation, IndexVersion, ModelVersion

LABELS = {"map": "mAP", "map_no_labels": "mAP without labels", "gap": "GAP", "recall_at_1": "recall@1"}


@dataclass
class Figure:
    key: str
    value: float | None
    change: float | None  # against the parent's figure; None when either is missing


def evaluated_sets() -> list[str]:
    return sorted(set(Evaluation.objects.values_list("dataset", flat=True)))


def latest_set() -> str:
    return Evaluation.objects.values_list("dataset", flat=True).first() or ""


class Board:
    """The figures of every version on ``dataset``."""

    def __init__(self, dataset: str):
        rows = (Evaluation.objects.filter(dataset=dataset).select_related("index_version__embedding_set")
                .order_by("created_at", "id"))
        self.by_index = {e.index_version_id: e.figures for e in rows}
        self.via_index = {e.index_version.embedding_set.model_version_id: e.index_version_id for e in rows}

    def of_index(self, iv: IndexVersion) -> list[Figure]:
        return _compared(self.by_index.get(iv.pk), self.by_index.get(iv.parent_id))

    def of_model(self, mv: ModelVersion) -> list[Figure]:
        return _compared(self._model(mv.pk), self._model(mv.parent_id))

    def index_of_model(self, mv: ModelVersion) -> int | None:
        """The index whose figures stand for the model."""
        return self.via_index.get(mv.pk)

    def _model(self, pk: int | None) -> dict | None:
        return self.by_index.get(self.via_index.get(pk)) if pk else None


def _compared(mine: dict | None, parents: dict | None) -> list[Figure]:
    """One Figure per LABELS key (value None: not evaluated on the set)."""
    mine = mine or {}
    out = []
    for key in LABELS:
        value, before = mine.get(key), (parents or {}).get(key)
        out.append(Figure(key, value, None if value is None or before is None else value - before))
    return out
