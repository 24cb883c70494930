"""A sliding-window rate limit counted in the database, atomically: two processes taking the last allowed
hit at the same moment cannot both get it.

The count of the current minute plus the previous minute's, weighted by how much of it the last 60 s still
cover: a plain fixed window let a burst straddling the minute through at twice the limit."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from webapp.limits.models import RateCount


def take(key: str, now: float, limit: int) -> bool:
    """Count one hit of ``key`` at time ``now`` (epoch seconds) if the limit allows it; True if it did.
    A refused hit is not counted, so a client that keeps trying is let in again as the window slides."""
    minute, into = divmod(now, 60)
    minute = int(minute)
    with transaction.atomic():
        # Insert-or-ignore, then increment in place: the row stays locked (PostgreSQL) or the database
        # write-locked (SQLite) until the commit, so concurrent hits are counted one after the other.
        RateCount.objects.bulk_create([RateCount(key=key, minute=minute)], ignore_conflicts=True)
        RateCount.objects.filter(key=key, minute=minute).update(count=F("count") + 1)
        counts = dict(RateCount.objects.filter(key=key, minute__in=[minute - 1, minute])
                      .values_list("minute", "count"))
        if counts[minute] + counts.get(minute - 1, 0) * (1 - into / 60) > limit:
            transaction.set_rollback(True)
            return False
        RateCount.objects.filter(minute__lt=minute - 1).delete()  # nothing older is ever read again
    return True
