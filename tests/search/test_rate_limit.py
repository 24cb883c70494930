"""The search rate limit holds across web processes: two real gunicorn servers on one database, hammered
at once on every path that runs a search (upload form, API, search again), let exactly the limit through."""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image as PILImage

from tests.conftest import _worker_env
from tests.faults.private_services import free_port, start_web, stop_process
from webapp.api.models import ApiToken
from webapp.search.models import SearchQuery

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 4
CSRF = "a" * 32  # a CSRF secret of our own, sent as cookie and form field alike


@pytest.fixture
def two_servers(settings, tmp_path):
    env = _worker_env(settings) | {"SEARCH_RATE_LIMIT": str(LIMIT)}
    servers = []
    try:
        for name in ("a", "b"):
            port = free_port()
            servers.append((start_web(env, port, tmp_path / f"web-{name}.log"), f"http://127.0.0.1:{port}"))
        yield [url for _, url in servers]
    finally:
        for proc, _ in servers:
            stop_process(proc)


def _multipart(fields: dict[str, str], image: bytes | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if image is not None:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
                  "Content-Type: image/jpeg\r\n\r\n".encode() + image + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _post(url: str, fields: dict[str, str], image: bytes | None, headers: dict[str, str]) -> int:
    body, content_type = _multipart(fields, image)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:  # 4xx, 5xx, and the 302 we do not follow
        return exc.code


def _hammer(urls: list[str], path: str, fields: dict, image: bytes | None, headers: dict) -> list[int]:
    """3x the limit at once, alternating between the two servers; the status of each."""
    targets = [urls[i % 2] + path for i in range(3 * LIMIT)]
    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(lambda url: _post(url, fields, image, headers), targets))


def _session_headers(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF}"}


def _fresh_minute() -> None:
    """Start well inside a minute, so the whole burst is counted in one window."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def test_two_web_processes_let_exactly_the_limit_through(two_servers, django_user_model):
    """No index is active, so an allowed request fails after the limiter (400 or 503, or a redirect with a
    message): what counts here is how many got past it, against the 429s."""
    web, api, again = (django_user_model.objects.create_user(n, password=f"pw-{n}-12345") for n in "wxy")
    photo = default_storage.save("queries/hammer.jpg", ContentFile(_jpeg()))
    query = SearchQuery.objects.create(uid=uuid.uuid4(), user=again, photo=photo)
    _fresh_minute()

    uploads = _hammer(two_servers, "/search/", {"csrfmiddlewaretoken": CSRF}, b"not a photo", _session_headers(web))
    via_api = _hammer(two_servers, "/api/search", {}, b"not a photo",
                      {"Authorization": f"Token {ApiToken.issue(api)}"})
    reruns = _hammer(two_servers, f"/search/{query.uid}/again/", {"csrfmiddlewaretoken": CSRF, "verify": "on"},
                     None, _session_headers(again))

    for name, statuses in (("upload", uploads), ("api", via_api), ("search again", reruns)):
        assert 403 not in statuses, f"{name}: refused by CSRF or a role check: {statuses}"
        assert sum(s != 429 for s in statuses) == LIMIT, f"{name}: {statuses}"
        assert statuses.count(429) == 2 * LIMIT


def _jpeg() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48), (120, 90, 60)).save(buf, "JPEG")
    return buf.getvalue()
