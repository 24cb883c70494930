"""Model and index versions: the list, one model's page with its training curves, and making a version active."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from webapp.curation.roles import ADMIN, role_required
from webapp.search.models import IndexVersion, ModelVersion
from webapp.search.plots import line_chart
from webapp.search.services import (
    activate_index,
    activate_model,
    active_model_version,
    cleaning_embedder,
    serving_index,
)


def model_list(request):
    page = Paginator(ModelVersion.objects.select_related("job").defer("metrics"), 25).get_page(request.GET.get("page"))
    indexes = IndexVersion.objects.select_related("embedding_set__model_version")[:20]
    serving = serving_index()
    return render(request, "search/model_list.html", {
        "page": page, "active": active_model_version(), "indexes": indexes, "serving": serving,
        "search_models": serving.pipeline_config().models if serving and serving.params.get("config") else (),
        "cleaning": cleaning_embedder().describe()})


@role_required(ADMIN)
@require_POST
def model_activate(request, pk: int):
    """Pin a model as the active one, or (pk 0) go back to 'the latest trained model'."""
    activate_model(get_object_or_404(ModelVersion, pk=pk) if pk else None)
    messages.success(request, f"Active model: {active_model_version().name}. Rebuild the index to search with it.")
    return redirect("model-list")


@role_required(ADMIN)
@require_POST
def index_activate(request, pk: int):
    iv = get_object_or_404(IndexVersion, pk=pk)
    try:
        activate_index(iv)
        messages.success(request, f"Index #{iv.pk} now answers every search.")
    except ValueError as exc:
        messages.error(request, str(exc))
    return redirect("model-list")


def model_detail(request, pk: int):
    mv = get_object_or_404(ModelVersion.objects.select_related("job"), pk=pk)
    steps = mv.metrics.get("steps", [])
    charts = [mark_safe(line_chart([(s["step"], s[key]) for s in steps if key in s], label))  # noqa: S308 - built with escape()
              for key, label in [("loss", "loss"), ("accuracy", "accuracy"), ("lr", "learning rate")]]
    template = "search/_model_curves.html" if request.htmx else "search/model_detail.html"
    return render(request, template, {"mv": mv, "charts": [c for c in charts if c], "steps": len(steps),
                                      "last": steps[-1] if steps else None,
                                      "is_active": active_model_version() == mv})
