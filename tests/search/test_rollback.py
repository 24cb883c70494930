"""Roll back to an earlier index or model version with one command or one click."""

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion
from webapp.search.services import active_model_version

pytestmark = pytest.mark.django_db


def test_rollback_index_by_command_and_by_click(active_index, client, admin_user_role, viewer_user, tmp_path):
    newer = IndexVersion.objects.create(embedding_set=active_index.embedding_set, path=active_index.path,
                                        params=active_index.params, size=active_index.size)
    call_command("rollback", "--index", str(newer.pk))
    assert IndexVersion.objects.get(is_active=True) == newer
    client.force_login(viewer_user)
    assert client.post(reverse("index-activate", args=[active_index.pk])).status_code == 403
    client.force_login(admin_user_role)
    client.post(reverse("index-activate", args=[active_index.pk]))
    assert IndexVersion.objects.get(is_active=True) == active_index
    broken = IndexVersion.objects.create(embedding_set=active_index.embedding_set, path=str(tmp_path / "half"))
    with pytest.raises(CommandError, match="no complete files"):
        call_command("rollback", "--index", str(broken.pk))
    assert IndexVersion.objects.get(is_active=True) == active_index


def test_pin_and_unpin_a_model(imported_mini, client, admin_user_role):
    old = ModelVersion.objects.create(name="old", checkpoint="/x/old.pt", params={"finished": True})
    new = ModelVersion.objects.create(name="new", checkpoint="/x/new.pt", params={"finished": True})
    assert active_model_version() == new
    call_command("rollback", "--model", str(old.pk))
    assert active_model_version() == old
    client.force_login(admin_user_role)
    client.post(reverse("model-activate", args=[0]))
    assert active_model_version() == new
    assert "Index versions" in client.get(reverse("model-list")).content.decode()
    assert EmbeddingSet.objects.count() == 0
