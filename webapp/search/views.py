"""Model versions: the list and one model's page with its training curves."""

from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from webapp.search.models import ModelVersion
from webapp.search.plots import line_chart
from webapp.search.services import active_model_version


def model_list(request):
    page = Paginator(ModelVersion.objects.select_related("job").defer("metrics"), 25).get_page(request.GET.get("page"))
    return render(request, "search/model_list.html", {"page": page, "active": active_model_version()})


def model_detail(request, pk: int):
    mv = get_object_or_404(ModelVersion.objects.select_related("job"), pk=pk)
    steps = mv.metrics.get("steps", [])
    charts = [mark_safe(line_chart([(s["step"], s[key]) for s in steps if key in s], label))  # noqa: S308 - built with escape()
              for key, label in [("loss", "loss"), ("accuracy", "accuracy"), ("lr", "learning rate")]]
    template = "search/_model_curves.html" if request.htmx else "search/model_detail.html"
    return render(request, template, {"mv": mv, "charts": [c for c in charts if c], "steps": len(steps),
                                      "last": steps[-1] if steps else None,
                                      "is_active": active_model_version() == mv})
