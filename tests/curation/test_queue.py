"""The review queue on the server: landmarks by name (id on hover), a decision moves on to the next open
cluster (htmx) with the count left, a one-photo cluster needs no selection, bulk accept with a preview,
and undo of the last decisions after moving on."""

import pytest
from django.urls import reverse

from tests.curation.fixtures import make_queue
from webapp.catalog.models import Image
from webapp.curation.models import LabelChange, NoiseCluster

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def queue(imported_mini):
    return make_queue()


def test_the_queue_names_landmarks_with_their_id_on_hover(client, queue, curator_user):
    client.force_login(curator_user)
    html = client.get(reverse("curation-queue")).content.decode()
    assert '<span class="landmark" title="landmark id 1">london_bridge</span>' in html  # relabel target
    assert '<span class="landmark" title="landmark id 2">piazza_san_marco</span>' in html  # what they are filed under
    assert "landmark 1" not in html.replace("landmark id 1", "")
    assert "3 open clusters left" in html
    three = client.get(queue[0].get_absolute_url()).content.decode()
    assert "move <span" in three and 'title="landmark id 1"' in three


def test_a_decision_loads_the_next_open_cluster_with_the_count_left(client, queue, curator_user):
    three, colosseum, petra = queue
    client.force_login(curator_user)
    ids = list(three.images.values_list("external_id", flat=True))
    response = client.post(reverse("cluster-apply", args=[colosseum.pk]), {"action": "accept"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and response["HX-Push-Url"] == petra.get_absolute_url()
    assert '<div id="review-area">' in html and "<!doctype" not in html  # the area alone, swapped in place
    assert "1 image: accept suggestion. 2 open clusters left." in html and f"Cluster #{petra.pk}" in html
    assert Image.objects.get(pk=colosseum.images.get().pk).landmark.name == "colosseum"

    partly = client.post(reverse("cluster-apply", args=[three.pk]), {"action": "keep", "images": ids[:1]}, **HTMX)
    assert partly["HX-Push-Url"] == three.get_absolute_url()  # photos left to decide: it stays
    assert "2 open clusters left" in partly.content.decode()

    plain = client.post(reverse("cluster-apply", args=[petra.pk]), {"action": "not_landmark"})
    assert plain.status_code == 302 and plain["Location"] == three.get_absolute_url()  # without htmx: a redirect


def test_a_one_photo_cluster_needs_no_selection_but_a_larger_one_does(client, queue, curator_user):
    three, colosseum, _ = queue
    client.force_login(curator_user)
    page = client.get(colosseum.get_absolute_url()).content.decode()
    assert "no selection needed" in page and "checked" in page
    client.post(reverse("cluster-apply", args=[colosseum.pk]), {"action": "keep"})
    assert LabelChange.objects.get(cluster=colosseum).action == "keep"
    refused = client.post(reverse("cluster-apply", args=[three.pk]), {"action": "keep"}, **HTMX)
    assert "Select at least one image first." in refused.content.decode()
    assert not LabelChange.objects.filter(cluster=three).exists()


def test_bulk_accept_previews_then_accepts_as_one_decision_that_undo_reverts(client, queue, curator_user):
    three, colosseum, petra = queue
    client.force_login(curator_user)
    preview = client.get(reverse("bulk-preview"), {"min_confidence": "0.9"}).content.decode()
    assert f"#{colosseum.pk}" in preview and f"#{petra.pk}" in preview and f"#{three.pk}<" not in preview
    assert "2 clusters (2 photos)" in preview and 'title="landmark id 8"' in preview
    assert "from 0 to 1" in client.get(reverse("bulk-preview"), {"min_confidence": "high"}).content.decode()
    assert client.post(reverse("bulk-accept"), {"min_confidence": "2", "clusters": [three.pk]}).status_code == 400

    # Only previewed clusters that are still that confident are taken (three is 0.8).
    client.post(reverse("bulk-accept"), {"min_confidence": "0.9", "clusters": [colosseum.pk, petra.pk, three.pk]})
    assert set(NoiseCluster.objects.filter(status="done").values_list("pk", flat=True)) == {colosseum.pk, petra.pk}
    assert Image.objects.get(pk=petra.images.get().pk).landmark is None
    assert LabelChange.objects.values("batch").distinct().count() == 1

    queue_page = client.get(reverse("curation-queue")).content.decode()
    assert 'id="undo-last"' in queue_page and "Accept suggestion: 2 photos in 2 clusters" in queue_page
    batch = LabelChange.objects.first().batch
    client.post(reverse("batch-undo"), {"batch": str(batch)})
    assert NoiseCluster.objects.filter(status="open").count() == 3
    assert Image.objects.get(pk=colosseum.images.get().pk).landmark.name == "taj_mahal"


def test_the_last_decisions_can_be_undone_after_moving_on(client, queue, curator_user):
    three, colosseum, petra = queue
    client.force_login(curator_user)
    client.post(reverse("cluster-apply", args=[colosseum.pk]), {"action": "accept"}, **HTMX)
    moved_on = client.post(reverse("cluster-apply", args=[petra.pk]), {"action": "keep"}, **HTMX).content.decode()
    assert f"Cluster #{three.pk}" in moved_on
    assert moved_on.count('name="batch"') == 2 and f"cluster #{colosseum.pk}" in moved_on
    first = LabelChange.objects.get(cluster=colosseum).batch
    undone = client.post(reverse("batch-undo"), {"batch": str(first)})
    assert undone["Location"] == colosseum.get_absolute_url()
    assert NoiseCluster.objects.get(pk=colosseum.pk).status == "open"
    assert NoiseCluster.objects.get(pk=petra.pk).status == "done"
