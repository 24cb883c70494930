"""A curator reviews a noise cluster with the keyboard in a real browser, and undoes one decision."""

import pytest

from tests.browser.conftest import check_layout, login
from tests.curation.fixtures import make_review_data
from webapp.catalog.models import Image
from webapp.curation.models import LabelChange

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_review_flow_with_the_keyboard(page, live_server, imported_mini, curator_user):
    cluster = make_review_data()
    ids = sorted(cluster.images.values_list("external_id", flat=True))
    login(page, live_server, "curator", "pw-curator-123")
    page.click("nav >> text=Review")
    check_layout(page, "review-queue")
    page.click(f"text=#{cluster.pk} Looks like another landmark")
    page.wait_for_selector(".review-card")
    assert page.locator("#shortcuts").is_visible()
    check_layout(page, "review-cluster")

    page.locator(".review-card").first.focus()
    for key in ["x", "j", "x", "j", "x"]:  # select all three with the keyboard
        page.keyboard.press(key)
    assert page.locator(".review-card.selected").count() == 3
    page.keyboard.press("r")
    page.keyboard.type("london_bridge (1)")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=3 images: relabel.")
    assert Image.objects.filter(external_id__in=ids, landmark__external_id="1").count() == 3

    rows = page.locator("tr.change")
    assert rows.count() == 3
    page.click(f"button[aria-label='Undo change to {ids[0]}']")
    page.wait_for_selector("text=is back to its earlier label")
    assert Image.objects.get(external_id=ids[0]).landmark.name == "piazza_san_marco"
    assert page.locator("tr.change.undone").count() == 1
    assert page.locator("tr.change[data-action=undo]").count() == 1
    assert LabelChange.objects.filter(undone_by__isnull=False).count() == 1
    check_layout(page, "review-after-undo")
