"""What a model or index version was derived from, as far as its images and labels go, recorded when its job
starts (``params['provenance']``): the data sets of its images, the latest cleaning run, and the curators'
decisions made up to then (how many stand, and the last label change, so "the decisions up to it" can be
listed later from the audit trail). The recipe (models) and the preset (indexes) are recorded beside it,
and the version it replaces is its ``parent``."""

from __future__ import annotations

from collections.abc import Sequence

from webapp.catalog.models import Image, by_external_ids
from webapp.curation.decisions import DECISIONS
from webapp.curation.models import CleaningRun, LabelChange


def derived_from(datasets: set[str], images: int) -> dict:
    return {
        "datasets": sorted(d for d in datasets if d),
        "images": images,
        "cleaning_run": CleaningRun.objects.order_by("-created_at", "-id").values_list("pk", flat=True).first(),
        "decisions": LabelChange.objects.filter(action__in=DECISIONS, undone_by__isnull=True).count(),
        "decisions_upto": LabelChange.objects.order_by("-id").values_list("pk", flat=True).first(),
    }


def datasets_of(ids: Sequence[str]) -> set[str]:
    """The data sets the images ``ids`` were imported from (in chunks: ids may be millions)."""
    found: set[str] = set()
    for _, rows in by_external_ids(Image.objects.order_by(), ids):
        found.update(rows.values_list("dataset", flat=True).distinct())
    return found
