"""A curator lives in the review queue in a real browser: landmarks by name, keyboard help on `?`, a decision
that loads the next cluster with the count left, a one-photo cluster decided without a selection, undo of
the last decision after moving on, and bulk accept with a preview."""

import re

import pytest

from tests.browser.conftest import check_layout, login
from tests.curation.fixtures import make_queue
from webapp.catalog.models import Image
from webapp.curation.models import LabelChange, NoiseCluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_review_flow_with_the_keyboard(page, live_server, imported_mini, curator_user):
    three, colosseum, petra = make_queue()
    ids = sorted(three.images.values_list("external_id", flat=True))
    login(page, live_server, "curator", "pw-curator-123")
    page.click("nav >> text=Review")
    page.wait_for_load_state()  # review.js (deferred) listens for the keys
    assert page.locator("#left").inner_text().startswith("3 open clusters left")
    target = page.locator(f"tr[data-cluster='{three.pk}'] .landmark[title='landmark id 1']")
    assert target.inner_text() == "london_bridge"
    page.keyboard.press("?")
    assert page.locator("#keys-help").is_visible() and "undo your last decision" in page.locator("#keys-help").inner_text()
    page.keyboard.press("Escape")
    assert not page.locator("#keys-help").is_visible()
    check_layout(page, "review-queue")

    page.click("#start-review")
    page.wait_for_url(f"**/curation/clusters/{three.pk}/")
    page.wait_for_load_state()
    page.wait_for_selector(".review-card")
    check_layout(page, "review-cluster")
    page.locator(".review-card").first.focus()
    for key in ["x", "j", "x", "j", "x"]:  # select all three with the keyboard
        page.keyboard.press(key)
    assert page.locator(".review-card.selected").count() == 3
    page.keyboard.press("r")
    page.keyboard.type("london_bridge (1)")
    page.keyboard.press("Enter")
    # The next open cluster comes in place (htmx), with what was done and the count left.
    page.wait_for_selector("text=3 images: relabel. 2 open clusters left.")
    page.wait_for_url(f"**/curation/clusters/{colosseum.pk}/")
    assert Image.objects.filter(external_id__in=ids, landmark__external_id="1").count() == 3
    assert "no selection needed" in page.locator("#shortcuts").inner_text()
    check_layout(page, "review-next-cluster")

    page.keyboard.press("a")  # one photo left to decide: no selection needed
    page.wait_for_selector("text=1 image: accept suggestion. 1 open cluster left.")
    page.wait_for_url(f"**/curation/clusters/{petra.pk}/")
    assert Image.objects.get(pk=colosseum.images.get().pk).landmark.name == "colosseum"

    page.keyboard.press("u")  # undo the last decision, one cluster later: back to it, open again
    page.wait_for_url(f"**/curation/clusters/{colosseum.pk}/")
    page.wait_for_load_state()
    page.wait_for_selector("text=Undone 1 change.")
    assert Image.objects.get(pk=colosseum.images.get().pk).landmark.name == "taj_mahal"
    assert page.locator("tr.change.undone").count() == 1 and LabelChange.objects.filter(action="undo").count() == 1

    page.goto(f"{live_server.url}/curation/")
    check_layout(page, "review-queue-after-undo")
    page.fill("#min-confidence", "0.9")
    page.click("text=Preview")
    page.wait_for_selector("#bulk-form")
    previewed = page.locator(".bulk-list li").all_inner_texts()
    assert len(previewed) == 2 and any(re.search(r"to\s+colosseum", t) for t in previewed)
    check_layout(page, "review-bulk-preview")
    page.click("#bulk-accept")
    page.wait_for_selector("text=Accepted the suggestions of 2 clusters: 2 images. No open clusters left.")
    assert not NoiseCluster.objects.filter(status="open").exists()
    assert page.locator("#undo-last").is_visible()
