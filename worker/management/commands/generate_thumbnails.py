"""python manage.py generate_thumbnails [--all] [--queue]"""

from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = "Make the thumbnails of images that have none (--all: of every image)."
    job_kind = Job.Kind.THUMBNAILS

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--all", action="store_true")

    def handle(self, *args, **options):
        self.run_job({"missing": not options["all"]}, options)
