"""Admins start jobs from the web; the forms refuse paths outside IMPORT_ROOTS; others get 403."""

import pytest
from django.urls import reverse

from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_admin_starts_an_import_from_the_web(client, admin_user_role, mini_dir, settings):
    settings.IMPORT_ROOTS = [str(mini_dir.parent)]
    client.force_login(admin_user_role)
    assert client.get(reverse("job-new")).status_code == 200
    response = client.post(reverse("job-new"), {"kind": "import_dataset", "import_dataset-path": str(mini_dir)})
    job = Job.objects.get()
    assert response["Location"] == reverse("job-detail", args=[job.pk])
    assert job.kind == "import_dataset" and job.params["path"] == str(mini_dir) and job.queued
    assert job.created_by == admin_user_role


def test_paths_outside_the_allowed_roots_are_refused(client, admin_user_role, tmp_path, settings):
    settings.IMPORT_ROOTS = [str(tmp_path / "data")]
    client.force_login(admin_user_role)
    response = client.post(reverse("job-new"), {"kind": "evaluate", "evaluate-path": "/etc",
                                                "evaluate-pipeline": "baseline"})
    assert response.status_code == 400 and "is not under an allowed folder" in response.content.decode()
    assert not Job.objects.exists()


def test_every_kind_has_a_form_and_viewers_cannot_start(client, viewer_user, admin_user_role):
    client.force_login(admin_user_role)
    html = client.get(reverse("job-new")).content.decode()
    for kind in ["import_dataset", "train", "embed", "build_index", "clean", "evaluate"]:
        assert f'id="start-{kind}"' in html
    response = client.post(reverse("job-new"), {"kind": "build_index", "build_index-pipeline": "baseline"})
    assert Job.objects.get().params == {"pipeline": "baseline"} and response.status_code == 302
    client.force_login(viewer_user)
    assert client.get(reverse("job-new")).status_code == 403
    assert client.post(reverse("job-new"), {"kind": "build_index"}).status_code == 403


def test_train_form_few_shot_recipe(client, admin_user_role):
    client.force_login(admin_user_role)
    response = client.post(reverse("job-new"), {
        "kind": "train", "train-backbone": "tf_efficientnet_lite0", "train-head": "arcface", "train-epochs": "10",
        "train-batch_size": "16", "train-image_size": "384", "train-few_shot": "on"})
    params = Job.objects.get().params
    assert response.status_code == 302
    assert params["model"] == {"backbone": "tf_efficientnet_lite0", "head": "arcface", "neck_init": "identity",
                               "embedding_dim": 1280}
    assert params["train"]["head_init"] == "imprint" and params["train"]["optimizer"] == "adamw"
