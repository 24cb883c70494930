"""Per-user (or per-address, for anonymous public search) limits on photo uploads: a fixed window
counter in the Django cache (shared between processes when CACHE_URL points at Redis)."""

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
    window = int(time.time() // 60)
    key = f"search-rate:{_who(request)}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    return count <= limit, 60 - int(time.time()) % 60
