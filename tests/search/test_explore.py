"""Exploring with the index: more like this, nearest landmarks, filters combined with similarity, maps."""

import pytest
from django.urls import reverse

from webapp.catalog.models import Image, Landmark
from webapp.curation import actions

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


def test_image_page_shows_more_like_this(viewer_client, active_index, django_assert_max_num_queries):
    image = Image.objects.get(external_id="930401fd2544918a")  # a London Bridge index photo
    viewer_client.get(image.get_absolute_url())  # loads the engine once
    with django_assert_max_num_queries(12):
        html = viewer_client.get(image.get_absolute_url()).content.decode()
    section = html.split("More like this")[1].split("</ul>")[0]
    assert section.count("<li>") == 12 and "london_bridge" in section
    assert 'href="/images/930401fd2544918a/"' not in section  # not itself


def test_landmark_page_names_nearest_landmarks_and_maps_them(viewer_client, active_index):
    lm = Landmark.objects.get(name="london_bridge")
    html = viewer_client.get(lm.get_absolute_url()).content.decode()
    assert "Nearest other landmarks:" in html
    map_html = viewer_client.get(reverse("landmark-map", args=[lm.external_id])).content.decode()
    assert map_html.count("<circle") >= 4 and 'href="/images/' in map_html


def test_filters_combine_with_similarity(viewer_client, active_index, curator_user):
    url = reverse("image-list")
    assert "145 images" in viewer_client.get(url, {"split": "index"}).content.decode()
    assert "4 images" in viewer_client.get(url, {"landmark": "london_bridge"}).content.decode()
    html = viewer_client.get(url, {"like": "930401fd2544918a", "split": "index"}).content.decode()
    assert "ranked by similarity to 930401fd2544918a" in html
    first = html.split('<ul class="grid">')[1].split('title="')[1].split('"')[0]
    assert first == "930401fd2544918a"  # itself first, then its neighbours
    actions.mark_not_landmark([Image.objects.get(external_id="e7a81f130fe69752")], acting_user=curator_user)
    assert "1 image" in viewer_client.get(url, {"status": "relabelled"}).content.decode()
    assert "1 image" in viewer_client.get(url, {"status": "unlabelled"}).content.decode()


def test_pages_still_work_without_an_index(viewer_client, imported_mini):
    image = Image.objects.get(external_id="930401fd2544918a")
    assert "Not in the search index" in viewer_client.get(image.get_absolute_url()).content.decode()
    html = viewer_client.get(reverse("landmark-map", args=["1"])).content.decode()
    assert "No map" in html
