"""Searches are private: the owner and admins open one by its URL, others get a 404 as for a search that
does not exist; the owner's share link opens it for anyone allowed to search; the owner deletes it with
its photo."""

import io
import uuid

import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage

from webapp.catalog.models import Image
from webapp.search.access import SESSION_KEY
from webapp.search.models import SearchQuery, SearchResult

pytestmark = pytest.mark.django_db
IMAGE = "233e2de188985424"


def _jpeg() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (80, 60), (200, 120, 10)).save(buf, "JPEG")
    return buf.getvalue()


def kept_search(user) -> SearchQuery:
    """A search as querying.py keeps one: a stored photo and a result."""
    uid = uuid.uuid4()
    photo = default_storage.save(f"queries/{uid}.jpg", ContentFile(_jpeg()))
    query = SearchQuery.objects.create(uid=uid, user=user, photo=photo, original_name="mine.jpg")
    SearchResult.objects.create(query=query, rank=1, image=Image.objects.get(external_id=IMAGE), score=0.8,
                                global_score=0.8)
    return query


def private_pages(query) -> list[str]:
    args = [query.uid]
    return [reverse("search-results", args=args), reverse("search-photo", args=args),
            reverse("search-map", args=args)]


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", password="pw-owner-123")


def test_only_the_owner_and_admins_open_a_search(owner, viewer_user, admin_user_role, django_user_model,
                                                imported_mini):
    query = kept_search(owner)
    superuser = django_user_model.objects.create_superuser("root", password="pw-root-123")
    for user in (owner, admin_user_role, superuser):
        client = as_user(user)
        assert [client.get(url).status_code for url in private_pages(query)] == [200, 200, 200], user
    stranger = as_user(viewer_user)
    for url in private_pages(query):
        response = stranger.get(url)
        assert response.status_code == 404 and "No search matches the given query." in response.content.decode()
    assert stranger.get(reverse("search-match", args=[query.uid, IMAGE])).status_code == 404
    assert stranger.post(reverse("search-rerun", args=[query.uid])).status_code == 404
    assert stranger.get(reverse("search-history")).content.decode().count(str(query.uid)) == 0


def test_the_owner_shares_with_an_unguessable_link_and_can_stop(owner, viewer_user, imported_mini, settings):
    query = kept_search(owner)
    mine = as_user(owner)
    assert "Private: only you and admins can open this page." in " ".join(
        mine.get(private_pages(query)[0]).content.decode().split())
    assert as_user(viewer_user).post(reverse("search-share", args=[query.uid])).status_code == 404  # not theirs
    mine.post(reverse("search-share", args=[query.uid]))
    query.refresh_from_db()
    token = query.share_token
    assert token and len(token) >= 40 and str(query.uid) not in token
    shared = reverse("search-shared-results", args=[token])
    assert shared in mine.get(private_pages(query)[0]).content.decode()

    other = as_user(viewer_user)
    page = other.get(shared)
    html = page.content.decode()
    assert page.status_code == 200 and "A shared search." in html
    # the shared page's photo, map and matches go through the link too, never the private id
    assert reverse("search-shared-photo", args=[token]) in html and str(query.uid) not in html
    assert other.get(reverse("search-shared-photo", args=[token])).status_code == 200
    assert other.get(reverse("search-shared-map", args=[token])).status_code == 200
    assert other.get(private_pages(query)[0]).status_code == 404  # the private URL stays private

    anonymous = Client()
    assert anonymous.get(shared).status_code == 302  # only those allowed to search
    settings.SEARCH_PUBLIC = True
    assert anonymous.get(shared).status_code == 200

    mine.post(reverse("search-share", args=[query.uid]), {"action": "stop"})
    assert other.get(shared).status_code == 404
    assert other.get(reverse("search-shared-results", args=["x" * 43])).status_code == 404


def test_the_owner_deletes_a_search_with_its_photo(owner, viewer_user, imported_mini,
                                                   django_capture_on_commit_callbacks):
    query = kept_search(owner)
    photo = query.photo.name
    assert as_user(viewer_user).post(reverse("search-delete", args=[query.uid])).status_code == 404
    assert SearchQuery.objects.filter(pk=query.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(owner).post(reverse("search-delete", args=[query.uid]))
    assert response.status_code == 302 and response["Location"] == reverse("search-history")
    assert not SearchQuery.objects.filter(pk=query.pk).exists() and not SearchResult.objects.exists()
    assert not default_storage.exists(photo)


def test_an_anonymous_search_belongs_to_its_session(imported_mini, settings):
    settings.SEARCH_PUBLIC = True
    query = kept_search(None)
    mine, theirs = Client(), Client()
    session = mine.session
    session[SESSION_KEY] = [str(query.uid)]  # what search_home records for the session that ran it
    session.save()
    mine.cookies["sessionid"] = session.session_key
    assert [mine.get(url).status_code for url in private_pages(query)] == [200, 200, 200]
    assert [theirs.get(url).status_code for url in private_pages(query)] == [404, 404, 404]


def test_admins_group_role_is_needed_not_just_staff(django_user_model, owner, imported_mini):
    staff = django_user_model.objects.create_user("staffer", password="pw-staff-123", is_staff=True)
    query = kept_search(owner)
    assert as_user(staff).get(private_pages(query)[0]).status_code == 404
    staff.groups.add(Group.objects.get_or_create(name="admins")[0])
    assert as_user(staff).get(private_pages(query)[0]).status_code == 200
