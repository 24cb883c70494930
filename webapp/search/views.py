"""Search by photo: the upload, the results page (landmark, ranked grid, score cutoff, paging, options),
the user's history, and "why this match"."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Count, Max
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from ml.images import BadImage
from webapp.search import access
from webapp.search.engine import NoIndexError, Options
from webapp.search.matching import match_drawing
from webapp.search.models import SearchQuery
from webapp.search.querying import PhotoMissing, rerun_search, run_search
from webapp.search.ratelimit import allow_search, too_many_message

PAGE_SIZE = 20


def public_search(view):
    """Search pages open to anonymous visitors when SEARCH_PUBLIC is true; a login otherwise."""
    @login_not_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated and not settings.SEARCH_PUBLIC:
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)
    return wrapped


def _options_from(post) -> Options:
    return Options(verify="verify" in post, query_expansion="query_expansion" in post, use_labels="use_labels" in post)


@public_search
def search_home(request):
    if request.method == "POST":
        upload = request.FILES.get("image")
        if upload is None:
            return render(request, "search/search.html", {"error": "Choose a photo to search with."}, status=400)
        limited = _rate_limited(request)
        if limited:
            return limited
        options = _options_from(request.POST) if request.POST.get("options") else Options()
        try:
            query = run_search(upload.read(), upload.name, request.user, options)
        except BadImage as exc:
            return render(request, "search/search.html",
                          {"error": f"“{upload.name}” cannot be searched: {exc}."}, status=400)
        except NoIndexError:
            return render(request, "search/search.html", {"no_index": True}, status=503)
        access.remember(request, query)
        return redirect("search-results", uid=query.uid)
    return render(request, "search/search.html", {})


@public_search
def search_results(request, uid=None, token=None):
    query = access.viewable(request, uid, token)
    min_score = _float(request.GET.get("min_score"))
    results = query.results.select_related("image__landmark").order_by("rank")
    if min_score is not None:
        results = results.filter(score__gte=min_score)
    page = Paginator(results, PAGE_SIZE).get_page(request.GET.get("page"))
    share_url = request.build_absolute_uri(reverse("search-shared-results", args=[query.share_token])) \
        if query.share_token else None
    verified = query.results.filter(verified=True).aggregate(count=Count("pk"), last=Max("rank"))
    return render(request, "search/results.html", {
        "query": query, "page": page, "min_score": min_score, "options": Options.from_dict(query.options),
        "verified_count": verified["count"], "last_verified": verified["last"],
        "recognition": _recognition_rule(query),
        "share_token": token, "owner": token is None and access.is_owner(request, query), "share_url": share_url})


def _recognition_rule(query):
    """How the search's index recognises (its recorded config), to say what its confidence means; None
    when the index is gone or records none."""
    try:
        return query.index_version.pipeline_config().recognition if query.index_version else None
    except ValueError:
        return None


@public_search
@require_POST
def search_rerun(request, uid=None, token=None):
    """The same photo again with other options: a new search of the one who asks (a shared search too)."""
    query = access.viewable(request, uid, token)
    limited = _rate_limited(request)
    if limited:
        return limited
    try:
        new = rerun_search(query, request.user, _options_from(request.POST))
    except PhotoMissing as exc:
        return gone(request, str(exc))
    except NoIndexError:
        messages.error(request, "No search index is active at the moment: the photo cannot be searched again.")
        return redirect("search-shared-results", token=token) if token else redirect("search-results", uid=uid)
    access.remember(request, new)
    return redirect("search-results", uid=new.uid)


@public_search
@require_POST
def search_share(request, uid):
    """Make (``share``) or drop (``stop``) the search's share link; only its owner can."""
    query = access.owned(request, uid)
    if request.POST.get("action") == "stop":
        access.unshare(query)
        messages.success(request, "The share link no longer works: only you can open this search.")
    else:
        access.share(query)
        messages.success(request, "Anyone who may search can now open this search with its share link.")
    return redirect("search-results", uid=uid)


@public_search
@require_POST
def search_delete(request, uid):
    access.delete_search(access.owned(request, uid))
    messages.success(request, "The search and its photo were deleted.")
    return redirect("search-history" if request.user.is_authenticated else "search")


def search_history(request):
    page = Paginator(SearchQuery.objects.filter(user=request.user).select_related("landmark"), 25).get_page(
        request.GET.get("page"))
    return render(request, "search/history.html", {"page": page})


@public_search
def query_photo(request, uid=None, token=None):
    query = access.viewable(request, uid, token)
    try:
        return FileResponse(query.photo.open("rb"), content_type="image/jpeg")
    except OSError:
        return gone(request, "The photo of this search is no longer stored.")


@public_search
def why_match(request, image_id: str, uid=None, token=None):
    query = access.viewable(request, uid, token)
    result = query.results.select_related("image__landmark").filter(image__external_id=image_id).first()
    if result is None:
        raise Http404("that image is not among this search's results")
    photo_url = reverse("search-shared-photo", args=[token]) if token else reverse("search-photo", args=[uid])
    try:
        drawing = match_drawing(query, result.image, photo_url)
    except PhotoMissing as exc:
        return gone(request, str(exc))
    return render(request, "search/match.html", {"query": query, "result": result, "drawing": drawing,
                                                 "share_token": token})


def gone(request, reason: str):
    """410 Gone, in the site's layout: what this page needs is no longer stored."""
    return render(request, "410.html", {"reason": reason}, status=410)


def _rate_limited(request):
    """The 429 page when this search would pass SEARCH_RATE_LIMIT; None when it may run."""
    allowed, wait = allow_search(request)
    if allowed:
        return None
    response = render(request, "search/search.html", {"error": too_many_message(wait)}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
