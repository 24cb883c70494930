"""The functions behind each kind of job. Each takes the Job row and a JobContext and returns a small
JSON-able result; the runner records it."""

from __future__ import annotations

from pathlib import Path

from webapp.catalog.models import Image
from webapp.catalog.thumbnails import make_thumbnail
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from worker.importing import import_dataset
from worker.runner import JobContext, job_function


@job_function(Job.Kind.IMPORT)
def run_import(job: Job, ctx: JobContext) -> dict:
    params = job.params
    ctx.progress(0, None, f"reading {params['path']}")
    result = import_dataset(Path(params["path"]), copy=params.get("copy", False), split=params.get("split"),
                            progress=lambda done, total: ctx.progress(done, total, "importing images"),
                            note=ctx.note)
    summary = result.summary()
    _judge_import(result, params["path"], summary)
    if result.images_added and params.get("thumbnails", True):
        # Follow-up work goes to the workers; it is enqueued when this job's transaction commits.
        summary["thumbnail_job"] = start_job(Job.Kind.THUMBNAILS, {"missing": True}, job.created_by).pk
    if result.images_added and params.get("index", True):
        # New images become searchable without a further step: the index is rebuilt over them.
        summary["index_job"] = start_job(Job.Kind.BUILD_INDEX, {}, job.created_by).pk
    return summary


class NothingImported(Exception):
    """Every row of an import was rejected, or it listed none: the job fails with the reason."""


def _judge_import(result, path: str, summary: dict) -> None:
    """Fail an import that imported nothing new while rows were rejected (or there were none), naming the
    first problem; note in ``summary["warning"]`` the rows rejected by one that imported some."""
    if result.images_added == 0 and result.images_skipped == 0:
        first = (result.bad_files + result.problems or [None])[0]
        if first is None:
            raise NothingImported(f"nothing imported: {path} lists no images")
        raise NothingImported(f"nothing imported: all {result.rejected} row(s) were rejected; first: {first}")
    if result.rejected:
        summary["warning"] = (f"{result.rejected} row(s) rejected ({len(result.bad_files)} bad file(s), "
                              f"{len(result.problems)} bad row(s)); see the log")


@job_function(Job.Kind.THUMBNAILS)
def run_thumbnails(job: Job, ctx: JobContext) -> dict:
    """Make the thumbnail of every image that has none (or of the listed ids)."""
    images = Image.objects.all()
    if job.params.get("image_ids"):
        images = images.filter(external_id__in=job.params["image_ids"])
    elif job.params.get("missing", True):
        images = images.filter(thumbnail="")
    pks = list(images.order_by("pk").values_list("pk", flat=True))
    made, failed = 0, 0
    ctx.progress(0, len(pks), "generating thumbnails")
    for i, pk in enumerate(pks, start=1):
        image = Image.objects.get(pk=pk)
        try:
            make_thumbnail(image)
            made += 1
        except Exception as exc:  # one unreadable file must not stop the others
            failed += 1
            ctx.note(f"thumbnail of {image.external_id} ({image.location}) failed: {exc}")
        ctx.progress(i, len(pks))
    return {"thumbnails": made, "failed": failed}

