"""Rate-limit counts, kept in the database: every web process (and every machine) counts in the same rows,
where a per-process cache let each process allow the whole limit on its own."""

from django.db import models


class RateCount(models.Model):
    """How many hits one key (a user or an address, for one kind of action) had in one minute."""

    key = models.CharField(max_length=200)
    minute = models.BigIntegerField(db_index=True, help_text="Minutes since the epoch.")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "minute"], name="one_rate_count_per_key_and_minute")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.minute}: {self.count}"
