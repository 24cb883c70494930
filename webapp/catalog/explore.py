"""Explore the collection: images filtered by landmark, split, data set and label status, optionally
ranked by similarity to one image; and 2-D maps of embeddings."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from webapp.catalog.models import Image, Landmark
from webapp.curation.models import LabelChange, Verdict
from webapp.search.access import viewable
from webapp.search.similar import embedding_map, ranked_like, vectors_for
from webapp.search.views import public_search

LABEL_STATUSES = {
    "labelled": "labelled", "unlabelled": "unlabelled",
    "relabelled": "relabelled by a curator", "flagged": "flagged by cleaning",
}
SIMILAR_DEPTH = 1000


def filtered_images(params) -> tuple[object, dict]:
    """The images matching the request's filters, and the filters as given (for the form)."""
    f = {k: (params.get(k) or "").strip() for k in ("landmark", "split", "dataset", "status", "like")}
    images = Image.objects.select_related("landmark")
    if f["landmark"]:
        images = images.filter(Q(landmark__external_id=f["landmark"]) | Q(landmark__name__iexact=f["landmark"]))
    if f["split"] in Image.Split.values:
        images = images.filter(split=f["split"])
    if f["dataset"]:
        images = images.filter(dataset=f["dataset"])
    if f["status"] == "labelled":
        images = images.filter(landmark__isnull=False)
    elif f["status"] == "unlabelled":
        images = images.filter(landmark__isnull=True)
    elif f["status"] == "relabelled":
        images = images.filter(Exists(LabelChange.objects.filter(image=OuterRef("pk"), undone_by__isnull=True)
                                      .exclude(action__in=["keep", "undo"])))
    elif f["status"] == "flagged":
        images = images.filter(Exists(Verdict.objects.filter(image=OuterRef("pk"), verdict__in=["suspect", "drop"])))
    return images, f


def image_list(request):
    images, f = filtered_images(request.GET)
    like_note = None
    if f["like"]:
        got = vectors_for([f["like"]])
        if got and got[0]:
            hits = ranked_like(got[1][0], SIMILAR_DEPTH)  # a second engine check; cheap
            allowed = set(images.filter(external_id__in=[i for i, _ in hits], taken_down=False)
                          .values_list("external_id", flat=True))
            ranked = [i for i, _ in hits if i in allowed]
            by_id = images.in_bulk(ranked, field_name="external_id")
            items = [by_id[i] for i in ranked]
            like_note = f"ranked by similarity to {f['like']} (nearest {SIMILAR_DEPTH})"
        else:
            items, like_note = [], f"{f['like']} is not in the search index"
    else:
        items = images.order_by("external_id")
    page = Paginator(items, 48).get_page(request.GET.get("page"))
    datasets = Image.objects.order_by().values_list("dataset", flat=True).distinct()
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "catalog/image_list.html", {
        "page": page, "f": f, "splits": Image.Split.values, "statuses": LABEL_STATUSES,
        "datasets": [d for d in datasets if d], "like_note": like_note, "querystring": query.urlencode()})


def map_legend(points) -> list[tuple[int, str]]:
    """(colour group, landmark name) of each landmark on the map, by name ("unlabelled" last)."""
    seen: dict[str, int] = {}
    for p in points or []:
        seen.setdefault(p.image.landmark.name if p.image.landmark else "unlabelled", p.group)
    return sorted(((group, name) for name, group in seen.items()), key=lambda g: (g[1] == "unlabelled", g[1]))


def _render_map(request, title: str, points, back: str):
    return render(request, "catalog/map.html", {"title": title, "points": points, "legend": map_legend(points),
                                                "back": back})


def landmark_map(request, landmark_id: str):
    """This landmark's photos and those of its visual neighbours, on a PCA map."""
    from webapp.search.similar import nearest_landmarks

    landmark = get_object_or_404(Landmark, external_id=landmark_id)
    neighbours = nearest_landmarks(landmark) or []
    pks = [landmark.pk] + [lm.pk for lm, _ in neighbours]
    ids = list(Image.objects.filter(landmark_id__in=pks).values_list("external_id", flat=True)[:3000])
    return _render_map(request, f"Map of {landmark.name} and its nearest landmarks", embedding_map(ids),
                       landmark.get_absolute_url())


@public_search
def search_map(request, uid=None, token=None):
    query = viewable(request, uid, token)
    ids = list(query.results.order_by("rank").values_list("image__external_id", flat=True))
    back = reverse("search-shared-results", args=[token]) if token else reverse("search-results", args=[uid])
    return _render_map(request, "Map of this search's results", embedding_map(ids), back)
