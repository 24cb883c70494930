"""python manage.py build_index [--pipeline NAME] [--model-version ID] [--splits ...] [--queue]"""

from ml.pipeline import DEFAULT_PIPELINE, list_pipelines
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Embed the searchable images, build the faiss index and the local-feature cache of the retrieval "
            "pipeline, and publish it as the active IndexVersion (searches switch over atomically).")
    job_kind = Job.Kind.BUILD_INDEX

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list_pipelines())
        parser.add_argument("--model-version", type=int, help="ModelVersion id (default: the active model).")
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values,
                            help="Images to index (default: train and index; queries and tests stay out).")

    def handle(self, *args, **o):
        self.run_job({"pipeline": o["pipeline"], "model_version": o["model_version"], "splits": o["splits"]}, o)
