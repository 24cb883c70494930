"""Landmarks and their images. External ids are the dataset's own ids (GLDv2's hex image ids and
integer landmark ids, or names for folder-per-landmark data); every command, export and API uses them."""

from collections.abc import Iterator, Sequence
from pathlib import Path

from django.core.files.storage import default_storage
from django.db import models
from django.urls import reverse

ID_CHUNK = 5000  # external ids per IN query (see by_external_ids)


def by_external_ids(queryset: models.QuerySet, ids: Sequence[str], chunk: int | None = None,
                    ) -> Iterator[tuple[list[str], models.QuerySet]]:
    """(ids, ``queryset`` filtered to them) for each run of ``chunk`` (default ID_CHUNK) of ``ids``: one IN
    list per run keeps every query under the database's bound-parameter limit (SQLite here: 250,000; old
    builds: 999) however many ids there are, a million included."""
    size = chunk or ID_CHUNK
    for start in range(0, len(ids), size):
        part = list(ids[start:start + size])
        yield part, queryset.filter(external_id__in=part)


class Landmark(models.Model):
    external_id = models.CharField(max_length=200, unique=True, help_text="The dataset's landmark id.")
    name = models.CharField(max_length=300, db_index=True)
    source = models.TextField(blank=True, help_text="Where the photos come from, with their licence.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})"

    def get_absolute_url(self) -> str:
        return reverse("landmark-detail", args=[self.external_id])


class Image(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train"
        INDEX = "index"
        QUERY = "query"
        TEST = "test"

    external_id = models.CharField(max_length=200, unique=True, help_text="The dataset's image id.")
    landmark = models.ForeignKey(
        Landmark, null=True, blank=True, on_delete=models.PROTECT, related_name="images",
        help_text="The current label; empty for 'not a landmark' or unlabelled.",
    )
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN, db_index=True)
    # Either a file copied into media storage, or an absolute path to a file referenced where it is.
    file = models.FileField(upload_to="images/", blank=True)
    path = models.CharField(max_length=1000, blank=True)
    checksum = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the file's bytes.")
    file_size = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    thumbnail = models.CharField(max_length=500, blank=True, help_text="Storage name of the cached thumbnail.")
    source = models.TextField(blank=True, help_text="Where this photo comes from.")
    dataset = models.CharField(max_length=300, blank=True, help_text="The import it came from.")
    taken_down = models.BooleanField(default=False, db_index=True,
                                     help_text="Hidden from search results at once (no index rebuild).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["external_id"]
        indexes = [models.Index(fields=["landmark", "external_id"])]

    def __str__(self) -> str:
        return self.external_id

    def get_absolute_url(self) -> str:
        return reverse("image-detail", args=[self.external_id])

    @property
    def location(self) -> str:
        """Human-readable place of the file: its media name or its path on disk."""
        return self.file.name if self.file else self.path

    def open(self):
        """Open the original file for reading, wherever it lives."""
        if self.file:
            return default_storage.open(self.file.name, "rb")
        return open(self.path, "rb")  # noqa: SIM115 - the caller closes it

    @property
    def thumbnail_name(self) -> str:
        """The name easy-thumbnails knows this image's source by (stable, independent of location)."""
        return f"images/{self.external_id}{Path(self.location).suffix.lower() or '.jpg'}"



class CatalogRevision(models.Model):
    """One counter, bumped whenever labels or the searchable set change (relabel, takedown, import,
    delete), so a search process knows to reload labels with a single cheap query."""

    value = models.BigIntegerField(default=0)

    @classmethod
    def bump(cls) -> None:
        updated = cls.objects.filter(pk=1).update(value=models.F("value") + 1)
        if not updated:
            cls.objects.get_or_create(pk=1)
            cls.objects.filter(pk=1).update(value=models.F("value") + 1)

    @classmethod
    def current(cls) -> int:
        return cls.objects.filter(pk=1).values_list("value", flat=True).first() or 0
