"""python manage.py run_app [--data PATH]: what `make run` starts.

Migrates, creates the first admin account, optionally imports a data set, then runs the web server
(gunicorn) and a Celery worker side by side until interrupted.
"""

import os
import secrets
import signal
import subprocess
import sys
import time

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web app and a worker on this machine (embedded defaults unless the environment says otherwise)."

    def add_arguments(self, parser):
        parser.add_argument("--data", help="Import this data set before serving.")
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
        # One request at a time per process by default: the processes then share one queue (the listen
        # socket), so searches are served in order; with 4 threads each process queued its own share and
        # searches time-sliced, and p95 at 10 clients rose from 0.93 s to 1.24 s (docs/benchmarks.md).
        parser.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS", "1")))

    def handle(self, *args, **opts):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        login_hint = self.ensure_admin()
        if opts["data"]:
            call_command("import_dataset", opts["data"], stdout=self.stdout, stderr=self.stderr)
        url = f"http://{opts['host']}:{opts['port']}/"
        procs = [self.start_worker(), self.start_web(opts)]
        self.stdout.write(self.style.SUCCESS(f"\nLandmarks is running at {url}\n{login_hint}\nPress Ctrl+C to stop.\n"))
        self.supervise(procs)

    def ensure_admin(self) -> str:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return "Log in with your admin account (created on the first run)."
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if os.environ.get("ADMIN_PASSWORD"):
            return "Log in as 'admin' with the password in ADMIN_PASSWORD."
        return f"Log in as 'admin' with password: {password}  (shown only this once)"

    def start_worker(self) -> subprocess.Popen:
        # -B: this worker also runs the beat that schedules the watchdog (one per installation).
        cmd = [sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "-Q", "cpu,gpu,interactive",
               "--pool", "solo", "--loglevel", "INFO", "--hostname", f"embedded@{os.uname().nodename}", "-B"]
        return subprocess.Popen(cmd)

    def start_web(self, opts) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{opts['host']}:{opts['port']}",
               "--workers", str(opts["web_workers"]), "--threads", str(opts["web_threads"]), "--timeout", "120",
               "--access-logfile", "-"]
        return subprocess.Popen(cmd)

    def supervise(self, procs: list[subprocess.Popen]) -> None:
        """Wait until a child exits or we are told to stop; then stop the others."""
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
