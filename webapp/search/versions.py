"""Model and index versions: the list with what each was derived from and its evaluation figures on the set
the admin picks (with the change against its parent), the curation loops, one model's page with its
training curves, making a version active, and starting the loop or an evaluation."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from webapp.curation.roles import ADMIN, role_required
from webapp.jobs.forms import LoopForm, evaluation_set
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search import figures
from webapp.search.loop import loops, start_loop
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
    models = ModelVersion.objects.select_related("job", "parent").defer("metrics")
    page = Paginator(models, 25).get_page(request.GET.get("page"))
    indexes = list(IndexVersion.objects.select_related("embedding_set__model_version", "parent")[:20])
    dataset = request.GET.get("eval") or figures.latest_set()
    board = figures.Board(dataset)
    return render(request, "search/model_list.html", {
        "page": page, "active": active_model_version(), "dataset": dataset, "sets": figures.evaluated_sets(),
        "models": [(mv, board.of_model(mv), board.index_of_model(mv)) for mv in page], "indexes": [(iv, board.of_index(iv)) for iv in indexes],
        "labels": figures.LABELS, **_in_use(), **_loops()})


def _in_use() -> dict:
    """Which models serve search, which ones cleaning embeds with (the same), for the page's first lines."""
    serving = serving_index()
    return {"serving": serving, "cleaning": cleaning_embedder().describe(),
            "search_models": serving.pipeline_config().models if serving and serving.params.get("config") else ()}


def loop_status(request):
    """The loops section, polled while a loop runs; the whole page reloads (new figures) once one has ended."""
    context = _loops()
    asked = {int(pk) for pk in request.GET.get("running", "").split(",") if pk.isdigit()}
    if asked - set(context["running"]):
        return HttpResponseClientRefresh()
    return render(request, "search/_loops.html", context)


def _loops() -> dict:
    listed = [(chain, chain.status()) for chain in loops()]
    return {"loops": listed, "running": [chain.pk for chain, status in listed if status[0] == "running"]}


@role_required(ADMIN)
@require_POST
def loop_start(request):
    """Retrain -> rebuild the index -> evaluate, from the review pages."""
    form = LoopForm(request.POST, prefix="loop")
    if not form.is_valid():
        errors = "; ".join(f"{form.fields[f].label or f}: {' '.join(e)}" if f in form.fields else " ".join(e)
                           for f, e in form.errors.items())
        messages.error(request, f"The loop did not start. {errors}")
        return redirect("curation-queue")
    chain = start_loop(request.user, **form.loop_params())
    messages.success(request, f"Started: {chain.title} (loop #{chain.pk}). Its jobs run in turn; the figures "
                              "appear here when the evaluation is done.")
    return redirect(f"{reverse('model-list')}?eval={form.cleaned_data['evaluation_set']}#loops")


@role_required(ADMIN)
@require_POST
def index_evaluate(request, pk: int):
    """Evaluate one index version on an evaluation set (for the figures the page shows)."""
    iv = get_object_or_404(IndexVersion, pk=pk)
    try:
        dataset = evaluation_set(request.POST.get("dataset", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("model-list")
    job = start_job(Job.Kind.EVALUATE, {"path": dataset, "index_version": iv.pk}, request.user)
    messages.success(request, f"Evaluating index #{iv.pk} on {dataset} (job #{job.pk}).")
    return redirect(f"{reverse('model-list')}?eval={dataset}")


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
