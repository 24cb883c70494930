"""`make run` (manage.py run_app) on a fresh install: the generated admin password comes last, boxed, right
before the web server's first log line, and it is the admin's password."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, wait_for
from tests.faults.private_services import free_port

pytestmark = pytest.mark.worker


def test_first_run_prints_the_admin_password_boxed_right_before_the_server_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_PASSWORD", "DATABASE_URL", "CELERY_BROKER_URL")}
    env |= {"LANDMARKS_VAR_DIR": str(tmp_path / "var"), "WEB_CONCURRENCY": "1"}
    log = tmp_path / "run_app.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "run_app", "--port", str(free_port())], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = wait_for(lambda: "Starting gunicorn" in log.read_text() or proc.poll() is not None, 240, 0.5)
        assert started and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(2)  # let the worker's held lines through
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    lines = log.read_text().splitlines()
    server = next(i for i, line in enumerate(lines) if "Starting gunicorn" in line)
    before = [line for line in lines[:server] if line.strip()]
    assert before[-1].startswith("+--"), "\n".join(before[-12:])  # the box ends right before the server
    top = max(i for i, line in enumerate(before[:-1]) if line == before[-1])
    box = [line.strip("| ").strip() for line in before[top + 1:-1]]
    assert all(line.startswith("| ") and line.endswith(" |") for line in before[top + 1:-1])
    assert box[0].startswith("Landmarks is running at http://127.0.0.1:")
    assert box[1:3] == ["First run: an admin account was made.", "user:     admin"], box
    password = box[3].removeprefix("password:").strip()
    assert any("ready." in line for line in lines[:server])  # the worker's start-up came before the box

    check = subprocess.run([sys.executable, "manage.py", "shell", "-c",
                            "from django.contrib.auth.models import User; "
                            f"print(User.objects.get(username='admin').check_password({password!r}))"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip().splitlines()[-1] == "True", check.stdout + check.stderr
