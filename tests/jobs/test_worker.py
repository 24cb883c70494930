"""A job through a real Celery worker process, on the suite's broker (filesystem or Redis) and database."""

import os

import pytest
from django.core.management import call_command

from tests.conftest import wait_for
from webapp.catalog.models import Image
from webapp.jobs.models import Job

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_queued_import_runs_on_the_worker_and_reports_progress(celery_worker_process, mini_dir, capsys):
    call_command("import_dataset", str(mini_dir), "--queue", "--no-index")
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    assert f"queued job {job.pk}" in capsys.readouterr().out
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.worker.endswith(f":{celery_worker_process.pid}") and job.queued
    assert Image.objects.count() == 179

    # The import queued thumbnail generation; watch its progress move in the Job row.
    thumbs = Job.objects.get(pk=job.result["thumbnail_job"])
    seen: list[tuple[str, int, int | None]] = []

    def finished() -> bool:
        row = Job.objects.get(pk=thumbs.pk)
        seen.append((row.state, row.progress_done, row.progress_total))
        return row.is_finished

    assert wait_for(finished, 180, interval=0.05)
    assert seen[-1] == (Job.State.SUCCEEDED, 179, 179)
    assert any(state == Job.State.RUNNING and 0 < done < 179 for state, done, _ in seen), seen[:20]
    assert Image.objects.filter(thumbnail="").count() == 0


def test_a_failing_job_is_recorded_and_the_worker_goes_on(celery_worker_process, tmp_path, mini_dir):
    from webapp.jobs.services import start_job

    bad = start_job(Job.Kind.IMPORT, {"path": str(tmp_path / "missing")})
    good = start_job(Job.Kind.IMPORT, {"path": str(mini_dir), "thumbnails": False, "index": False})
    assert wait_for(lambda: Job.objects.get(pk=good.pk).is_finished, 120)
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.state == Job.State.FAILED and "missing: not a folder" in bad.error
    assert good.state == Job.State.SUCCEEDED
    assert celery_worker_process.poll() is None and os.getpid() != celery_worker_process.pid
