"""``{{ landmark|landmark }}``: a landmark as people know it, by name, with its id on hover."""

from django import template
from django.utils.html import format_html

register = template.Library()


@register.filter
def landmark(lm, none: str = "none"):
    """The landmark's name with its id as a tooltip; ``none`` (escaped) when there is no landmark."""
    if lm is None or lm == "":
        return none
    return format_html('<span class="landmark" title="landmark id {}">{}</span>', lm.external_id, lm.name)
