"""How a job reads on its page: parameters and results as labelled fields (not Python dicts), durations
rounded to what a person cares about."""

from __future__ import annotations

from datetime import timedelta

from django import template
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
LIST_SHOWN = 10  # list items shown before "… and N more"


@register.filter
def duration(value: timedelta | None) -> str:
    """3.2 s, 4 min 05 s, 2 h 07 min: no microseconds."""
    if value is None:
        return "—"
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def as_fields(value) -> SafeString:
    """A dict as a <dl> of labelled fields (nested dicts nest); keys ending in ``_job`` link to that job."""
    if not isinstance(value, dict) or not value:
        return mark_safe('<span class="muted">none</span>')  # noqa: S308 - a constant
    rows = format_html_join("", "<dt>{}</dt><dd>{}</dd>", ((_label(k), _value(k, v)) for k, v in value.items()))
    return format_html('<dl class="fields">{}</dl>', rows)


def _label(key: str) -> str:
    return str(key).replace("_", " ").capitalize()


def _value(key: str, value) -> SafeString | str:
    if isinstance(value, dict):
        return as_fields(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or value == "":
        return "—"
    if str(key).endswith("_job") and isinstance(value, int):
        return format_html('<a href="{}">job #{}</a>', reverse("job-detail", args=[value]), value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        shown = ", ".join(str(v) for v in value[:LIST_SHOWN])
        more = len(value) - LIST_SHOWN
        return shown + (f" … and {more} more" if more > 0 else "") if value else "none"
    return str(value)
