"""A stored file that is gone (a search's photo, a collection image's file) gives a clear 410/404 page in
the site's layout, never a 500."""

import io
import shutil
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image as PILImage

from tests.conftest import MINI
from webapp.catalog.models import Image
from webapp.search.models import SearchQuery, SearchResult

pytestmark = pytest.mark.django_db


def _jpeg() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (80, 60), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def search_with_lost_photo(user, image: Image) -> SearchQuery:
    """A kept search, with one result, whose photo is then deleted from storage."""
    name = default_storage.save("queries/lost.jpg", ContentFile(_jpeg()))
    query = SearchQuery.objects.create(uid=uuid.uuid4(), user=user, photo=name, original_name="lost.jpg")
    SearchResult.objects.create(query=query, rank=1, image=image, score=0.9, global_score=0.9)
    default_storage.delete(name)
    return query


def _assert_gone_page(response, words: str) -> None:
    html = " ".join(response.content.decode().split())
    assert response.status_code == 410, response.status_code
    assert 'class="topbar"' in html and "No longer stored" in html and words in html


def test_a_lost_search_photo_gives_410_pages_not_500(client, viewer_user, imported_mini):
    client.force_login(viewer_user)
    image = Image.objects.get(external_id="233e2de188985424")
    query = search_with_lost_photo(viewer_user, image)
    _assert_gone_page(client.get(reverse("search-photo", args=[query.uid])), "no longer stored")
    _assert_gone_page(client.get(reverse("search-match", args=[query.uid, image.external_id])),
                      "The photo of this search is no longer stored")
    _assert_gone_page(client.post(reverse("search-rerun", args=[query.uid]), {"verify": "on"}),
                      "cannot be shown or searched again")
    assert SearchQuery.objects.count() == 1  # nothing half made
    assert client.get(reverse("search-results", args=[query.uid])).status_code == 200  # the page itself stays


def test_a_collection_image_whose_file_is_gone_gives_404_on_its_thumbnails(client, viewer_user, imported_mini,
                                                                           tmp_path):
    client.force_login(viewer_user)
    copy = tmp_path / "copy.jpg"
    shutil.copy(MINI / "images" / "233e2de188985424.jpg", copy)
    image = Image.objects.create(external_id="gone1", path=str(copy), checksum="x", file_size=1, width=767,
                                 height=1024)
    copy.unlink()
    for name in ("image-thumbnail", "image-preview"):
        response = client.get(reverse(name, args=["gone1"]))
        assert response.status_code == 404
        assert "The file of image gone1 is missing or cannot be read." in response.content.decode()
    assert client.get(image.get_absolute_url()).status_code == 200


def test_why_this_match_for_a_result_whose_file_is_gone(client, viewer_user, active_index, tmp_path):
    client.force_login(viewer_user)
    copy = tmp_path / "copy.jpg"
    shutil.copy(MINI / "images" / "233e2de188985424.jpg", copy)
    image = Image.objects.create(external_id="gone2", path=str(copy), checksum="x", file_size=1, width=767,
                                 height=1024)  # not indexed: no cached features, so its file is read
    name = default_storage.save("queries/kept.jpg", ContentFile((MINI / "images" / "233e2de188985424.jpg")
                                                                .read_bytes()))
    query = SearchQuery.objects.create(uid=uuid.uuid4(), user=viewer_user, photo=name)
    SearchResult.objects.create(query=query, rank=1, image=image, score=0.9, global_score=0.9)
    copy.unlink()
    _assert_gone_page(client.get(reverse("search-match", args=[query.uid, "gone2"])),
                      "The file of result gone2 is missing from the collection")
