"""``{% search_url "photo" %}``: a page of the search on show, by its share link when the page was opened
through one (so a shared page's photo, map and matches open for its viewers too), else by its id."""

from django import template
from django.urls import reverse

register = template.Library()


@register.simple_tag(takes_context=True)
def search_url(context, page: str, *args) -> str:
    """``page``: results, photo, map, match (with the image id) or rerun."""
    token = context.get("share_token")
    if token:
        return reverse(f"search-shared-{page}", args=[token, *args])
    return reverse(f"search-{page}", args=[context["query"].uid, *args])
