"""The JSON API (docs/api.md): search by photo, landmark and image metadata. Token authentication
(``Authorization: Token <key>``); search may be opened to anonymous callers with SEARCH_PUBLIC=true."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from ml.images import BadImage
from webapp.api.models import ApiToken, hash_key
from webapp.catalog.models import Image, Landmark
from webapp.search.access import share
from webapp.search.engine import NoIndexError
from webapp.search.querying import run_search
from webapp.search.ratelimit import allow_search

DEFAULT_K, MAX_K = 20, 100
LAST_USED_PRECISION = timedelta(minutes=1)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _token_user(request):
    header = request.headers.get("Authorization", "")
    if not header.startswith("Token "):
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(header[6:].strip())).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # "Last used" is shown to the minute: one write a minute per key, not a write (and, on SQLite, the
    # database's write lock) per request.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def api_view(public_setting: str | None = None):
    """Authenticate by token (401 otherwise, unless ``public_setting`` is true in settings)."""
    def decorate(view):
        @csrf_exempt  # token authentication, never cookies: no cross-site request can carry a key
        @login_not_required
        def wrapped(request, *args, **kwargs):
            request.api_user = _token_user(request)
            if request.api_user is None and not (public_setting and getattr(settings, public_setting, False)):
                return _error(401, "authentication required: send 'Authorization: Token <key>'")
            return view(request, *args, **kwargs)
        wrapped.__name__ = view.__name__
        return wrapped
    return decorate


@api_view(public_setting="SEARCH_PUBLIC")
@require_POST
def search(request):
    upload = request.FILES.get("image")
    if upload is None:
        return _error(400, "send the photo as the multipart field 'image'")
    allowed, wait = allow_search(request)
    if not allowed:
        response = _error(429, f"too many searches: at most {settings.SEARCH_RATE_LIMIT} a minute; retry in {wait} s")
        response["Retry-After"] = str(wait)
        return response
    try:
        k = int(request.POST.get("k", DEFAULT_K))
    except ValueError:
        return _error(400, "k must be an integer")
    if not 1 <= k <= MAX_K:
        return _error(400, f"k must be between 1 and {MAX_K}")
    try:
        query = run_search(upload.read(), upload.name, request.api_user)
    except BadImage as exc:
        return _error(400, f"{upload.name}: {exc}")
    except NoIndexError as exc:
        return _error(503, str(exc))
    landmark = None
    if query.landmark:
        landmark = {"id": query.landmark.external_id, "name": query.landmark.name, "confidence": query.confidence}
    results = [{"image_id": r.image.external_id, "landmark_id": r.image.landmark.external_id if r.image.landmark else None,
                "score": r.score, "global_score": r.global_score, "inliers": r.inliers,
                "dense_inliers": r.dense_inliers, "verified": r.verified}
               for r in query.results.select_related("image__landmark").order_by("rank")[:k]]
    return JsonResponse({"landmark": landmark, "results": results, "index_version": query.index_version_id,
                         "query_url": request.build_absolute_uri(_page_of(query))})


def _page_of(query) -> str:
    """The search's page for its caller: private to the token's user, who opens it logged in; an anonymous
    caller has no session to own it by, so it gets the search's share link."""
    if query.user_id is not None:
        return reverse("search-results", args=[query.uid])
    return reverse("search-shared-results", args=[share(query)])


@api_view()
@require_GET
def landmark(request, landmark_id: str):
    lm = get_object_or_404(Landmark, external_id=landmark_id)
    return JsonResponse({"id": lm.external_id, "name": lm.name, "source": lm.source, "images": lm.images.count(),
                         "url": request.build_absolute_uri(lm.get_absolute_url())})


@api_view()
@require_GET
def image(request, image_id: str):
    im = get_object_or_404(Image.objects.select_related("landmark"), external_id=image_id)
    return JsonResponse({
        "id": im.external_id, "landmark_id": im.landmark.external_id if im.landmark else None,
        "split": im.split, "width": im.width, "height": im.height, "file_size": im.file_size,
        "checksum_sha256": im.checksum, "source": im.source, "dataset": im.dataset,
        "licence": im.landmark.source if im.landmark else "",
        "url": request.build_absolute_uri(im.get_absolute_url()),
        "thumbnail_url": request.build_absolute_uri(reverse("image-thumbnail", args=[im.external_id])),
    })
