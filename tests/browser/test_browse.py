"""A person in a real browser: log in, open the landmark list, search it, open a landmark's photos."""

import pytest

from tests.browser.conftest import check_layout, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_landmark_list_search_and_gallery(page, live_server, imported_mini, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    check_layout(page, "home")
    page.click("nav >> text=Landmarks")
    assert page.locator("text=34 landmarks").is_visible()
    assert page.locator("table.list tbody tr").count() == 34
    check_layout(page, "landmark-list")

    page.fill("#q", "bridge")  # htmx search as you type
    page.wait_for_function("document.querySelectorAll('table.list tbody tr').length === 1")
    assert "q=bridge" in page.url
    page.click("text=london_bridge")
    page.wait_for_selector("ul.grid img")
    images = page.locator("ul.grid img")
    assert images.count() == 4
    page.wait_for_function("[...document.querySelectorAll('ul.grid img')].every(i => i.complete && i.naturalWidth > 0)")
    check_layout(page, "landmark-detail")

    images.first.click()
    page.wait_for_selector("img.preview")
    assert page.locator("dl.meta").inner_text().count("london_bridge") >= 1
    check_layout(page, "image-detail")


def test_jobs_page_shows_progress(page, live_server, viewer_user):
    from webapp.jobs.models import Job

    job = Job.objects.create(kind=Job.Kind.THUMBNAILS, state=Job.State.RUNNING, progress_done=10, progress_total=40)
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/jobs/")
    bar = page.locator(f"#job-{job.pk} [role=progressbar]")
    assert bar.get_attribute("aria-valuenow") == "25"
    Job.objects.filter(pk=job.pk).update(progress_done=40, state=Job.State.SUCCEEDED)
    page.wait_for_function(f"document.querySelector('#job-{job.pk}').dataset.state === 'succeeded'", timeout=10_000)
    assert page.locator(f"#job-{job.pk} [role=progressbar]").get_attribute("aria-valuenow") == "100"
    check_layout(page, "jobs")
