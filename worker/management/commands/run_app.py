"""python manage.py run_app [--data PATH]: what `make run` starts.

Migrates, creates the first admin account, optionally imports a data set, then runs the web server
(gunicorn) and a Celery worker side by side until interrupted. The login (on the first run, the admin's
generated password) is printed last, boxed, right before the web server's first log line: the worker's
start-up lines come before it, and its later lines wait until the web server has printed its first.
"""

import os
import secrets
import signal
import subprocess
import sys
import threading
import time

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

WORKER_READY_SECONDS = 120


def box(lines: list[str]) -> str:
    """``lines`` framed, so they stand out among log lines."""
    width = max(len(line) for line in lines)
    edge = "+" + "-" * (width + 2) + "+"
    return "\n".join([edge, *(f"| {line.ljust(width)} |" for line in lines), edge])


class Relay:
    """Copies a child's output to ours line by line, on a thread. ``hold()`` keeps its lines back until
    ``release()``; ``seen`` is set once a line contains ``marker``."""

    def __init__(self, proc: subprocess.Popen, out, marker: str = ""):
        self.out, self.marker = out, marker
        self.seen = threading.Event()
        self._lock = threading.Lock()
        self._held: list[str] | None = None
        self.first_line = threading.Event()
        threading.Thread(target=self._run, args=(proc.stdout,), daemon=True).start()

    def hold(self) -> None:
        with self._lock:
            self._held = []

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            self._write("".join(held))

    def _run(self, stream) -> None:
        for line in stream:
            with self._lock:
                if self._held is not None:
                    self._held.append(line)
                else:
                    self._write(line)
            self.first_line.set()
            if self.marker and self.marker in line:
                self.seen.set()

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()


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
        login = self.ensure_admin()
        if opts["data"]:
            call_command("import_dataset", opts["data"], stdout=self.stdout, stderr=self.stderr)
        url = f"http://{opts['host']}:{opts['port']}/"
        worker = self.start_worker()
        worker_out = Relay(worker, sys.stdout, marker="ready.")
        worker_out.seen.wait(WORKER_READY_SECONDS)  # its start-up banner comes before the box
        worker_out.hold()
        sys.stdout.write("\n" + box([f"Landmarks is running at {url}", *login, "Press Ctrl+C to stop."]) + "\n\n")
        sys.stdout.flush()
        web = self.start_web(opts)
        web_out = Relay(web, sys.stdout)
        threading.Thread(target=lambda: (web_out.first_line.wait(60), worker_out.release()), daemon=True).start()
        self.supervise([worker, web])

    def ensure_admin(self) -> list[str]:
        """Make the first admin account if there is none; the lines that tell how to log in."""
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return ["Log in with your admin account (made on the first run)."]
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if os.environ.get("ADMIN_PASSWORD"):
            return ["Log in as 'admin' with the password in ADMIN_PASSWORD."]
        return ["First run: an admin account was made.", "  user:     admin", f"  password: {password}",
                "Shown only this once: keep it (or later: python manage.py changepassword admin)."]

    def _child(self, cmd: list[str]) -> subprocess.Popen:
        env = os.environ | {"PYTHONUNBUFFERED": "1"}  # lines arrive as they are written
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                env=env)

    def start_worker(self) -> subprocess.Popen:
        # -B: this worker also runs the beat that schedules the watchdog (one per installation).
        return self._child([sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "-Q",
                            "cpu,gpu,interactive", "--pool", "solo", "--loglevel", "INFO", "--hostname",
                            f"embedded@{os.uname().nodename}", "-B"])

    def start_web(self, opts) -> subprocess.Popen:
        return self._child([sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"{opts['host']}:{opts['port']}",
                            "--workers", str(opts["web_workers"]), "--threads", str(opts["web_threads"]),
                            "--timeout", "120", "--access-logfile", "-"])

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
