"""Per-user (or per-address, for anonymous public search) limits on searches by photo: every path that runs
a search (the upload form, the API, "search again") takes one hit of SEARCH_RATE_LIMIT a minute. Counted
in the database (webapp.limits), which every web process shares."""

from __future__ import annotations

import time

from django.conf import settings

from webapp.limits.counters import take


def _who(request) -> str:
    user = getattr(request, "api_user", None) or request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', 'unknown')}"


def allow_search(request) -> tuple[bool, int]:
    """(allowed, seconds until the current minute ends) under SEARCH_RATE_LIMIT searches per minute."""
    limit = settings.SEARCH_RATE_LIMIT
    if limit <= 0:
        return True, 0
    now = time.time()
    return take(f"search:{_who(request)}", now, limit), 60 - int(now % 60)


def too_many_message(wait: int) -> str:
    return f"Too many searches: at most {settings.SEARCH_RATE_LIMIT} a minute. Try again in {wait} s."
