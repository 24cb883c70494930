"""Derived artefacts: trained models, embedding sets and search indexes. Vectors live in files under
ARTIFACTS_ROOT, never in rows; each row records what it was derived from, so staleness can be seen."""

from django.conf import settings
from django.db import models


class ModelVersion(models.Model):
    name = models.CharField(max_length=200, unique=True)
    backbone = models.CharField(max_length=100, default="tf_efficientnet_lite0")
    head = models.CharField(max_length=30, blank=True, help_text="Training head (arcface, cosface, ...).")
    embedding_dim = models.PositiveIntegerField(default=512)
    checkpoint = models.CharField(max_length=1000, blank=True, help_text="Checkpoint path; empty = packaged weights.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               help_text="The model active when this one was trained: the one it replaces.")
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Per-step curves: loss, accuracy, lr.")
    pinned = models.BooleanField(default=False, help_text="Chosen as the active model (a rollback); "
                                 "otherwise the latest trained model is active.")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class EmbeddingSet(models.Model):
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="embedding_sets")
    path = models.CharField(max_length=1000, help_text="Folder of fp16 .npy shards with their Image ids.")
    dim = models.PositiveIntegerField()
    image_count = models.PositiveIntegerField(default=0)
    scales = models.JSONField(default=list)
    image_filter = models.JSONField(default=dict, blank=True, help_text="Which images (e.g. split).")
    params = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Embeddings #{self.pk} ({self.model_version}, {self.image_count} images)"


class IndexVersion(models.Model):
    class Kind(models.TextChoices):
        FLAT = "flat", "Exact (flat inner product)"
        IVFPQ = "ivfpq", "Approximate (IVF-PQ)"
        HNSW = "hnsw", "Approximate (HNSW)"

    embedding_set = models.ForeignKey(EmbeddingSet, on_delete=models.PROTECT, related_name="indexes")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FLAT)
    path = models.CharField(max_length=1000, help_text="Published folder of the index files.")
    size = models.PositiveIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False, help_text="The version the app and workers search.")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    recall = models.FloatField(null=True, blank=True, help_text="Approximate indexes: recall@100 of their "
                               "search against exact search, measured when built; null for exact ones.")
    recall_queries = models.PositiveIntegerField(null=True, blank=True,
                                                 help_text="Database vectors used as queries to measure recall.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                               help_text="The index active when this one was built: the one it replaces.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True),
                                    name="one_active_index"),
        ]

    def __str__(self) -> str:
        return f"Index #{self.pk} ({self.kind}, {self.size} vectors)"

    def pipeline_config(self):
        """The whole pipeline configuration this index was built with (``ml.pipeline.PipelineConfig``), from
        its own record: searching, "why this match", pruning and exports rebuild everything from it, never
        from a preset (a preset edited or deleted since changes nothing here)."""
        from ml.pipeline import PipelineConfig

        if not self.params.get("config"):
            raise ValueError(f"index #{self.pk} records no pipeline configuration; build it again")
        return PipelineConfig.from_dict(self.params["config"])

    @property
    def feature_caches(self) -> set[str] | None:
        """The names of the per-image feature caches searches on this index read (None: not recorded)."""
        keys = self.params.get("feature_caches")
        return None if keys is None else set(keys)

    @property
    def recall_summary(self) -> str:
        """What the index pages say about search quality: "exact", or the measured recall."""
        if self.kind == self.Kind.FLAT:
            return "exact"
        if self.recall is None:
            return "recall not measured"
        k = self.params.get("recall_k") or 100
        return f"recall@{k} vs exact: {self.recall:.2f} ({self.recall_queries} sampled queries)"


class Evaluation(models.Model):
    """An index version's pipeline, as it records it (models included), evaluated on a data set in the
    evaluation layout (``ml.evaluate``), with labels and without: what the versions page compares."""

    index_version = models.ForeignKey(IndexVersion, on_delete=models.CASCADE, related_name="evaluations")
    dataset = models.CharField(max_length=1000, help_text="The evaluation set's folder (resolved path).")
    figures = models.JSONField(default=dict, help_text="Percent: map and gap and recall_at_1 with labels, "
                               "map_no_labels without; queries, database images.")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["index_version", "dataset"], name="one_evaluation_per_set")]

    def __str__(self) -> str:
        return f"Index #{self.index_version_id} on {self.dataset}"


class SearchQuery(models.Model):
    """One search by photo, kept for its results page and the user's history. Private: its owner (and admins)
    may open it; an anonymous search, the browser session that ran it. ``share_token`` (set by the owner's
    "share") makes a separate, unguessable link that anyone allowed to search may open (webapp/search/access.py)."""

    uid = models.UUIDField(unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="searches")
    photo = models.FileField(upload_to="queries/", help_text="The uploaded photo, re-encoded as JPEG.")
    original_name = models.CharField(max_length=255, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, on_delete=models.SET_NULL)
    index_version = models.ForeignKey(IndexVersion, null=True, on_delete=models.SET_NULL)
    options = models.JSONField(default=dict, blank=True, help_text="Re-ranking steps and parameters used.")
    landmark = models.ForeignKey("catalog.Landmark", null=True, blank=True, on_delete=models.SET_NULL)
    confidence = models.FloatField(null=True, blank=True)
    candidates = models.JSONField(default=list, blank=True, help_text="Top landmark candidates with scores.")
    seconds = models.FloatField(default=0.0)
    share_token = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False,
                                   help_text="Secret of the share link; empty while the search is private.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Search {self.uid}"


class SearchResult(models.Model):
    query = models.ForeignKey(SearchQuery, on_delete=models.CASCADE, related_name="results")
    rank = models.PositiveIntegerField()
    image = models.ForeignKey("catalog.Image", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField(help_text="The probability, 0 to 1, that it shows the query's place: the ranking "
                              "key, never higher than the result above it.")
    global_score = models.FloatField(help_text="Cosine similarity of the global descriptors.")
    inliers = models.IntegerField(null=True, blank=True, help_text="Local matches spatial verification found; null "
                                  "if it was not checked.")
    dense_inliers = models.IntegerField(
        null=True, blank=True,
        help_text="Positions of the network's feature maps that one perspective transform matches (dense "
                  "matching); null if not matched or none agree.")
    verified = models.BooleanField(default=False, help_text="Enough local or feature-map matches to be the same "
                                   "place; a handful of chance matches is not a verification.")

    class Meta:
        ordering = ["query", "rank"]
        constraints = [models.UniqueConstraint(fields=["query", "rank"], name="one_result_per_rank")]
