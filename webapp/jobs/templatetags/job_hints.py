"""``{% job_hint "build_index" %}``: what an empty page (no index, no clusters, no data yet) tells a web
user instead of a shell command: the job that will fill it if one is queued or running (with its link),
why the last one failed, or, for admins, a button that starts one."""

from __future__ import annotations

from django import template

from webapp.jobs.forms import FORMS
from webapp.jobs.models import Job

register = template.Library()


@register.inclusion_tag("jobs/_job_hint.html", takes_context=True)
def job_hint(context, kind: str, what: str = "") -> dict:
    """``what``: the thing the job makes ("the search index"), for the sentence."""
    latest = Job.objects.filter(kind=kind).only("pk", "state", "kind", "message").first()
    roles = context.get("roles") or {}
    return {
        "kind": kind, "label": Job.Kind(kind).label, "what": what or Job.Kind(kind).label.lower(),
        "pending": latest if latest and not latest.is_finished else None,
        "failed": latest if latest and latest.state == Job.State.FAILED else None,
        "admin": roles.get("admin", False), "fields": default_fields(kind),
        "csrf_token": context.get("csrf_token"),
    }


def default_fields(kind: str) -> list[tuple[str, str]] | None:
    """The start form's fields at their defaults, as (name, value) for a one-click start; None when the
    form needs an answer (a path) or has no one-click default worth offering (training)."""
    form = FORMS[kind](prefix=kind)
    if kind == Job.Kind.TRAIN:
        return None
    fields = []
    for name, field in form.fields.items():
        initial = form.get_initial_for_field(field, name)
        if initial in (None, "") and field.required:
            return None
        if initial is True:
            fields.append((form.add_prefix(name), "on"))
        elif initial not in (None, "", False):
            fields.append((form.add_prefix(name), str(initial)))
    return fields
