"""One answer to "which model does what": the models page names the models the active index searches with
(as it recorded them), cleaning embeds with those same models and settings, and new builds start from the
active model version."""

import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from ml.pipeline import MULTI_SCALE
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet

pytestmark = pytest.mark.django_db


def _in_use(html: str) -> str:
    return re.search(r'<dl class="meta in-use" id="models-in-use">(.*?)</dl>', html, re.S).group(1)


def test_the_models_page_and_cleaning_name_the_models_search_uses(active_index, client, viewer_user):
    client.force_login(viewer_user)
    block = _in_use(client.get(reverse("model-list")).content.decode())
    assert f"index #{active_index.pk} (default): <strong>tf_efficientnet_lite2</strong>" in block
    assert "<strong>tf_efficientnet_lite2 at 512 px, 3 scales, mirrored</strong>, as the search index embeds" in block
    assert "each pipeline's own ImageNet weights" in block and "lite0" not in block

    # Cleaning embeds the way search does (the fixture's set holds no files: it embeds them itself) ...
    call_command("clean", "--splits", "query", "--no-verify")
    es = EmbeddingSet.objects.get(job__kind=Job.Kind.CLEAN)
    assert es.params["models"] == ["tf_efficientnet_lite2"] and es.image_count == 34
    assert es.params["embed"] == {"image_size": 512, "scales": list(MULTI_SCALE), "flip": True}
    assert es.model_version == active_index.embedding_set.model_version
    # ... and a later clean takes that set rather than embedding again.
    call_command("clean", "--splits", "query", "--no-verify", "--verify-thresh", "25")
    assert EmbeddingSet.objects.count() == 2  # the index's and the first clean's
    assert Job.objects.filter(kind=Job.Kind.CLEAN).latest("pk").result["cleaning_run"]
