"""A person searching by photo in a real browser: results, why this match, gallery paging, a live job."""

import pytest

from tests.browser.conftest import check_layout, login
from tests.conftest import MINI
from webapp.jobs.models import Job
from webapp.jobs.services import start_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
QUERY = MINI / "images" / "233e2de188985424.jpg"  # London Bridge, a query photo


def test_search_by_photo_and_why_this_match(page, live_server, active_index, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    page.set_input_files("#photo-top", str(QUERY))  # picking a file submits the search
    page.wait_for_selector("#recognised", timeout=60_000)
    assert page.locator("#recognised").inner_text() == "london_bridge"
    top = page.locator(".results li .lm").all_inner_texts()[:3]
    assert all("london_bridge" in t for t in top), top
    page.wait_for_function("[...document.querySelectorAll('.results img')].slice(0, 6).every(i => i.complete && i.naturalWidth > 0)")
    check_layout(page, "search-results")

    page.fill("#min_score", "0.5")  # the cutoff (a probability) hides weaker results, then the page reloads
    page.wait_for_url("**min_score=0.5*")
    page.wait_for_selector(".results li[data-score]")
    assert 0 < page.locator(".results li[data-score]:visible").count() < 20
    page.locator(".why").first.click()
    page.wait_for_selector("line.inlier")
    assert page.locator("line.inlier").count() >= 8
    assert int(page.locator("#inlier-count").inner_text()) >= 8
    # the default pipeline also matches feature maps: those matches are drawn too, one line each
    assert page.locator("line.dense").count() == int(page.locator("#dense-count").inner_text()) >= 20
    check_layout(page, "why-this-match")


def test_gallery_paging(page, live_server, active_index, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/images/?split=index")
    assert page.locator("text=Page 1 of 4").is_visible()
    page.click("a[rel=next]")
    page.wait_for_selector("text=Page 2 of 4")
    assert page.locator("ul.grid li").count() == 48
    check_layout(page, "image-gallery")


def test_job_progress_bar_moves_to_done(page, live_server, imported_mini, viewer_user, celery_worker_process):
    login(page, live_server, "viewer", "pw-viewer-123")
    job = start_job(Job.Kind.THUMBNAILS, {"missing": True})
    page.goto(f"{live_server.url}/jobs/")
    bar = f"#job-{job.pk} [role=progressbar]"
    page.wait_for_function(f"(+document.querySelector('{bar}').getAttribute('aria-valuenow') || 0) > 0", timeout=60_000)
    seen_partial = page.evaluate(f"+document.querySelector('{bar}').getAttribute('aria-valuenow')") < 100
    page.wait_for_function(f"document.querySelector('#job-{job.pk}').dataset.state === 'succeeded'", timeout=120_000)
    assert page.locator(bar).get_attribute("aria-valuenow") == "100"
    assert seen_partial or Job.objects.get(pk=job.pk).progress_total == 179
    check_layout(page, "jobs-done")
