"""Which message may run a job: a second message for a job a live worker is running (the watchdog re-sent
it while it waited in a long queue) does nothing; once the watchdog releases a job whose worker went
silent, the next message resumes it."""

import pytest
from django.utils import timezone

import worker.registry  # noqa: F401 - registers the job functions, as the worker does
from tests.conftest import synthetic_embedding_set
from webapp.jobs.models import Job
from webapp.jobs.services import create_job
from webapp.search.models import IndexVersion
from worker.runner import execute_job
from worker.watchdog import recover_jobs

pytestmark = pytest.mark.django_db


def running_elsewhere(folder) -> Job:
    """A build_index job that a worker on another host claimed and is heartbeating for."""
    folder.mkdir()
    es, _, _ = synthetic_embedding_set(folder, 60, 8)
    job = create_job(Job.Kind.BUILD_INDEX, {"pipeline": "baseline", "embedding_set": es.pk}, queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, worker="other-host:4242", heartbeat_at=timezone.now())
    return job


def test_a_second_message_for_a_job_a_live_worker_runs_does_nothing(tmp_path):
    job = running_elsewhere(tmp_path / "one")
    again = execute_job(job.pk)
    assert again.state == Job.State.RUNNING and again.worker == "other-host:4242"
    assert not IndexVersion.objects.exists()  # the job's function did not run a second time


def test_a_job_released_by_the_watchdog_or_silent_too_long_is_resumed(tmp_path, settings):
    job = running_elsewhere(tmp_path / "one")
    assert recover_jobs(stale_after=0) == [job.pk]
    job.refresh_from_db()
    assert job.worker == "" and job.state == Job.State.RUNNING  # released, its heartbeat fresh again
    assert execute_job(job.pk).state == Job.State.SUCCEEDED and IndexVersion.objects.get().job_id == job.pk

    job = running_elsewhere(tmp_path / "two")  # a worker silent for longer than JOB_STALE_SECONDS
    settings.JOB_STALE_SECONDS = 0
    assert execute_job(job.pk).state == Job.State.SUCCEEDED


def test_a_retry_of_the_message_that_ran_the_job_continues_it(tmp_path):
    # Celery retrying worker.run_job after a transient error (the database went away) is the same message,
    # not a duplicate: it must not wait for the watchdog.
    job = running_elsewhere(tmp_path / "one")
    assert execute_job(job.pk, retry=True).state == Job.State.SUCCEEDED


def test_a_chord_callback_resumes_the_job_only_for_the_claim_that_sent_the_chord(tmp_path):
    """build_index hands its embedding chunks to a chord whose callback (worker.resume_job) continues the
    job. When the watchdog re-sent the job meanwhile, the worker that claimed it then sent a chord of its
    own: the first chord's callback must not continue the same build a second time."""
    job = running_elsewhere(tmp_path / "one")  # other-host:4242 sent a chord and went on
    Job.objects.filter(pk=job.pk).update(worker="third-host:7")  # re-sent, claimed by another worker
    late = execute_job(job.pk, holder="other-host:4242")
    assert late.state == Job.State.RUNNING and late.worker == "third-host:7"
    assert not IndexVersion.objects.exists()  # the job's function did not run
    assert execute_job(job.pk, holder="third-host:7").state == Job.State.SUCCEEDED  # the standing claim's callback
