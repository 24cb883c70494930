"""The first pages, rendered with real imported data, and who may see them."""

import pytest
from django.urls import reverse

from webapp.catalog.models import Image, Landmark
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


def test_pages_need_a_login(client, imported_mini):
    for url in [reverse("home"), reverse("landmark-list"), reverse("job-list"),
                reverse("image-thumbnail", args=["233e2de188985424"])]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert client.get(reverse("login")).status_code == 200


def test_home_shows_counts_and_recent_jobs(viewer_client, imported_mini, django_assert_max_num_queries):
    Job.objects.create(kind=Job.Kind.THUMBNAILS, state=Job.State.RUNNING, progress_done=3, progress_total=10)
    with django_assert_max_num_queries(8):
        html = viewer_client.get(reverse("home")).content.decode()
    assert "<strong>34</strong> landmarks" in html and "<strong>179</strong> images" in html
    assert "Generate thumbnails" in html and 'aria-valuenow="30"' in html


def test_landmark_list_searches_and_pages(viewer_client, imported_mini, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        html = viewer_client.get(reverse("landmark-list")).content.decode()
    assert "34 landmarks" in html and "london_bridge" in html
    html = viewer_client.get(reverse("landmark-list"), {"q": "bridge"}).content.decode()
    assert "london_bridge" in html and "piazza_san_marco" not in html
    html = viewer_client.get(reverse("landmark-list"), {"q": "2"}).content.decode()  # exact id
    assert "piazza_san_marco" in html


def test_landmark_list_htmx_returns_only_rows(viewer_client, imported_mini):
    response = viewer_client.get(reverse("landmark-list"), {"q": "bridge"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content and b"london_bridge" in response.content


def test_landmark_detail_shows_a_thumbnail_grid(viewer_client, imported_mini, django_assert_max_num_queries):
    lm = Landmark.objects.get(name="london_bridge")
    with django_assert_max_num_queries(10):
        html = viewer_client.get(lm.get_absolute_url()).content.decode()
    ids = Image.objects.filter(landmark=lm).values_list("external_id", flat=True)
    for image_id in ids:
        assert reverse("image-thumbnail", args=[image_id]) in html


def test_thumbnail_is_served_as_a_small_jpeg(viewer_client, imported_mini):
    from io import BytesIO

    from PIL import Image as PILImage

    response = viewer_client.get(reverse("image-thumbnail", args=["233e2de188985424"]))
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    thumb = PILImage.open(BytesIO(b"".join(response.streaming_content)))
    assert max(thumb.size) <= 256
    assert Image.objects.get(external_id="233e2de188985424").thumbnail  # cached for next time


def test_image_detail_shows_metadata(viewer_client, imported_mini, django_assert_max_num_queries):
    with django_assert_max_num_queries(10):
        html = viewer_client.get(reverse("image-detail", args=["233e2de188985424"])).content.decode()
    assert "london_bridge" in html and "767 × 1024 px" in html and "phototourism" in html


def test_unknown_ids_are_404(viewer_client, imported_mini):
    assert viewer_client.get(reverse("image-detail", args=["nope"])).status_code == 404
    assert viewer_client.get(reverse("landmark-detail", args=["nope"])).status_code == 404
    assert viewer_client.get(reverse("image-thumbnail", args=["nope"])).status_code == 404


def test_job_pages_and_polling(viewer_client):
    running = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.RUNNING, progress_done=5, progress_total=20)
    html = viewer_client.get(reverse("job-list")).content.decode()
    assert 'hx-trigger="every 2s"' in html and 'aria-valuenow="25"' in html
    Job.objects.filter(pk=running.pk).update(state=Job.State.SUCCEEDED, progress_done=20)
    partial = viewer_client.get(reverse("job-list"), HTTP_HX_REQUEST="true").content.decode()
    assert "every 2s" not in partial and "succeeded" in partial  # finished: polling stops
    assert viewer_client.get(reverse("job-detail", args=[running.pk])).status_code == 200


def test_only_admins_may_cancel_or_retry(viewer_client, admin_user_role, client):
    job = Job.objects.create(kind=Job.Kind.IMPORT, state=Job.State.QUEUED)
    assert viewer_client.post(reverse("job-cancel", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    client.force_login(admin_user_role)
    client.post(reverse("job-cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_admin_lists_every_model(client, django_user_model, imported_mini):
    admin = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(admin)
    for name in ["catalog/landmark", "catalog/image", "jobs/job", "search/modelversion",
                 "search/embeddingset", "search/indexversion"]:
        assert client.get(f"/admin/{name}/").status_code == 200, name
