"""Outages with real processes: the web app (gunicorn) and the workers run against a private PostgreSQL
cluster and a private Redis that the tests stop and start; the shared servers are never touched.

- the database goes away under the web app: pages answer 503 "retry shortly", then 200 once it is back;
- the broker is down when a job starts: the job waits, queued, and runs once the broker is back;
- the database goes away under a worker in the middle of a chunked embedding job: the job still succeeds;
- a worker dies in the middle of build_index: the previous index keeps serving, nothing half-built is published.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from celery import Celery
from PIL import Image as PILImage

from tests.conftest import MINI, ROOT, clear_broker, start_worker, stop_worker, wait_for
from tests.faults.private_services import (
    free_port,
    manage,
    private_postgres,
    private_redis,
    start_web,
    start_worker_env,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(300)]
PASSWORD = "outage-pw-8431"
QUERY = MINI / "images" / "233e2de188985424.jpg"  # a London Bridge photo (split 'query')


# --- the product on a private PostgreSQL (web and worker as separate processes) ----------------------

@pytest.fixture(scope="module")
def pg_site(tmp_path_factory):
    """A private cluster, migrated, with landmarks-mini imported and a user; the env its processes use."""
    var = tmp_path_factory.mktemp("pg-site")
    with private_postgres() as pg:
        env = {**os.environ, "DATABASE_URL": pg.url(), "LANDMARKS_VAR_DIR": str(var), "LOG_LEVEL": "WARNING",
               "CELERY_BROKER_URL": "filesystem://", "SEARCH_RATE_LIMIT": "0"}
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "import_dataset", str(MINI), "--no-thumbnails", "--no-index")
        manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
                                   f"User.objects.create_user('alice', password='{PASSWORD}')")
        yield pg, env


class Browser:
    """A cookie-keeping HTTP client, like a browser (no redirects to hide the status codes from us)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path, **(headers or {})})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def login(self, username: str, password: str) -> None:
        _, _, page = self.request("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        status, _, page = self.request("/accounts/login/", {"csrfmiddlewaretoken": token, "username": username,
                                                            "password": password, "next": "/"})
        assert status == 200 and "Log out" in page, page[:500]


def test_database_down_pages_answer_503_then_recover(pg_site, tmp_path):
    pg, env = pg_site
    port = free_port()
    web = start_web(env, port, tmp_path / "web.log")
    try:
        browser = Browser(f"http://127.0.0.1:{port}")
        browser.login("alice", PASSWORD)
        assert browser.request("/landmarks/")[0] == 200

        pg.stop()
        for path in ["/", "/landmarks/", "/jobs/"]:
            status, headers, page = browser.request(path)
            assert status == 503, (path, status, page[:300])
            assert "The database is unavailable at the moment. Please retry shortly." in page
            assert "Traceback" not in page and "OperationalError" not in page
            assert headers["Retry-After"] == "30"
        status, headers, body = browser.request("/api/landmarks/1", headers={"Authorization": "Token x"})
        assert status == 503 and json.loads(body) == {"error": "database unavailable; retry in 30 s"}
        assert headers["Retry-After"] == "30" and headers["Content-Type"] == "application/json"

        pg.start()
        status, _, page = browser.request("/landmarks/")  # the same session: nothing was lost
        assert status == 200 and "Log out" in page
    finally:
        stop_process(web)


def _job_row(pg, job_id: int) -> tuple[str, int]:
    state, done = pg.psql(f"SELECT state, progress_done FROM jobs_job WHERE id = {job_id}", db="landmarks").split("|")
    return state, int(done)


