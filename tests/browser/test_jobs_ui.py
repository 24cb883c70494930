"""Job pages in a real browser: the stage beside a bar that starts again, cancel that asks first, and the
traceback folded away."""

import pytest

from tests.browser.conftest import check_layout, login
from webapp.jobs.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_bar_that_starts_again_says_which_stage_and_cancel_asks_first(page, live_server, admin_user_role):
    job = Job.objects.create(kind=Job.Kind.BUILD_INDEX, state=Job.State.RUNNING, progress_done=145,
                             progress_total=145, stage="stage 2 of 5: embedding", message="embedding chunks")
    login(page, live_server, "operator", "pw-operator-123")
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert page.locator("#job-status .stage").inner_text() == "stage 2 of 5: embedding"
    Job.objects.filter(pk=job.pk).update(progress_done=65, stage="stage 3 of 5: local features",
                                         message="caching RootSIFT features")
    page.wait_for_function("document.querySelector('#job-status .stage').textContent === 'stage 3 of 5: local features'",
                           timeout=10_000)
    assert "65 / 145" in page.locator("#job-status .progress-text").inner_text()
    assert page.locator("#job-message").inner_text() == "caching RootSIFT features"
    check_layout(page, "job-running")

    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("#cancel-job")
    page.wait_for_timeout(500)
    assert asked and asked[0].startswith(f"Cancel job #{job.pk} (Build index)?")
    assert Job.objects.get(pk=job.pk).state == Job.State.RUNNING  # said no: nothing happened
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel-job")
    page.wait_for_selector("#job-status .state-cancelled")
    assert Job.objects.get(pk=job.pk).state == Job.State.CANCELLED
    assert page.locator("#retry-job").is_visible()


def test_a_failed_job_folds_its_traceback_away(page, live_server, admin_user_role):
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.FAILED, message="images.csv: missing column(s) id",
                             error="DatasetError: images.csv: missing column(s) id\n\nTraceback (most recent call last):\n  ...")
    login(page, live_server, "operator", "pw-operator-123")
    page.goto(f"{live_server.url}/jobs/{job.pk}/")
    assert page.locator("#job-error").inner_text() == "images.csv: missing column(s) id"
    assert not page.locator("details.traceback pre").is_visible()
    page.click("details.traceback summary")
    assert page.locator("details.traceback pre").is_visible()
    check_layout(page, "job-failed")
