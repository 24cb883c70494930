"""Review (curators only): a queue of noise clusters, a cluster page with evidence and actions (mouse or
keyboard) that moves on to the next open cluster after a decision (htmx), bulk accept with a preview, undo
of the last decisions, and landmark autocomplete. Every action goes through curation.actions."""

import uuid

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import push_url

from webapp.catalog.models import Image, Landmark
from webapp.curation import actions, review
from webapp.curation.decisions import pending, recent_batches
from webapp.curation.models import CleaningRun, LabelChange, NoiseCluster
from webapp.curation.roles import ADMIN, CURATOR, has_role, role_required
from webapp.jobs.forms import PIPELINES, LoopForm
from webapp.search.models import IndexVersion

ACTIONS = {"accept", "relabel", "not_landmark", "keep", "merge"}


@role_required(CURATOR)
def queue(request):
    status = request.GET.get("status", NoiseCluster.Status.OPEN)
    if status not in NoiseCluster.Status.values:
        return HttpResponseBadRequest(f"status must be one of {', '.join(NoiseCluster.Status.values)}")
    clusters = review.with_requeued(NoiseCluster.objects.filter(status=status).select_related("target_landmark"))
    page = Paginator(clusters, 25).get_page(request.GET.get("page"))
    page.object_list = review.with_labels(page.object_list)
    return render(request, "curation/queue.html", {
        "page": page, "status": status, "statuses": NoiseCluster.Status.choices,
        "first": review.next_open(None), "left": review.open_count(), "recent": recent_batches(request.user),
        "latest_run": CleaningRun.objects.exclude(queue={}).first(), "loop_form": _loop_form(request.user)})


def _loop_form(user) -> LoopForm | None:
    """Retrain -> rebuild -> evaluate, for admins; the index pipeline defaults to the active index's."""
    if not has_role(user, ADMIN):
        return None
    active = IndexVersion.objects.filter(is_active=True).first()
    preset = active.params.get("pipeline") if active else None
    return LoopForm(prefix="loop", initial={"pipeline": preset} if preset in dict(PIPELINES) else {})


@role_required(CURATOR)
def cluster_detail(request, pk: int):
    cluster = get_object_or_404(NoiseCluster.objects.select_related("target_landmark", "run"), pk=pk)
    return _review(request, cluster)


def _review(request, cluster: NoiseCluster | None, notice: str = "", error: str = ""):
    """The review area for ``cluster`` (None: the queue is empty): the whole page, or for htmx the area alone."""
    context = {"cluster": cluster, "notice": notice, "error": error, "left": review.open_count(),
               "recent": recent_batches(request.user)}
    if cluster is not None:
        cards = review.cluster_cards(cluster)
        filed = {c["image"].landmark: None for c in cards if c["image"].landmark}  # in order, once each
        context.update(cards=cards, labels=[lm for lm in filed if lm.pk != cluster.target_landmark_id],
                       changes=(LabelChange.objects.filter(cluster=cluster).select_related(
                           "image", "old_landmark", "new_landmark", "decided_by", "undone_by")[:100]),
                       after=review.next_open(cluster))
        context["only"] = sum(card["pending"] for card in cards) == 1  # needs no selection
    return render(request, "curation/_review.html" if request.htmx else "curation/cluster.html", context)


@role_required(CURATOR)
@require_POST
def cluster_apply(request, pk: int):
    cluster = get_object_or_404(NoiseCluster.objects.select_related("run", "target_landmark"), pk=pk)
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        return HttpResponseBadRequest(f"unknown action {action!r}")
    changes, error = _decide(request, cluster, action)
    if error:
        if request.htmx:
            return _review(request, cluster, error=error)
        messages.error(request, error)
        return redirect(cluster)
    cluster.refresh_from_db()
    after = cluster if cluster.status == NoiseCluster.Status.OPEN else review.next_open(cluster)
    notice = _said(changes) + f" {_left(review.open_count())}"
    if not request.htmx:
        messages.success(request, notice)
        return redirect(after or "curation-queue")
    response = _review(request, after, notice=notice)
    return push_url(response, after.get_absolute_url() if after else reverse("curation-queue"))


