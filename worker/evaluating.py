"""The evaluate job: the same ml.evaluate the command runs, recorded as a Job (full JSON kept on disk); a
preset by name, or a whole pipeline configuration (``config``).

With ``index_version`` it evaluates that index's own recorded configuration (its models included) with the
evaluation set's labels and without, and records the figures as an Evaluation row; with ``with_parent``
(the curation loop's last step) also the index it replaced, unless that one has figures on the set
already, so the versions page can say what changed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.conf import settings

from ml.evaluate import EvalCache, evaluate
from ml.pipeline import PipelineConfig
from webapp.jobs.models import Job
from webapp.search.models import Evaluation, IndexVersion
from worker.runner import JobContext, job_function


@job_function(Job.Kind.EVALUATE)
def run_evaluate(job: Job, ctx: JobContext) -> dict:
    params = job.params
    if params.get("index_version"):
        return evaluate_index_versions(job, ctx)
    pipeline = PipelineConfig.from_dict(params["config"]) if params.get("config") else params.get("pipeline")
    result = evaluate(params["path"], pipeline, params.get("model") or None,
                      use_labels=params.get("use_labels", True),
                      progress=lambda d, t: ctx.progress(d, t, "evaluating"))
    out = Path(settings.ARTIFACTS_ROOT) / "evaluations" / f"job-{job.pk}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    summary = {k: result[k] for k in ("medium", "hard", "map_at_100", "recall_at_1", "recall_at_10", "gap",
                                      "seconds_per_query", "database_seconds")}
    return {**summary, "pipeline": result["pipeline"].get("name"), "json": str(out)}


def evaluate_index_versions(job: Job, ctx: JobContext) -> dict:
    dataset = str(Path(job.params["path"]).resolve())
    index = IndexVersion.objects.select_related("parent").get(pk=job.params["index_version"])
    targets = [index]
    if job.params.get("with_parent") and index.parent and not index.parent.evaluations.filter(dataset=dataset).exists():
        targets.append(index.parent)
    done = {}
    for n, target in enumerate(targets, start=1):
        doing = f"evaluating index #{target.pk}"
        ctx.progress(0, None, doing, stage=f"index {n} of {len(targets)}: #{target.pk}")
        figures = index_figures(target, dataset, lambda d, t, doing=doing: ctx.progress(d, t, doing))
        Evaluation.objects.update_or_create(index_version=target, dataset=dataset,
                                            defaults={"figures": figures, "job": job})
        done[str(target.pk)] = figures
    return {"index_version": index.pk, "dataset": dataset, "evaluations": done}


def index_figures(index: IndexVersion, dataset: str, progress) -> dict:
    """mAP (medium), GAP and recall@1 with the set's labels, and mAP without them, in percent."""
    config = index.pipeline_config()
    with tempfile.TemporaryDirectory(prefix="eval-", dir=_mkdir(Path(settings.ARTIFACTS_ROOT) / "work")) as tmp:
        cache = EvalCache(Path(tmp))  # the set is embedded once for both runs
        labels = evaluate(dataset, config, use_labels=True, progress=progress, cache=cache)
        blind = evaluate(dataset, config, use_labels=False, progress=progress, cache=cache)
    return {"map": labels["medium"], "map_no_labels": blind["medium"], "gap": labels["gap"],
            "recall_at_1": labels["recall_at_1"], "queries": len(labels["rankings"])}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
