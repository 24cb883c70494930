"""The evaluate job: the same ml.evaluate the command runs, recorded as a Job (full JSON kept on disk); a
preset by name, or a whole pipeline configuration (``config``)."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from ml.evaluate import evaluate
from ml.pipeline import PipelineConfig
from webapp.jobs.models import Job
from worker.runner import JobContext, job_function


@job_function(Job.Kind.EVALUATE)
def run_evaluate(job: Job, ctx: JobContext) -> dict:
    params = job.params
    pipeline = PipelineConfig.from_dict(params["config"]) if params.get("config") else params.get("pipeline")
    result = evaluate(params["path"], pipeline, params.get("model") or None,
                      use_labels=params.get("use_labels", True),
                      progress=lambda d, t: ctx.progress(d, t, "evaluating"))
    out = Path(settings.ARTIFACTS_ROOT) / "evaluations" / f"job-{job.pk}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    summary = {k: result[k] for k in ("medium", "hard", "map_at_100", "recall_at_1", "recall_at_10",
                                      "seconds_per_query", "database_seconds")}
    return {**summary, "pipeline": result["pipeline"].get("name"), "json": str(out)}
