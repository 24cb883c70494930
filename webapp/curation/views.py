"""Review (curators only): a queue of noise clusters, a cluster page with evidence and bulk actions
(mouse or keyboard), undo, and landmark autocomplete. Every action goes through curation.actions."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.catalog.models import Image, Landmark
from webapp.curation import actions
from webapp.curation.models import LabelChange, NoiseCluster, Verdict
from webapp.curation.roles import CURATOR, role_required


@role_required(CURATOR)
def queue(request):
    status = request.GET.get("status", NoiseCluster.Status.OPEN)
    clusters = NoiseCluster.objects.filter(status=status).select_related("target_landmark", "run")
    page = Paginator(clusters, 25).get_page(request.GET.get("page"))
    return render(request, "curation/queue.html", {"page": page, "status": status})


@role_required(CURATOR)
def cluster_detail(request, pk: int):
    cluster = get_object_or_404(NoiseCluster.objects.select_related("target_landmark", "run"), pk=pk)
    images = list(cluster.images.select_related("landmark").order_by("landmark__name", "external_id"))
    verdicts = {v.image_id: v for v in Verdict.objects.filter(run=cluster.run, image__in=images)
                .select_related("suggested_landmark")}
    neighbour_ids = {n["id"] for v in verdicts.values() for n in _top_neighbours(v)}
    neighbours = {im.external_id: im for im in Image.objects.filter(external_id__in=neighbour_ids)
                  .select_related("landmark")}
    rows = [{"image": im, "verdict": verdicts.get(im.pk),
             "neighbours": [(neighbours.get(n["id"]), n) for n in _top_neighbours(verdicts.get(im.pk))]}
            for im in images]
    changes = (LabelChange.objects.filter(cluster=cluster)
               .select_related("image", "old_landmark", "new_landmark", "decided_by", "undone_by")[:100])
    return render(request, "curation/cluster.html", {"cluster": cluster, "rows": rows, "changes": changes,
                                                     "undo_batch": request.session.pop("undo_batch", None)})


def _top_neighbours(verdict: Verdict | None, n: int = 3) -> list[dict]:
    """The nearest neighbours a verdict rests on, verified ones first."""
    if verdict is None:
        return []
    items = verdict.evidence.get("neighbours", [])
    return sorted(items, key=lambda x: (-(x.get("inliers") or 0), -x.get("similarity", 0)))[:n]


@role_required(CURATOR)
@require_POST
def cluster_apply(request, pk: int):
    cluster = get_object_or_404(NoiseCluster.objects.select_related("run", "target_landmark"), pk=pk)
    selected = list(cluster.images.filter(external_id__in=request.POST.getlist("images")))
    action = request.POST.get("action", "")
    if not selected and action != "merge":
        messages.error(request, "Select at least one image first.")
        return redirect(cluster)
    user = request.user
    if action == "accept":
        changes = actions.accept_suggestions(selected, cluster.run, acting_user=user, cluster=cluster)
    elif action == "relabel":
        target = _landmark_from(request.POST.get("landmark", ""))
        if target is None:
            messages.error(request, f"Unknown landmark “{request.POST.get('landmark', '')}”: pick one from the list.")
            return redirect(cluster)
        changes = actions.relabel(selected, target, acting_user=user, reason=f"review of cluster #{cluster.pk}",
                                  cluster=cluster)
    elif action == "not_landmark":
        changes = actions.mark_not_landmark(selected, acting_user=user, reason=f"review of cluster #{cluster.pk}",
                                            cluster=cluster)
    elif action == "keep":
        changes = actions.keep_as_is(selected, acting_user=user, reason=f"review of cluster #{cluster.pk}",
                                     cluster=cluster)
    elif action == "merge":
        changes = _merge_cluster(request, cluster)
        if changes is None:
            return redirect(cluster)
    else:
        return HttpResponseBadRequest(f"unknown action {action!r}")
    if changes:
        messages.success(request, f"{len(changes)} image{'s' if len(changes) != 1 else ''}: "
                                  f"{changes[0].get_action_display().lower()}.")
        request.session["undo_batch"] = str(changes[0].batch)  # offered as "Undo this" on the next page
    else:
        messages.info(request, "Nothing changed (no suggestion for the selected images).")
    return redirect(cluster)


def _merge_cluster(request, cluster: NoiseCluster):
    source = _landmark_from(request.POST.get("source", ""))
    target = _landmark_from(request.POST.get("landmark", "")) or cluster.target_landmark
    if source is None or target is None or source.pk == target.pk:
        messages.error(request, "Choose two different landmarks to merge.")
        return None
    return actions.merge_landmarks(source, target, acting_user=request.user, cluster=cluster)


def _landmark_from(text: str) -> Landmark | None:
    """A landmark from what the autocomplete put in the field: 'name (id)', an id, or an exact name."""
    text = text.strip()
    if text.endswith(")") and "(" in text:
        text = text.rsplit("(", 1)[1][:-1]
    return (Landmark.objects.filter(external_id=text).first()
            or Landmark.objects.filter(name__iexact=text).first())


@role_required(CURATOR)
@require_POST
def undo_change(request, pk: int):
    change = get_object_or_404(LabelChange, pk=pk)
    if actions.undo(change, acting_user=request.user):
        messages.success(request, f"Undone: {change.image.external_id} is back to its earlier label.")
    return redirect(request.POST.get("next") or (change.cluster or change.image))


@role_required(CURATOR)
@require_POST
def undo_batch(request):
    try:
        import uuid

        batch = uuid.UUID(request.POST.get("batch", ""))
    except ValueError:
        return HttpResponseBadRequest("batch must be a UUID")
    undone = actions.undo_batch(batch, acting_user=request.user)
    messages.success(request, f"Undone {len(undone)} change{'s' if len(undone) != 1 else ''}.")
    first = LabelChange.objects.filter(batch=batch).select_related("cluster", "image").first()
    if first is None:
        raise Http404("no such batch")
    return redirect(first.cluster or first.image)


@role_required(CURATOR)
def landmark_autocomplete(request):
    q = request.GET.get("landmark", request.GET.get("q", "")).strip()
    found = Landmark.objects.filter(Q(name__icontains=q) | Q(external_id__startswith=q))[:20] if q else []
    return render(request, "curation/_landmark_options.html", {"landmarks": found})


@role_required(CURATOR)
@require_POST
def image_takedown(request, image_id: str):
    image = get_object_or_404(Image, external_id=image_id)
    restore = request.POST.get("restore") == "1"
    actions.take_down([image], acting_user=request.user, reason=request.POST.get("reason", ""), restore=restore)
    messages.success(request, f"{image.external_id} is {'back in' if restore else 'hidden from'} search results.")
    return redirect(image)
