"""Page behaviours a person noticed: the main upload form submits on pick and drop, a dropped non-image
says so, tiles name their landmark, the models table fits a 390 px phone with its buttons, history dates
stay inside their cards, and the 2-D map has a legend and hover labels."""

import base64
import io
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from tests.browser.conftest import SHOTS, WIDTHS, check_layout, login
from tests.conftest import MINI
from webapp.catalog.models import Image, Landmark
from webapp.jobs.models import Job
from webapp.search.models import ModelVersion, SearchQuery

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
QUERY = MINI / "images" / "233e2de188985424.jpg"
DROP = """([b64, name, type, selector]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type}));
  document.querySelector(selector).dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
}"""


def drop(page, data: bytes, name: str, kind: str, selector: str) -> None:
    page.evaluate(DROP, [base64.b64encode(data).decode(), name, kind, selector])


def test_the_main_upload_form_submits_on_pick_and_on_drop(page, live_server, viewer_user):
    """No index yet: a submitted search comes back with that page, which proves the form was sent."""
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/search/")
    with page.expect_navigation():
        page.set_input_files("#photo-main", str(QUERY))
    assert page.locator("#no-index").is_visible()

    page.goto(f"{live_server.url}/search/")
    with page.expect_navigation():
        drop(page, QUERY.read_bytes(), "bridge.jpg", "image/jpeg", "main label.drop")
    assert page.locator("#no-index").is_visible()


def test_dropping_a_non_image_says_so(page, live_server, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/search/")
    drop(page, b"%PDF-1.4 not a photo", "report.pdf", "application/pdf", "main label.drop")
    error = page.locator("main .upload-error")
    error.wait_for()
    assert error.inner_text() == "“report.pdf” is not an image: drop, paste or pick a photo (JPEG, PNG, WebP…)."
    assert page.url == f"{live_server.url}/search/"
    drop(page, b"hello", "notes.txt", "text/plain", "main h1")  # dropped elsewhere: the main form says it
    assert "“notes.txt” is not an image" in error.inner_text()
    check_layout(page, "search-drop-error")


def test_tiles_name_their_landmark(page, live_server, imported_mini, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/landmarks/1/")
    assert page.locator("ul.grid .cap .lm").all_inner_texts() == ["london_bridge"] * 4
    page.goto(f"{live_server.url}/images/?split=query")
    names = page.locator("ul.grid .cap .lm").all_inner_texts()
    expected = [im.landmark.name if im.landmark else "unlabelled" for im in
                Image.objects.filter(split="query").select_related("landmark").order_by("external_id")[:48]]
    assert names == expected
    assert "233e2de188985424" not in page.locator("ul.grid .cap").first.inner_text()
    check_layout(page, "image-tiles")


def test_the_models_table_fits_a_phone_with_its_buttons(page, live_server, admin_user_role):
    for name in ("lite0-arcface-run-with-a-rather-long-name", "lite2-cosface"):
        ModelVersion.objects.create(name=name, backbone="tf_efficientnet_lite0", head="arcface",
                                    checkpoint=f"/models/{name}.pt", params={"finished": True})
    login(page, live_server, "operator", "pw-operator-123")
    page.goto(f"{live_server.url}/models/")
    page.set_viewport_size({"width": WIDTHS["phone"], "height": 900})
    buttons = page.locator("main button:has-text('Make active')")
    assert buttons.count() >= 1
    for i in range(buttons.count()):
        box = buttons.nth(i).bounding_box()
        assert buttons.nth(i).is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= WIDTHS["phone"], box
    start = page.locator("#start-build_index-now")  # no index yet: admins start the build here
    assert start.is_visible() and start.bounding_box()["x"] + start.bounding_box()["width"] <= WIDTHS["phone"]
    check_layout(page, "models")
    with page.expect_navigation():
        start.click()
    job = Job.objects.get(kind=Job.Kind.BUILD_INDEX)
    assert page.url == f"{live_server.url}/jobs/{job.pk}/"


def test_history_dates_stay_inside_their_cards(page, live_server, viewer_user):
    landmark = Landmark.objects.create(external_id="77", name="strecha_herz_jesus_kirche")  # one long word
    for _ in range(3):
        uid = uuid.uuid4()
        buf = io.BytesIO()
        PILImage.new("RGB", (64, 48), (90, 90, 200)).save(buf, "JPEG")
        SearchQuery.objects.create(uid=uid, user=viewer_user, original_name="x.jpg", landmark=landmark,
                                   photo=default_storage.save(f"queries/{uid}.jpg", ContentFile(buf.getvalue())))
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/search/history/")
    assert page.locator("main .grid li").count() == 3
    for width in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": 900})
        outside = page.evaluate("""() => [...document.querySelectorAll('main .grid li')].filter(li => {
            const card = li.getBoundingClientRect(), when = li.querySelector('.cap > :last-child').getBoundingClientRect();
            return when.right > card.right + 0.5 || when.width === 0; }).length""")
        assert outside == 0, width
    check_layout(page, "history")


def test_the_map_has_a_legend_and_hover_labels(page, live_server, active_index, viewer_user):
    login(page, live_server, "viewer", "pw-viewer-123")
    page.goto(f"{live_server.url}/landmarks/1/map/")
    legend = [name.strip() for name in page.locator("ul.legend li").all_inner_texts()]
    assert "london_bridge" in legend and len(legend) >= 2 and legend == sorted(legend)
    dot = page.locator("svg.map circle").first
    label = dot.get_attribute("data-label")
    dot.hover()
    shown = page.locator("#map-label")
    shown.wait_for()
    assert shown.inner_text() == label and label.split(" · ")[0] in legend
    # Not check_layout: the dots of a scatter plot overlap by design. The page must not scroll sideways.
    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"map-{name}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.locator("ul.legend").bounding_box()["x"] + page.locator("ul.legend").bounding_box()["width"] <= width