def test_database_down_under_a_running_worker_the_job_still_succeeds(pg_site, tmp_path):
    pg, env = pg_site
    env = {**env, "CELERY_BROKER_FOLDER": str(tmp_path / "broker"), "ARTIFACTS_ROOT": str(tmp_path / "artifacts")}
    worker = start_worker_env(None, tmp_path / "worker.log", "pgdown", env)
    try:
        out = manage(env, "embed", "--queue", "--splits", "index", "--image-size", "96", "--chunk-size", "12",
                     "--num-workers", "0")
        job_id = int(re.search(r"queued job (\d+)", out).group(1))
        assert wait_until(lambda: _job_row(pg, job_id)[1] >= 12, 120), (tmp_path / "worker.log").read_text()[-3000:]
        pg.stop()
        time.sleep(5)  # long enough for the worker to hit the outage on its next chunk
        pg.start()
        assert wait_until(lambda: _job_row(pg, job_id)[0] in ("succeeded", "failed"), 120), \
            (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop_process(worker)
    log = (tmp_path / "worker.log").read_text()
    state, done = _job_row(pg, job_id)
    assert state == "succeeded", log[-3000:]
    images = int(pg.psql("SELECT count(*) FROM catalog_image WHERE split = 'index'", db="landmarks"))
    sets = pg.psql(f"SELECT image_count FROM search_embeddingset WHERE job_id = {job_id}", db="landmarks")
    assert done == images and sets == str(images)  # one embedding set, every image in it
    assert "database unavailable" in log  # the outage did hit the worker, and the worker carried on
    assert "Unrecoverable error" not in log



STORE = ("from worker.celery import app; "
         "app.backend.store_result('outage-result-{n}', 42, 'SUCCESS'); print('stored')")


def _store_result(env: dict, n: int) -> subprocess.Popen:
    """A chord part's last step, alone: Celery storing its result in the database backend."""
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "shell", "-c", STORE.format(n=n)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_storing_a_chord_result_waits_out_a_database_outage(pg_site):
    """The window the chunk task's own wait cannot cover: Celery writes the part's result after the task
    body returned, and a failure there ends a solo-pool worker. The product's backend waits instead."""
    pg, env = pg_site
    pg.stop()
    try:
        stock = _store_result({**env, "CELERY_RESULT_BACKEND": "django-db"}, 1)
        out, _ = stock.communicate(timeout=60)
        assert stock.returncode != 0 and "OperationalError" in out  # the stock backend gives up at once
        patient = _store_result(env, 2)
        time.sleep(4)
        assert patient.poll() is None  # still waiting for the database, not failed
    finally:
        pg.start()
    out, _ = patient.communicate(timeout=90)
    assert patient.returncode == 0 and "stored" in out, out[-2000:]
    assert "Retrying" in out  # it did meet the outage
    row = pg.psql("SELECT status, result FROM django_celery_results_taskresult WHERE task_id = 'outage-result-2'",
                  db="landmarks")
    assert row == "SUCCESS|42"


# --- the broker down when a job starts ----------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_broker_down_job_waits_queued_then_runs(imported_mini, settings, tmp_path, monkeypatch):
    from webapp.jobs import services
    from webapp.jobs.models import Job
    from worker.watchdog import recover_jobs

    with private_redis() as redis:
        # A second, real Celery app: the suite's settings, but on the private Redis.
        # Celery reads CELERY_BROKER_URL from the environment before any configuration (CI sets it for
        # the PostgreSQL + Redis run), so the private broker goes there too, for this test only.
        monkeypatch.setenv("CELERY_BROKER_URL", redis.url)
        app = Celery("landmarks-private")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.broker_url = redis.url
        monkeypatch.setattr(services, "celery_app", app)
        redis.stop()

        started = time.monotonic()
        job = services.start_job(Job.Kind.THUMBNAILS, {"missing": True})
        assert time.monotonic() - started < 20  # starting a job does not hang on the dead broker
        job.refresh_from_db()
        assert job.state == Job.State.QUEUED
        assert "waiting for the message broker" in job.message
        assert recover_jobs(stale_after=0) == []  # still down: the watchdog cannot send it either
        assert Job.objects.get(pk=job.pk).state == Job.State.QUEUED

        redis.start()
        worker = start_worker_env(settings, tmp_path / "worker.log", "brokerdown", {"CELERY_BROKER_URL": redis.url})
        try:
            assert recover_jobs(stale_after=0) == [job.pk]
            assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180), \
                (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            stop_worker(worker)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["thumbnails"] == imported_mini.images_added and job.result["failed"] == 0
    assert "watchdog: sent again because it was never picked up" in job.log


# --- a worker killed while it builds an index ----------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_killed_index_build_leaves_the_old_index_serving(active_index, settings, tmp_path):
    from webapp.jobs.models import Job
    from webapp.jobs.services import start_job
    from webapp.search.engine import search_photo
    from webapp.search.models import IndexVersion

    clear_broker(settings)
    worker = start_worker(settings, tmp_path / "worker.log", "indexkill")
    try:
        job = start_job(Job.Kind.BUILD_INDEX, {"pipeline": "baseline"})
        assert wait_for(lambda: Job.objects.get(pk=job.pk).progress_done > 0, 180), \
            (tmp_path / "worker.log").read_text()[-3000:]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        stop_worker(worker)

    job.refresh_from_db()
    assert job.state == Job.State.RUNNING  # left for the watchdog to resume, not marked done
    assert list(IndexVersion.objects.values_list("pk", "is_active")) == [(active_index.pk, True)]
    outcome = search_photo(PILImage.open(QUERY).convert("RGB"), top_k=5)
    assert outcome.index_version.pk == active_index.pk and outcome.landmark_id is not None and outcome.hits
    for iv in IndexVersion.objects.all():  # every published index is a complete folder
        assert (Path(iv.path) / "meta.json").is_file()
    built = Path(settings.ARTIFACTS_ROOT) / "indexes"
    half_built = [p for p in built.glob("*") if not (p / "meta.json").is_file()] if built.is_dir() else []
    assert not IndexVersion.objects.filter(path__in=[str(p) for p in half_built]).exists()
