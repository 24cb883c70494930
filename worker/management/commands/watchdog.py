"""python manage.py watchdog [--stale-after SECONDS]: resume jobs whose worker died, now."""

from django.core.management.base import BaseCommand

from worker.watchdog import recover_jobs


class Command(BaseCommand):
    help = "Send again the jobs whose worker stopped answering and the queued jobs never picked up."

    def add_arguments(self, parser):
        parser.add_argument("--stale-after", type=float, help="Seconds without a heartbeat (default: JOB_STALE_SECONDS).")

    def handle(self, *args, **o):
        sent = recover_jobs(o["stale_after"])
        self.stdout.write(f"sent again: {', '.join(map(str, sent)) or 'none'}")
