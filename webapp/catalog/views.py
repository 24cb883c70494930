"""Browsing the collection: home, landmarks, images, and the thumbnails and files behind them."""

from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from webapp.catalog.models import Image, Landmark
from webapp.catalog.thumbnails import thumbnail_name
from webapp.curation.models import LabelChange
from webapp.jobs.models import Job
from webapp.search.similar import more_like_this, nearest_landmarks


def home(request):
    counts = {
        "landmarks": Landmark.objects.count(),
        "images": Image.objects.count(),
        "unlabelled": Image.objects.filter(landmark__isnull=True).count(),
        "running_jobs": Job.objects.filter(state__in=[Job.State.QUEUED, Job.State.RUNNING]).count(),
    }
    recent_jobs = Job.objects.select_related("created_by")[:5]
    return render(request, "catalog/home.html", {"counts": counts, "jobs": recent_jobs})


def landmark_list(request):
    q = request.GET.get("q", "").strip()
    landmarks = Landmark.objects.annotate(image_count=Count("images")).order_by("name", "pk")
    if q:
        landmarks = landmarks.filter(Q(name__icontains=q) | Q(external_id=q))
    page = Paginator(landmarks, 50).get_page(request.GET.get("page"))
    template = "catalog/_landmark_rows.html" if request.htmx else "catalog/landmark_list.html"
    return render(request, template, {"page": page, "q": q})


def landmark_detail(request, landmark_id: str):
    landmark = get_object_or_404(Landmark, external_id=landmark_id)
    images = landmark.images.order_by("split", "external_id")
    page = Paginator(images, 48).get_page(request.GET.get("page"))
    history = (LabelChange.objects.filter(Q(old_landmark=landmark) | Q(new_landmark=landmark))
               .select_related("image", "old_landmark", "new_landmark", "decided_by", "undone_by")[:50])
    return render(request, "catalog/landmark_detail.html", {"landmark": landmark, "page": page, "changes": history,
                                                            "nearest": nearest_landmarks(landmark)})


def image_detail(request, image_id: str):
    image = get_object_or_404(Image.objects.select_related("landmark"), external_id=image_id)
    history = image.label_changes.select_related("image", "old_landmark", "new_landmark", "decided_by", "undone_by")
    verdict = image.verdicts.select_related("run", "suggested_landmark").order_by("-run__created_at").first()
    return render(request, "catalog/image_detail.html", {"image": image, "changes": history[:50], "verdict": verdict,
                                                         "similar": more_like_this(image)})


@require_GET
@cache_control(private=True, max_age=86400)
def image_thumbnail(request, image_id: str, alias: str = "thumb"):
    """Serve a thumbnail by image id; ids, not paths, so no request can name a file."""
    image = get_object_or_404(Image, external_id=image_id)
    try:
        name = thumbnail_name(image, alias)
        return FileResponse(default_storage.open(name, "rb"), content_type="image/jpeg")
    except OSError as exc:  # the original is gone (or unreadable), or its stored thumbnail just went
        raise Http404(f"The file of image {image_id} is missing or cannot be read.") from exc
