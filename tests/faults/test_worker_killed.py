"""Kill a worker in the middle of an embedding job: the watchdog sends the job again, it resumes from the
chunks already on disk, and the vectors equal those of an uninterrupted run."""

import os
import signal

import numpy as np
import pytest
from django.core.management import call_command

from ml.embed import read_embedding_shards
from tests.conftest import clear_broker, start_worker, stop_worker, wait_for
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search.models import EmbeddingSet
from worker import chunks
from worker.watchdog import recover_jobs

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
PARAMS = {"splits": ["index"], "chunk_size": 12, "embed": {"image_size": 96, "scales": [1.0], "num_workers": 0}}


def test_killed_embedding_resumes_from_finished_chunks(imported_mini, settings, tmp_path):
    call_command("embed", "--splits", "index", "--image-size", "96", "--chunk-size", "12", "--num-workers", "0")
    reference = EmbeddingSet.objects.get()
    ref_ids, ref_vectors = read_embedding_shards(reference.path)

    clear_broker(settings)
    first = start_worker(settings, tmp_path / "first.log", "first")
    job = start_job(Job.Kind.EMBED, PARAMS)
    try:
        assert wait_for(lambda: len(list(chunks.work_dir(job).glob("chunk-*.npy"))) >= 3, 300)
        os.kill(first.pid, signal.SIGKILL)  # no warm shutdown: the worker just dies
        first.wait()
    finally:
        stop_worker(first)
    survived = {p.name: p.stat().st_mtime_ns for p in chunks.work_dir(job).glob("chunk-*.npy")}
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and 0 < len(survived) < 13

    second = start_worker(settings, tmp_path / "second.log", "second")
    try:
        assert recover_jobs(stale_after=0) == [job.pk]
        assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 600), (tmp_path / "second.log").read_text()[-3000:]
    finally:
        stop_worker(second)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    assert "watchdog: sent again because its worker stopped answering" in job.log
    for name, mtime in survived.items():  # finished chunks were not computed again
        assert (chunks.work_dir(job) / name).stat().st_mtime_ns == mtime
    ids, vectors = read_embedding_shards(EmbeddingSet.objects.get(job=job).path)
    assert ids == ref_ids
    assert np.allclose(vectors.astype(np.float32), ref_vectors.astype(np.float32), atol=2e-3)
