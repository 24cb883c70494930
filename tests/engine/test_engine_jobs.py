"""The engine's jobs from the database side: train records a ModelVersion with its curves, embed writes an
EmbeddingSet with the active model, and the model page plots the curves."""

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from ml.embed import read_embedding_shards
from webapp.jobs.models import Job
from webapp.jobs.services import cancel_job, create_job
from webapp.search.models import EmbeddingSet, ModelVersion
from webapp.search.services import active_model_version
from worker import chunks

pytestmark = pytest.mark.django_db


def test_embed_uses_packaged_lite0_when_nothing_is_trained(imported_mini):
    call_command("embed", "--splits", "query", "--image-size", "128")
    es = EmbeddingSet.objects.get()
    assert es.model_version.name == "tf_efficientnet_lite0-imagenet" and es.image_count == 34
    ids, vectors = read_embedding_shards(es.path)
    assert len(ids) == 34 and vectors.shape == (34, es.dim) and vectors.dtype == np.float16
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)


def test_train_records_a_model_version_that_becomes_active(imported_mini, client, viewer_user):
    call_command("train", "--splits", "index", "--max-steps", "3", "--batch-size", "8", "--image-size", "96",
                 "--name", "tiny", "--augmentation", "none")
    job = Job.objects.get(kind=Job.Kind.TRAIN)
    assert job.state == Job.State.SUCCEEDED and job.result["steps"] == 3
    mv = ModelVersion.objects.get(name="tiny")
    assert mv.checkpoint.endswith("final.pt") and mv.params["classes"] == 34
    steps = mv.metrics["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["loss"] > 0 for s in steps)
    assert active_model_version() == mv
    client.force_login(viewer_user)
    html = client.get(reverse("model-detail", args=[mv.pk])).content.decode()
    assert "<svg" in html and "polyline" in html and "loss" in html
    call_command("embed", "--splits", "query", "--image-size", "96")
    assert EmbeddingSet.objects.get().model_version == mv


def test_train_few_shot_starts_from_the_imagenet_descriptor(imported_mini):
    call_command("train", "--splits", "index", "--max-steps", "2", "--batch-size", "8", "--image-size", "96",
                 "--name", "few", "--augmentation", "none", "--few-shot", "--optimizer", "adamw")
    job = Job.objects.get(kind=Job.Kind.TRAIN)
    assert job.state == Job.State.SUCCEEDED
    assert job.params["model"]["neck_init"] == "identity" and job.params["model"]["embedding_dim"] == 1280
    assert job.params["train"]["head_init"] == "imprint" and job.params["train"]["freeze_bn"] is True
    mv = ModelVersion.objects.get(name="few")
    call_command("embed", "--splits", "query", "--image-size", "96")
    assert EmbeddingSet.objects.get().model_version == mv and EmbeddingSet.objects.get().dim == 1280


def test_a_cancelled_chunked_embedding_leaves_no_work_folder(imported_mini):
    params = {"splits": ["index"], "chunk_size": 50, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = create_job(Job.Kind.EMBED, params, queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    job.refresh_from_db()
    p = chunks.plan(job)
    chunks.compute_chunk(job, p, 0)  # one chunk of three on disk, the others still queued ...
    assert cancel_job(job)  # ... when the job is cancelled
    assert chunks.finish_job(job.pk) == Job.State.CANCELLED  # the chord's callback: nothing resumes it
    assert not chunks.work_dir(job).exists()
    assert chunks.run_chunk(job.pk, 1) == 1  # a part delivered late computes and leaves nothing
    assert not chunks.work_dir(job).exists() and not EmbeddingSet.objects.filter(job=job).exists()
