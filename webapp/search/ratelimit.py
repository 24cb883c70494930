"""Per-user (or per-address, for anonymous public search) limits on photo uploads: a sliding-window
counter in the Django cache (shared between processes when CACHE_URL points at Redis). The count of the
current minute plus the previous minute's, weighted by how much of it the last 60 s still cover: a plain
fixed window let a burst straddling the minute through at twice the limit."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache


def _who(request) -> str:
    user = getattr(request, "api_user", None) or request.user
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', 'unknown')}"


def allow_upload(request) -> tuple[bool, int]:
    """(allowed, seconds until the window resets) under SEARCH_RATE_LIMIT uploads per minute."""
    limit = settings.SEARCH_RATE_LIMIT
    if limit <= 0:
        return True, 0
    now = time.time()
    window, into = divmod(now, 60)
    key = f"search-rate:{_who(request)}:{int(window)}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    previous = cache.get(f"search-rate:{_who(request)}:{int(window) - 1}", 0)
    return count + previous * (1 - into / 60) <= limit, 60 - int(into)