def _decide(request, cluster: NoiseCluster, action: str) -> tuple[list[LabelChange], str]:
    """Apply ``action`` to the selected photos (the only photo left to decide needs no selection); returns the
    changes, or an error to show."""
    selected = list(cluster.images.filter(external_id__in=request.POST.getlist("images")))
    if not selected and action != "merge":
        left = pending(cluster.images.values_list("pk", flat=True))
        if len(left) != 1:
            return [], "Select at least one image first."
        selected = list(Image.objects.filter(pk__in=left))
    user, why = request.user, f"review of cluster #{cluster.pk}"
    if action == "accept":
        return actions.accept_suggestions(selected, cluster.run, acting_user=user, cluster=cluster), ""
    if action == "relabel":
        target = _landmark_from(request.POST.get("landmark", ""))
        if target is None:
            return [], f"Unknown landmark “{request.POST.get('landmark', '')}”: pick one from the list."
        return actions.relabel(selected, target, acting_user=user, reason=why, cluster=cluster), ""
    if action == "not_landmark":
        return actions.mark_not_landmark(selected, acting_user=user, reason=why, cluster=cluster), ""
    if action == "keep":
        return actions.keep_as_is(selected, acting_user=user, reason=why, cluster=cluster), ""
    return _merge_cluster(request, cluster)


def _said(changes: list[LabelChange]) -> str:
    if not changes:
        return "Nothing changed (no suggestion for the selected images)."
    return f"{len(changes)} image{'s' if len(changes) != 1 else ''}: {changes[0].get_action_display().lower()}."


def _left(count: int) -> str:
    return f"{count} open cluster{'s' if count != 1 else ''} left." if count else "No open clusters left."


def _merge_cluster(request, cluster: NoiseCluster) -> tuple[list[LabelChange], str]:
    source = _landmark_from(request.POST.get("source", ""))
    target = _landmark_from(request.POST.get("landmark", "")) or cluster.target_landmark
    if source is None or target is None or source.pk == target.pk:
        return [], "Choose two different landmarks to merge."
    return actions.merge_landmarks(source, target, acting_user=request.user, cluster=cluster), ""


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
    return redirect(_next_or(request, change.cluster or change.image))


@role_required(CURATOR)
@require_POST
def undo_batch(request):
    """Undo one decision (all its photos), also after moving on: back to its cluster, open again."""
    try:
        batch = uuid.UUID(request.POST.get("batch", ""))
    except ValueError:
        return HttpResponseBadRequest("batch must be a UUID")
    first = LabelChange.objects.filter(batch=batch).select_related("cluster", "image").first()
    if first is None:
        raise Http404("no such batch")
    undone = actions.undo_batch(batch, acting_user=request.user)
    messages.success(request, f"Undone {len(undone)} change{'s' if len(undone) != 1 else ''}.")
    return redirect(first.cluster or first.image)


def _next_or(request, default):
    """Where a form asked to go back to (this site only), else ``default``."""
    url = request.POST.get("next", "")
    return url if url and url_has_allowed_host_and_scheme(url, {request.get_host()}) else default


@role_required(CURATOR)
def bulk_preview(request):
    """The open clusters a bulk accept at this confidence would take, with their photos, to confirm."""
    threshold, error = _confidence(request.GET)
    clusters = [] if error else review.with_labels(review.bulk_candidates(threshold))
    return render(request, "curation/_bulk_preview.html", {
        "clusters": clusters, "threshold": threshold, "error": error,
        "photos": sum(c.size for c in clusters)}, status=400 if error else 200)


@role_required(CURATOR)
@require_POST
def bulk_accept(request):
    """Accept the suggestions of the previewed clusters that are still open and still that confident."""
    threshold, error = _confidence(request.POST)
    if error:
        return HttpResponseBadRequest(error)
    chosen = {int(pk) for pk in request.POST.getlist("clusters") if pk.isdigit()}
    clusters = [c for c in review.bulk_candidates(threshold) if c.pk in chosen]
    changes = actions.accept_clusters(clusters, acting_user=request.user)
    messages.success(request, f"Accepted the suggestions of {len(clusters)} cluster{'s' if len(clusters) != 1 else ''}: "
                              f"{len(changes)} image{'s' if len(changes) != 1 else ''}. {_left(review.open_count())}")
    return redirect("curation-queue")


def _confidence(data) -> tuple[float, str]:
    """The minimum confidence asked for (0 to 1), or an error saying what is wrong."""
    raw = data.get("min_confidence", "").strip()
    try:
        value = float(raw)
    except ValueError:
        return 0.0, f"Minimum confidence must be a number from 0 to 1, not “{raw}”."
    if not 0 <= value <= 1:
        return 0.0, f"Minimum confidence must be from 0 to 1, not {value:g}."
    return value, ""


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
