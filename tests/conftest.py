"""Shared fixtures: real data from ../shared/data, data set layouts built from it, users, and a real
Celery worker process on whichever broker and database the suite runs against."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LANDMARKS_SHARED_DATA", ROOT.parent / "shared" / "data"))
# Resolved: the app stores resolved paths, so a ../shared that is a symbolic link compares equal too.
MINI = (SHARED_DATA / "landmarks-mini").resolve()


def mini_rows() -> list[dict]:
    with (MINI / "images.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def mini_landmarks() -> dict[str, str]:
    with (MINI / "landmarks.csv").open(newline="") as f:
        return {r["landmark_id"]: r["name"] for r in csv.DictReader(f)}


@pytest.fixture(scope="session")
def mini_dir() -> Path:
    if not MINI.is_dir():
        pytest.fail(f"the test data is missing: {MINI} (clone with ../shared beside the project)")
    return MINI


@pytest.fixture(autouse=True)
def _media_in_tmp(request, tmp_path):
    """Each test writes media and artefacts (copies, thumbnails, chunks, indexes) into its own folder (when Django is loaded:
    the ml/ tests also run with ``-p no:django``)."""
    if request.config.pluginmanager.hasplugin("django"):
        settings = request.getfixturevalue("settings")
        settings.MEDIA_ROOT = tmp_path / "media"
        settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
        # A search right after a test switches index versions sees the new one (tests/search/test_engine_swap.py
        # covers the production default, "background").
        settings.SEARCH_ENGINE_SWAP = "blocking"


def _user_with_role(django_user_model, name: str, role: str | None):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(name, password=f"pw-{name}-123")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def curator_user(django_user_model):
    return _user_with_role(django_user_model, "curator", "curators")


@pytest.fixture
def admin_user_role(django_user_model):
    """An account in the admins group (jobs, settings), not a superuser."""
    return _user_with_role(django_user_model, "operator", "admins")


@pytest.fixture
def viewer_user(django_user_model):
    return _user_with_role(django_user_model, "viewer", "viewers")


@pytest.fixture
def imported_mini(db, mini_dir):
    """landmarks-mini imported (files referenced in place), as a user would after `make run DATA=...`."""
    from worker.importing import import_dataset

    return import_dataset(mini_dir)


# --- real worker ----------------------------------------------------------------------------------

def _worker_env(settings) -> dict[str, str]:
    """The worker process talks to the *test* database and the suite's broker."""
    from django.db import connection

    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:"
                               f"{db['PORT'] or 5432}/{db['NAME']}")
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["ARTIFACTS_ROOT"] = str(settings.ARTIFACTS_ROOT)
    return env


def start_worker(settings, log_path: Path, name: str = "w") -> subprocess.Popen:
    """A real `celery worker` process (solo pool) on the suite's broker and test database; waits until ready."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "-Q", "cpu,gpu,interactive",
           "--pool", "solo", "--loglevel", "INFO", "--hostname", f"{name}-{os.getpid()}@%h"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_worker_env(settings), stdout=log, stderr=subprocess.STDOUT)
    started = wait_for(lambda: "ready." in log_path.read_text() or proc.poll() is not None, 60)
    assert started and proc.poll() is None, f"worker did not start:\n{log_path.read_text()}"
    return proc


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clear_broker(settings) -> None:
    from webapp.celery_app import app

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        shutil.rmtree(settings.CELERY_BROKER_FOLDER, ignore_errors=True)
        settings.CELERY_BROKER_FOLDER.mkdir(parents=True)
    else:
        app.control.purge()


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """A real worker for one test; stopped and reaped afterwards."""
    clear_broker(settings)
    proc = start_worker(settings, tmp_path / "worker.log")
    try:
        yield proc
    finally:
        stop_worker(proc)


def wait_for(condition, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


# --- synthetic embeddings (index builds that need no model) ----------------------------------------

def clustered_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres: neighbourhoods like real descriptors have."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, dim))[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_embedding_set(folder: Path, n: int, dim: int, shard_size: int = 50_000):
    """An EmbeddingSet of ``clustered_vectors`` (in files of ``shard_size`` rows), as `embed` would leave one;
    returns it, its ids and its float32 rows (as stored: float16)."""
    from ml.embed import read_embedding_shards, write_embedding_shards
    from webapp.search.models import EmbeddingSet
    from webapp.search.services import packaged_model_version

    ids = [f"img{i:05d}" for i in range(n)]
    path = write_embedding_shards(folder / f"emb-{n}-{dim}", ids, clustered_vectors(n, dim), shard_size=shard_size)
    es = EmbeddingSet.objects.create(model_version=packaged_model_version("tf_efficientnet_lite0"), path=str(path),
                                     dim=dim, image_count=n, scales=[1.0],
                                     params={"models": ["tf_efficientnet_lite0"], "image_size": 128})
    return es, ids, read_embedding_shards(path, dtype=np.float32)[1]


# --- a search index over landmarks-mini (built once per session; rows made per test) ------------------

@pytest.fixture(scope="session")
def mini_index_files(tmp_path_factory):
    """The product's default pipeline built over the 145 landmarks-mini index images (files only), by the
    build's own stages (``ml.stages.index_build``)."""
    from ml.pipeline import DEFAULT_PIPELINE, get_pipeline
    from ml.stages.index_build import build_database

    root = tmp_path_factory.mktemp("mini-index")
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    items = [(r["id"], str(MINI / "images" / f"{r['id']}.jpg")) for r in mini_rows() if r["split"] == "index"]
    build_database(items, pipeline, root)
    return {"pipeline": pipeline, "index": root / "index", "features": root / "features", "count": len(items)}


@pytest.fixture
def active_index(imported_mini, mini_index_files):
    """Rows that make the prepared index the active one, recording its configuration as build_index does."""
    from ml.stages.index_build import BuildSpec, build_record
    from webapp.search.models import EmbeddingSet, IndexVersion
    from webapp.search.services import packaged_model_version

    p = mini_index_files["pipeline"]
    es = EmbeddingSet.objects.create(model_version=packaged_model_version("+".join(p.models)), path="", dim=0,
                                     image_count=mini_index_files["count"])
    spec = BuildSpec(p, str(mini_index_files["features"]), "", str(mini_index_files["index"]))
    return IndexVersion.objects.create(embedding_set=es, path=str(mini_index_files["index"]), is_active=True,
                                       size=mini_index_files["count"],
                                       params={"pipeline": p.name, **build_record(spec)})
