"""The stages that record what a job made as rows: an embedding set (after the embed stage) and an index
version (after the index stage), each once per job (a twin that gets there second finds the row)."""

from __future__ import annotations

from dataclasses import asdict

from django.db import transaction
from django.utils import timezone

from ml.pipeline import PipelineConfig
from ml.stages.protocol import Plan, Stage, StageFolder, Work
from ml.weights import weights_digest
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, IndexVersion


class RecordEmbeddingSet(Stage):
    """The embed stage's set as an EmbeddingSet row, with the settings its vectors were made with."""

    name = "record-set"
    title = "recording the embeddings"

    def __init__(self, job: Job, work: Work, pipeline: PipelineConfig, model_version: int, image_filter: dict):
        self.job, self.work, self.pipeline = job, work, pipeline
        self.model_version, self.image_filter = model_version, image_filter

    def plan(self, folder: StageFolder) -> Plan:
        return Plan([])

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        made = self.work.stage("embed").joined()
        with transaction.atomic():
            Job.objects.select_for_update().filter(pk=self.job.pk).first()  # one writer per job at a time
            es = EmbeddingSet.objects.filter(job=self.job, path=made["path"]).first()
            if es is None:
                es = EmbeddingSet.objects.create(
                    model_version_id=self.model_version, path=made["path"], dim=made["dim"],
                    image_count=made["count"], scales=list(self.pipeline.scales), image_filter=self.image_filter,
                    params=set_record(self.pipeline, made), job=self.job)
        return {"embedding_set": es.pk}


def set_record(pipeline: PipelineConfig, made: dict) -> dict:
    """What an embedding set records: how its vectors were made (models with their weights' digests, image
    size, scales, mirrored views, the region grid), so an index built from it embeds queries the same way."""
    embed = asdict(pipeline.embed_config())
    return {"embed": {k: embed[k] for k in ("image_size", "scales", "flip")}, "models": list(pipeline.models),
            "model_weights": list(pipeline.model_weights) if pipeline.model_weights else None,
            "model_digests": [weights_digest(m) for m in pipeline.models], "image_size": pipeline.image_size,
            "flip": pipeline.flip, "regional": made.get("regional"), "chunks": made.get("chunks")}


class PublishIndex(Stage):
    """The index stage's folder as the active IndexVersion (in one transaction: searches switch over at
    once), recording the build's whole configuration (``record``)."""

    name = "publish"
    title = "publishing"

    def __init__(self, job: Job, work: Work, record: dict, embedding_set: int | None, parent: int | None = None):
        """``embedding_set``: the set indexed, when it existed before the job (else the one it recorded);
        ``parent``: the index active when the build started, which the new one replaces."""
        self.job, self.work, self.record, self.embedding_set = job, work, record, embedding_set
        self.parent = parent

    def plan(self, folder: StageFolder) -> Plan:
        return Plan([])

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        index = self.work.stage("index").joined()
        es = self.embedding_set or self.work.stage(RecordEmbeddingSet.name).joined()["embedding_set"]
        adapted = self.work.stage("adapt").joined()  # None when the pipeline does not adapt
        with transaction.atomic():
            Job.objects.select_for_update().filter(pk=self.job.pk).first()  # one publisher per job at a time
            iv = IndexVersion.objects.filter(job=self.job).first()
            if iv is None:
                IndexVersion.objects.filter(is_active=True).update(is_active=False)
                iv = IndexVersion.objects.create(
                    embedding_set_id=es, kind={"exact": "flat"}.get(index["kind"], index["kind"]), path=index["path"],
                    size=index["count"], is_active=True, published_at=timezone.now(), job=self.job,
                    parent=IndexVersion.objects.filter(pk=self.parent).first() if self.parent else None,
                    recall=index["recall"], recall_queries=index["recall_queries"],
                    params={**self.record, "shards": index["shards"], "shard_size": index["shard_size"],
                            "recall_k": index["recall_k"], "adaptation": adapted})
        return {"index_version": iv.pk}
