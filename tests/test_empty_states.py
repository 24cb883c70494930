"""Empty pages tell a web user what is happening (the job that will fill them, with its link) or, for
admins, offer to start it; never a shell command."""

import pytest
from django.urls import reverse

from tests.conftest import MINI
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def _text(response) -> str:
    return " ".join(response.content.decode().split())


def test_a_queued_index_build_is_named_with_its_link(client, viewer_user, imported_mini):
    job = Job.objects.create(kind=Job.Kind.BUILD_INDEX, state=Job.State.QUEUED)
    client.force_login(viewer_user)
    for url in (reverse("landmark-map", args=["1"]), reverse("model-list")):
        html = _text(client.get(url))
        assert f'A <a href="{reverse("job-detail", args=[job.pk])}">build index job (#{job.pk})</a> is queued' in html
        assert "manage.py" not in html
    with open(MINI / "images" / "233e2de188985424.jpg", "rb") as f:
        search = client.post(reverse("search"), {"image": f})
    assert search.status_code == 503
    html = _text(search)
    assert "No search index yet" in html and f"build index job (#{job.pk})</a> is queued" in html
    assert "manage.py" not in html


def test_admins_get_a_button_that_starts_the_job(client, admin_user_role, viewer_user, imported_mini):
    client.force_login(admin_user_role)
    html = client.get(reverse("landmark-map", args=["1"])).content.decode()
    assert 'id="start-build_index-now"' in html and "manage.py" not in html
    response = client.post(reverse("job-new"), {"kind": "build_index", "build_index-pipeline": _default_pipeline(html)})
    job = Job.objects.get(kind=Job.Kind.BUILD_INDEX)
    assert response["Location"] == reverse("job-detail", args=[job.pk])
    client.force_login(viewer_user)
    html = _text(client.get(reverse("landmark-map", args=["1"])))
    assert "start-build_index-now" not in html and f"build index job (#{job.pk})</a> is queued" in html


def test_a_failed_job_is_said_and_can_be_tried_again(client, admin_user_role):
    job = Job.objects.create(kind=Job.Kind.CLEAN, state=Job.State.FAILED, error="x")
    client.force_login(admin_user_role)
    html = _text(client.get(reverse("curation-queue")))
    assert f'The last <a href="{reverse("job-detail", args=[job.pk])}">clean labels job (#{job.pk})</a> failed.' in html
    assert 'name="clean-verify" value="on"' in html and 'name="clean-verify_thresh" value="15"' in html
    assert "manage.py" not in html


def test_an_empty_collection_links_admins_to_the_import_form(client, admin_user_role, viewer_user):
    client.force_login(admin_user_role)
    html = _text(client.get(reverse("home")))
    assert f'No photos yet. <span class="job-hint" data-kind="import_dataset"> <a href="{reverse("job-new")}#start-import_dataset">' in html
    client.force_login(viewer_user)
    html = _text(client.get(reverse("home")))
    assert "An administrator can start “Import data set” to make the collection." in html and "manage.py" not in html


def _default_pipeline(html: str) -> str:
    return html.split('name="build_index-pipeline" value="')[1].split('"')[0]
