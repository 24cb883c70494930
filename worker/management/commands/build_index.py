"""python manage.py build_index [--pipeline NAME | --config FILE] [--model-version ID | --embedding-set ID] [--splits ...]
[--chunk-size N] [--shard-size N] [--index-kind KIND] [--queue]"""

from pathlib import Path

from ml.index import KINDS
from ml.pipeline import DEFAULT_PIPELINE, PIPELINES, list_pipelines
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.commands.evaluate import read_config
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Embed the searchable images, build the faiss index and the local-feature cache of the retrieval "
            "pipeline, and publish it as the active IndexVersion (searches switch over atomically).")
    job_kind = Job.Kind.BUILD_INDEX

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list_pipelines(),
                            help="; ".join(f"{name}: {p.description}" for name, p in PIPELINES.items()))
        parser.add_argument("--config", type=Path, help="A whole pipeline configuration as JSON (an index "
                            "version's params \"config\", or `bench/pipelines.py NAME`) instead of a preset.")
        parser.add_argument("--model-version", type=int, help="ModelVersion id (default: the active model).")
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values,
                            help="Images to index (default: train and index; queries and tests stay out).")
        parser.add_argument("--embedding-set", type=int,
                            help="Index the vectors of this EmbeddingSet (from `embed`) instead of embedding here.")
        parser.add_argument("--chunk-size", type=int,
                            help="Images per embedding chunk and per feature chunk, each done by its own task "
                                 "(default: 512).")
        parser.add_argument("--shard-size", type=int,
                            help="Vectors per index shard, each built by its own task (default: INDEX_SHARD_SIZE).")
        parser.add_argument("--index-kind", choices=KINDS,
                            help="exact, ivfpq, hnsw, or auto (exact up to 200k vectors; the pipeline's default).")

    def handle(self, *args, **o):
        params = {"pipeline": o["pipeline"], "model_version": o["model_version"], "splits": o["splits"]}
        if o["config"]:
            params["config"] = read_config(o["config"]).as_dict()
        if o["embedding_set"]:
            params["embedding_set"] = o["embedding_set"]
        if o["chunk_size"]:
            params["chunk_size"] = o["chunk_size"]
        if o["shard_size"]:
            params["shard_size"] = o["shard_size"]
        if o["index_kind"]:
            params["index"] = {"kind": o["index_kind"]}
        self.run_job(params, o)
