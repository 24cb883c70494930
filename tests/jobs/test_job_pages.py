"""Job pages people can read: fields not dicts, rounded durations, a one-line error (the traceback for
admins), retry only for failed or cancelled jobs, and the stage a job of several stages is in."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db
TRACEBACK = ("DatasetError: images.csv: missing column(s) id, landmark_id\n\nTraceback (most recent call last):\n"
             '  File "/srv/landmarks/worker/jobs.py", line 20, in run_import\nDatasetError: images.csv: ...')


def _text(response) -> str:
    return " ".join(response.content.decode().split())


def test_params_and_result_read_as_fields_with_a_rounded_duration(client, viewer_user):
    start = timezone.now() - timedelta(minutes=4, seconds=5, microseconds=123456)
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.SUCCEEDED, started_at=start,
                             finished_at=start + timedelta(minutes=4, seconds=5, microseconds=123456),
                             params={"path": "/data/mini", "copy": False, "model": {"backbone": "lite0"}},
                             result={"images_added": 1790, "bad_files": 0, "thumbnail_job": 7, "splits": ["a", "b"]})
    client.force_login(viewer_user)
    html = _text(client.get(reverse("job-detail", args=[job.pk])))
    assert "{" not in html.split('id="job-params"')[1].split("</dl>")[0]
    # Each field on its own: PostgreSQL keeps a JSON object's keys in its own order.
    assert "<dt>Path</dt><dd>/data/mini</dd>" in html and "<dt>Copy</dt><dd>no</dd>" in html
    assert '<dt>Model</dt><dd><dl class="fields"><dt>Backbone</dt><dd>lite0</dd></dl></dd>' in html
    assert "<dt>Images added</dt><dd>1,790</dd>" in html and "<dt>Splits</dt><dd>a, b</dd>" in html
    assert f'<dt>Thumbnail job</dt><dd><a href="{reverse("job-detail", args=[7])}">job #7</a></dd>' in html
    assert '<dd id="job-duration">4 min 05 s</dd>' in html and "0:04:05.123456" not in html


def test_a_failed_job_shows_one_line_and_the_traceback_only_to_admins(client, viewer_user, admin_user_role):
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.FAILED, error=TRACEBACK,
                             message="images.csv: missing column(s) id, landmark_id")
    client.force_login(viewer_user)
    html = _text(client.get(reverse("job-detail", args=[job.pk])))
    assert '<p class="error" role="alert" id="job-error">images.csv: missing column(s) id, landmark_id</p>' in html
    assert "Traceback" not in html and "/srv/landmarks" not in html
    client.force_login(admin_user_role)
    html = _text(client.get(reverse("job-detail", args=[job.pk])))
    assert "<details class=\"traceback\"><summary>Traceback (for admins)</summary>" in html
    assert "/srv/landmarks/worker/jobs.py" in html


def test_retry_is_offered_and_done_only_for_failed_or_cancelled_jobs(client, admin_user_role):
    client.force_login(admin_user_role)
    for state in Job.State:
        job = Job.objects.create(kind=Job.Kind.THUMBNAILS, state=state, params={"missing": True})
        html = client.get(reverse("job-detail", args=[job.pk])).content.decode()
        retryable = state in (Job.State.FAILED, Job.State.CANCELLED)
        assert ('id="retry-job"' in html) == retryable, state
        before = Job.objects.count()
        response = client.post(reverse("job-retry", args=[job.pk]), follow=True)
        assert Job.objects.count() == before + retryable, state
        if not retryable:
            assert f"job #{job.pk} is {state}: only a failed or cancelled job can be retried" in \
                response.content.decode()


def test_cancel_asks_first_and_the_stage_is_shown_beside_the_progress(client, admin_user_role):
    job = Job.objects.create(kind=Job.Kind.BUILD_INDEX, state=Job.State.RUNNING, progress_done=65,
                             progress_total=145, stage="stage 3 of 5: local features",
                             message="caching RootSIFT features")
    client.force_login(admin_user_role)
    html = _text(client.get(reverse("job-detail", args=[job.pk])))
    assert 'data-confirm="Cancel job #' in html
    assert '<span class="stage">stage 3 of 5: local features</span> · 65 / 145' in html
    listed = _text(client.get(reverse("job-list")))
    assert '<span class="stage">stage 3 of 5: local features</span> · 65 / 145' in listed
    assert "caching RootSIFT features" in listed


def test_an_import_with_rejected_rows_says_so_on_its_page(client, viewer_user):
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.SUCCEEDED, message="2 row(s) rejected",
                             result={"images_added": 5, "warning": "2 row(s) rejected (2 bad file(s), 0 bad row(s)); see the log"})
    client.force_login(viewer_user)
    html = _text(client.get(reverse("job-detail", args=[job.pk])))
    assert "succeeded with problems" in html
    assert 'id="job-warning">2 row(s) rejected (2 bad file(s), 0 bad row(s)); see the log</p>' in html
    assert "succeeded with problems" in _text(client.get(reverse("job-list")))
