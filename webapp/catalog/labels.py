"""The current labels of indexed images, read in chunks: what search ranks with and what a build's learned
whitening is fitted to. Deleted and taken-down images vote for nothing."""

from __future__ import annotations

from collections.abc import Sequence

from ml.columns import LabelColumn, LabelColumnBuilder
from webapp.catalog.models import Image, by_external_ids


def labels_of(ids: Sequence[str]) -> LabelColumn:
    """Current labels by position in ``ids``; kept as codes (``ml.columns``), so memory stays small at
    millions of images."""
    column = LabelColumnBuilder()
    visible = Image.objects.filter(taken_down=False).values_list("external_id", "landmark__external_id")
    for chunk, rows in by_external_ids(visible, ids):
        current = dict(rows)
        column.extend(current.get(i) for i in chunk)
    return column.build()


def hidden_ids(ids: list[str]) -> set[str]:
    """Of ``ids``, those deleted or taken down since the index was built (they never appear in results)."""
    visible = set(Image.objects.filter(external_id__in=ids, taken_down=False).values_list("external_id", flat=True))
    return set(ids) - visible
