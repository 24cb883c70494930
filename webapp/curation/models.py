"""Label curation: cleaning runs and their verdicts, noise clusters for review, and the audit trail of
every label change (who, when, old, new, why), which is also what undo and the cleaned export read."""

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse

from webapp.catalog.models import Image, Landmark


class CleaningRun(models.Model):
    embedding_set = models.ForeignKey("search.EmbeddingSet", null=True, blank=True, on_delete=models.SET_NULL)
    params = models.JSONField(default=dict, blank=True)
    evidence_path = models.CharField(max_length=1000, blank=True, help_text="Cached kNN graph and inliers.")
    stats = models.JSONField(default=dict, blank=True)
    queue = models.JSONField(default=dict, blank=True, help_text="What the run did to the review queue: clusters "
                             "updated, new and closed, photos re-queued on new evidence (webapp/curation/reruns.py).")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Cleaning run #{self.pk}"


class Verdict(models.Model):
    class Kind(models.TextChoices):
        KEEP = "keep"
        SUSPECT = "suspect"
        DROP = "drop"

    run = models.ForeignKey(CleaningRun, on_delete=models.CASCADE, related_name="verdicts")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="verdicts")
    verdict = models.CharField(max_length=10, choices=Kind.choices, db_index=True)
    label = models.ForeignKey(Landmark, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="The label the image had when it was judged.")
    suggested_landmark = models.ForeignKey(Landmark, null=True, blank=True, on_delete=models.SET_NULL,
                                           related_name="+")
    suggest_not_landmark = models.BooleanField(default=False)
    score = models.FloatField(help_text="0 to 1, higher = more likely mislabelled.")
    evidence = models.JSONField(default=dict, blank=True, help_text="Neighbour ids, labels, similarities, inliers.")
    reopens = models.ForeignKey("LabelChange", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                help_text="A curator's decision this verdict puts back in the queue: the photo now "
                                          "verifies with photos of another landmark it did not verify with when it "
                                          "was decided (listed in evidence['new_evidence']).")

    class Meta:
        ordering = ["-score"]
        constraints = [models.UniqueConstraint(fields=["run", "image"], name="one_verdict_per_run_image")]


class NoiseCluster(models.Model):
    class Kind(models.TextChoices):
        RELABEL = "relabel", "Looks like another landmark"
        MERGE = "merge", "Several labels, one place"
        DISTRACTOR = "distractor", "Matches nothing"

    class Status(models.TextChoices):
        OPEN = "open"
        DONE = "done", "decided"
        CLEARED = "cleared", "no longer flagged"  # a later run judged its photos and flags them no more

    run = models.ForeignKey(CleaningRun, on_delete=models.CASCADE, related_name="clusters")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    images = models.ManyToManyField(Image, related_name="noise_clusters")
    target_landmark = models.ForeignKey(Landmark, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+", help_text="The suggested label (or merge target).")
    suggested_action = models.CharField(max_length=200)
    confidence = models.FloatField(default=0.0)
    benefit = models.FloatField(default=0.0, db_index=True, help_text="Expected gain from acting on it.")
    size = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)

    class Meta:
        ordering = ["status", "-benefit", "id"]

    def __str__(self) -> str:
        return f"Cluster #{self.pk} ({self.get_kind_display()}, {self.size})"

    def get_absolute_url(self) -> str:
        return reverse("cluster-detail", args=[self.pk])


class LabelChange(models.Model):
    """One decision about one image's label. Rows are never edited except to mark them undone."""

    class Action(models.TextChoices):
        RELABEL = "relabel"
        ACCEPT = "accept", "Accept suggestion"
        NOT_LANDMARK = "not_landmark", "Not a landmark"
        MERGE = "merge", "Merge landmarks"
        KEEP = "keep", "Keep as is"
        UNDO = "undo"
        TAKEDOWN = "takedown", "Take down"
        RESTORE = "restore", "Restore"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="label_changes")
    old_landmark = models.ForeignKey(Landmark, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    new_landmark = models.ForeignKey(Landmark, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=14, choices=Action.choices)
    reason = models.CharField(max_length=500, blank=True)
    cleaning_run = models.ForeignKey(CleaningRun, null=True, blank=True, on_delete=models.SET_NULL)
    cluster = models.ForeignKey(NoiseCluster, null=True, blank=True, on_delete=models.SET_NULL)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    batch = models.UUIDField(default=uuid.uuid4, db_index=True, help_text="Changes made by one action together.")
    undoes = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="undone_by")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["old_landmark"]), models.Index(fields=["new_landmark"])]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.old_landmark_id} -> {self.new_landmark_id} ({self.action})"

    @property
    def is_undone(self) -> bool:
        return hasattr(self, "undone_by")
