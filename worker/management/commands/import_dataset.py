"""python manage.py import_dataset PATH [--copy] [--split S] [--queue]"""

from pathlib import Path

from django.core.management.base import CommandError

from ml.datasets import DatasetError, detect_layout
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Import a data set (landmarks-mini layout, GLDv2 train.csv / GLDv2-clean, or one folder per "
            "landmark). Files are referenced where they are unless --copy.")
    job_kind = Job.Kind.IMPORT

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("path", type=Path)
        parser.add_argument("--copy", action="store_true", help="Copy the files into media storage.")
        parser.add_argument("--split", choices=Image.Split.values, help="Put every image in this split.")
        parser.add_argument("--no-thumbnails", action="store_true", help="Do not queue thumbnail generation.")
        parser.add_argument("--no-index", action="store_true", help="Do not queue the index rebuild.")

    def handle(self, *args, **options):
        path = options["path"].resolve()
        try:
            layout = detect_layout(path)  # fail before creating a job if PATH is not a data set
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"importing {path} ({layout} layout)")
        params = {"path": str(path), "copy": options["copy"], "split": options["split"],
                  "thumbnails": not options["no_thumbnails"], "index": not options["no_index"]}
        self.run_job(params, options)
