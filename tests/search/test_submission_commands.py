"""Kaggle submissions from the database: export with the active index, score against a solution."""

import csv
import json

import pytest
from django.core.management import call_command

from webapp.catalog.models import Image

pytestmark = pytest.mark.django_db


def write_solutions(tmp_path):
    """Kaggle solution files for the landmarks-mini queries (all Public)."""
    queries = Image.objects.filter(split="query").select_related("landmark")
    ret, rec = tmp_path / "ret_solution.csv", tmp_path / "rec_solution.csv"
    with ret.open("w", newline="") as f, rec.open("w", newline="") as g:
        wr, wg = csv.writer(f), csv.writer(g)
        wr.writerow(["id", "images", "Usage"])
        wg.writerow(["id", "landmarks", "Usage"])
        for q in queries:
            same = Image.objects.filter(landmark=q.landmark, split="index").values_list("external_id", flat=True)
            wr.writerow([q.external_id, " ".join(same), "Public"])
            wg.writerow([q.external_id, q.landmark.external_id, "Public"])
    return ret, rec


def test_export_and_score_both_tasks(active_index, tmp_path, capsys):
    ret_solution, rec_solution = write_solutions(tmp_path)
    call_command("export_submission", "--task", "retrieval", "--queries", "query", "--out", str(tmp_path / "ret.csv"))
    rows = list(csv.DictReader((tmp_path / "ret.csv").open()))
    assert len(rows) == 34 and all(len(r["images"].split()) == 100 for r in rows)
    call_command("export_submission", "--task", "recognition", "--queries", "query", "--out", str(tmp_path / "rec.csv"))
    rec_rows = list(csv.DictReader((tmp_path / "rec.csv").open()))
    assert list(rec_rows[0]) == ["id", "landmarks"] and len(rec_rows) == 34
    capsys.readouterr()
    call_command("score_submission", str(tmp_path / "ret.csv"), str(ret_solution))
    ret_scores = json.loads(capsys.readouterr().out)
    call_command("score_submission", str(tmp_path / "rec.csv"), str(rec_solution))
    rec_scores = json.loads(capsys.readouterr().out)
    assert ret_scores["task"] == "retrieval" and ret_scores["all"]["map@100"] > 0.5
    assert rec_scores["task"] == "recognition" and rec_scores["all"]["gap"] > 0.5
