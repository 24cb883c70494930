"""Error pages keep the site's layout and menu; server file paths are for admins only."""

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

pytestmark = pytest.mark.django_db


def test_404_has_the_layout_the_menu_and_the_reason(client, viewer_user, imported_mini):
    client.force_login(viewer_user)
    missing = client.get("/no-such-page/")
    html = missing.content.decode()
    assert missing.status_code == 404
    assert 'class="topbar"' in html and f'href="{reverse("landmark-list")}"' in html and "Log out" in html
    assert "There is no page at <code>/no-such-page/</code>" in html
    lm = client.get(reverse("landmark-detail", args=["nope"]))
    assert lm.status_code == 404 and "No Landmark matches the given query." in lm.content.decode()


def test_500_renders_with_the_menu_and_no_request_context(django_assert_num_queries):
    with django_assert_num_queries(0):  # the database may be what failed
        response = server_error(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert 'class="topbar"' in html and "Something went wrong" in html
    for name in ("search", "landmark-list", "image-list", "job-list"):
        assert f'href="{reverse(name)}"' in html


def test_403_has_the_layout_and_says_which_role(client, viewer_user):
    client.force_login(viewer_user)
    response = client.get(reverse("job-new"))
    assert response.status_code == 403
    assert 'class="topbar"' in response.content.decode() and "this needs the admin role" in response.content.decode()


def test_server_file_paths_are_shown_to_admins_only(client, viewer_user, admin_user_role, imported_mini):
    from webapp.catalog.models import Image

    image = Image.objects.get(external_id="233e2de188985424")
    client.force_login(viewer_user)
    assert image.location not in client.get(image.get_absolute_url()).content.decode()
    client.force_login(admin_user_role)
    assert image.location in client.get(image.get_absolute_url()).content.decode()
