"""The clean command end to end on the database: flipped labels in landmarks-mini get flagged, the run is
stored with verdicts and clusters for review, the report CSV has the agreed columns, and re-running with
other thresholds reuses the cached evidence."""

import csv
import random

import pytest
from django.core.management import call_command

from webapp.catalog.models import Image, Landmark
from webapp.curation.models import CleaningRun, NoiseCluster, Verdict
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def flip(fraction: float, seed: int = 0) -> set[str]:
    """Move ``fraction`` of the labelled images to another landmark at random; return their ids."""
    rng = random.Random(seed)
    images = list(Image.objects.filter(landmark__isnull=False).order_by("pk"))
    landmarks = list(Landmark.objects.all())
    flipped = rng.sample(images, round(fraction * len(images)))
    for im in flipped:
        im.landmark = rng.choice([lm for lm in landmarks if lm.pk != im.landmark_id])
        im.save(update_fields=["landmark"])
    return {im.external_id for im in flipped}


def test_clean_without_verification_flags_flips_and_stores_a_run(imported_mini, tmp_path):
    flipped = flip(0.1)
    report = tmp_path / "report.csv"
    call_command("clean", "--no-verify", "--report", str(report))
    run = CleaningRun.objects.get()
    assert Verdict.objects.filter(run=run).count() == 179
    found = set(Verdict.objects.filter(run=run).exclude(verdict="keep").values_list("image__external_id", flat=True))
    assert len(found & flipped) >= len(flipped) // 2
    rows = list(csv.DictReader(report.open()))
    assert list(rows[0]) == ["id", "label", "verdict", "suggested_label", "score"] and len(rows) == 179
    assert all(r["verdict"] in {"keep", "suspect", "drop"} and 0 <= float(r["score"]) <= 1 for r in rows)
    assert NoiseCluster.objects.filter(run=run).exists()
    assert run.stats["keep"] + run.stats["suspect"] + run.stats["drop"] == 179

    call_command("clean", "--no-verify", "--freq-thresh", "2")
    second = Job.objects.filter(kind=Job.Kind.CLEAN).first()
    assert "reused cached evidence" in second.log
    assert CleaningRun.objects.count() == 2
