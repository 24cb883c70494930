"""python manage.py evaluate DATASET_DIR --json OUT [--no-labels] [--model SPEC] [--pipeline NAME | --config FILE]
[--list-pipelines]

Runs ml.evaluate on a data set in the evaluation layout; reads the database only for ``--model active``.
"""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ml.evaluate import LayoutError, evaluate
from ml.pipeline import DEFAULT_PIPELINE, PIPELINES, PipelineConfig, list_pipelines
from ml.weights import WeightsError


class Command(BaseCommand):
    help = ("Evaluate a retrieval pipeline on DATASET_DIR (images/, queries/, gnd.json): revisited mAP "
            "(Medium/Hard), Kaggle mAP@100, recall@1/10, time per query and for the database.")
    requires_system_checks = []  # a pure computation: no database, but for --model active

    def add_arguments(self, parser):
        parser.add_argument("dataset_dir", nargs="?", type=Path)
        parser.add_argument("--json", type=Path, help="Write the full result (with rankings) to this file.")
        parser.add_argument("--no-labels", action="store_true", help="Ignore gnd.json 'labels' entirely.")
        parser.add_argument("--model", help="Checkpoint path or model spec (e.g. tf_efficientnet_lite0; a+b = "
                            "ensemble), or 'active': the active model version's checkpoint, as build_index "
                            "embeds with it (the pipeline's own packaged models while nothing is trained).")
        parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"Preset name (default {DEFAULT_PIPELINE}).")
        parser.add_argument("--config", type=Path, help="A whole pipeline configuration as JSON (what an index "
                            "version records in its params' \"config\", or `bench/pipelines.py NAME`) instead "
                            "of a preset.")
        parser.add_argument("--list-pipelines", action="store_true", help="List the presets and exit.")

    def handle(self, *args, **o):
        if o["list_pipelines"]:
            for name in list_pipelines():
                mark = " (default)" if name == DEFAULT_PIPELINE else ""
                self.stdout.write(f"{name}{mark}: {PIPELINES[name].description}")
            return
        if o["dataset_dir"] is None:
            raise CommandError("give DATASET_DIR (or --list-pipelines)")
        pipeline = read_config(o["config"]) if o["config"] else o["pipeline"]
        if not o["config"] and o["pipeline"] not in PIPELINES:
            raise CommandError(f"unknown pipeline {o['pipeline']!r}; known: {', '.join(list_pipelines())}")
        model = active_model() if o["model"] == "active" else o["model"]
        try:
            result = evaluate(o["dataset_dir"], pipeline, model, use_labels=not o["no_labels"],
                              progress=self._progress)
        except (LayoutError, WeightsError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            sys.stderr.write("\n")
        if o["json"]:
            o["json"].parent.mkdir(parents=True, exist_ok=True)
            o["json"].write_text(json.dumps(result, indent=1))
        self.stdout.write(summary(result, o["dataset_dir"], not o["no_labels"]))

    def _progress(self, done: int, total: int) -> None:
        sys.stderr.write(f"\r{done}/{total}")
        sys.stderr.flush()


def active_model() -> str | None:
    """What ``--model active`` evaluates: the active ModelVersion's checkpoint, or None (the pipeline's own
    models) when it has none, as ``worker.building.plan_build`` chooses what a new index embeds with."""
    from webapp.search.services import active_model_version

    mv = active_model_version()
    if mv.checkpoint and not Path(mv.checkpoint).is_file():
        raise CommandError(f"the active model {mv.name} has no checkpoint file at {mv.checkpoint}")
    return mv.checkpoint or None


def read_config(path: Path) -> PipelineConfig:
    try:
        return PipelineConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"--config {path}: not a pipeline configuration ({exc})") from exc


def summary(result: dict, dataset: Path, labels: bool) -> str:
    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [
        ("data set", str(dataset)),
        ("pipeline", result["pipeline"]["name"] + ("" if labels else " (no labels)")),
        ("mAP medium", fmt(result["medium"])),
        ("mAP hard", fmt(result["hard"])),
        ("mAP@100", fmt(result["map_at_100"])),
        ("recall@1", fmt(result["recall_at_1"], 1)),
        ("recall@10", fmt(result["recall_at_10"], 1)),
        ("GAP", fmt(result["gap"])),
        ("s / query", fmt(result["seconds_per_query"], 3)),
        ("database s", fmt(result["database_seconds"], 1)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
