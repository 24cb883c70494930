"""The jobs pages: a list with live progress (htmx polling while anything runs), and one job's details."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.curation.roles import ADMIN, role_required
from webapp.jobs.forms import FORMS
from webapp.jobs.models import Job
from webapp.jobs.services import NotRetryable, cancel_job, retry_job, start_job


def job_list(request):
    jobs = Job.objects.select_related("created_by").defer("log", "error")
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    active = any(not j.is_finished for j in page)
    template = "jobs/_job_table.html" if request.htmx else "jobs/job_list.html"
    return render(request, template, {"page": page, "active": active})


def job_detail(request, pk: int):
    job = get_object_or_404(Job.objects.select_related("created_by", "chain"), pk=pk)
    template = "jobs/_job_status.html" if request.htmx else "jobs/job_detail.html"
    return render(request, template, {"job": job})


@role_required(ADMIN)
@require_POST
def job_cancel(request, pk: int):
    cancel_job(get_object_or_404(Job, pk=pk))
    return redirect("job-detail", pk=pk)


@role_required(ADMIN)
@require_POST
def job_retry(request, pk: int):
    try:
        job = retry_job(get_object_or_404(Job, pk=pk), request.user)
    except NotRetryable as exc:
        messages.error(request, str(exc))
        return redirect("job-detail", pk=pk)
    return redirect("job-detail", pk=job.pk)


@role_required(ADMIN)
def job_new(request):
    """One small form per kind of job; the posted one is validated and started on the workers."""
    kind = request.POST.get("kind") if request.method == "POST" else None
    forms = {k: cls(request.POST if k == kind else None, prefix=k) for k, cls in FORMS.items()}
    if kind in forms and forms[kind].is_valid():
        job = start_job(kind, forms[kind].params(), request.user)
        return redirect("job-detail", pk=job.pk)
    entries = [(k, Job.Kind(k).label, f) for k, f in forms.items()]
    return render(request, "jobs/job_new.html", {"entries": entries}, status=400 if kind else 200)
