"""The engine's jobs from the database side: train records a ModelVersion with its curves, embed writes an
EmbeddingSet with the active model, and the model page plots the curves; a chunked embedding that cannot
be finished fails its job rather than running for ever."""

import numpy as np
import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import worker.registry  # noqa: F401 - registers the job functions, as the worker does
from ml.embed import read_embedding_shards
from ml.stages.protocol import compute_part
from tests.badimages import text_as_jpeg
from tests.conftest import wait_for
from tests.stages import plan_until
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.jobs.services import cancel_job, create_job, start_job
from webapp.search.models import EmbeddingSet, ModelVersion
from webapp.search.services import active_model_version, image_file_path
from worker import stages
from worker.building import open_build
from worker.embedding import open_embed
from worker.watchdog import recover_jobs

pytestmark = pytest.mark.django_db


def test_embed_uses_packaged_lite0_when_nothing_is_trained(imported_mini):
    call_command("embed", "--splits", "query", "--image-size", "128")
    es = EmbeddingSet.objects.get()
    assert es.model_version.name == "tf_efficientnet_lite0-imagenet" and es.image_count == 34
    ids, vectors = read_embedding_shards(es.path)
    assert len(ids) == 34 and vectors.shape == (34, es.dim) and vectors.dtype == np.float16
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)


def test_a_worker_batches_and_decodes_chunks_its_own_way_unless_the_job_says(imported_mini, settings):
    """build_index's embedding leaves batching and decoding open: each worker applies its own
    EMBED_BATCH_SIZE and EMBED_DECODE_WORKERS (a GPU worker and a small CPU want different ones); `embed
    --batch-size/--num-workers` fix them for the job. Neither changes what the set records."""
    settings.EMBED_BATCH_SIZE, settings.EMBED_DECODE_WORKERS = 4, 0
    build = create_job(Job.Kind.BUILD_INDEX, {"splits": ["query"]})
    embed = open_build(build, create=True).stages[0]
    cfg = embed.pipeline.embed_config(embed.runtime)
    assert embed.name == "embed" and (cfg.batch_size, cfg.num_workers, cfg.flip) == (4, 0, True)
    fixed = create_job(Job.Kind.EMBED, {"splits": ["query"], "embed": {"image_size": 64, "batch_size": 2,
                                                                        "num_workers": 1}})
    assert open_embed(fixed, create=True).stages[0].runtime == {"batch_size": 2, "num_workers": 1}
    call_command("embed", "--splits", "query", "--image-size", "64")
    job = Job.objects.filter(kind=Job.Kind.EMBED).latest("pk")
    assert "batch_size" not in job.params["embed"] and "num_workers" not in job.params["embed"]
    assert EmbeddingSet.objects.get().params["embed"] == {"image_size": 64, "scales": [1.0], "flip": False}


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


def test_each_chunk_reads_its_own_images_not_the_whole_plan(imported_mini):
    """The plan holds sizes and settings; each chunk's ids and paths are in a file of their own, so a chunk
    task of a job over millions of images does not parse them all."""
    params = {"splits": ["query"], "chunk_size": 12, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = create_job(Job.Kind.EMBED, params, queued=True)
    embed = plan_until(job, "embed")
    assert embed.plan.sizes == [12, 12, 10]
    assert ".jpg" not in (embed.folder.path / "plan.json").read_text()
    inputs = [embed.folder.inputs(i) for i in range(3)]
    assert all(len(x["paths"]) == len(x["ids"]) for x in inputs)
    images = list(Image.objects.filter(split="query").order_by("pk"))
    assert [i for x in inputs for i in x["ids"]] == [im.external_id for im in images]
    assert inputs[2]["paths"][-1] == image_file_path(images[-1])
    assert compute_part(embed.stage, embed.folder, embed.plan, 2)
    assert np.load(embed.folder.file("chunk-000002.npy")).shape[0] == 10 and embed.folder.pending(embed.plan) == [0, 1]


def test_an_embedding_chunk_beats_its_jobs_heartbeat_while_it_runs(imported_mini, monkeypatch):
    """A chunk can take minutes (512 photos through the default pipeline on a CPU), longer than the watchdog
    waits for a heartbeat: the chunk task beats it per photo (at most every HEARTBEAT_SECONDS, here every
    photo), not only once the chunk is done, so its job is not taken for dead and sent again."""
    monkeypatch.setattr(stages, "HEARTBEAT_SECONDS", 0.0)
    params = {"splits": ["query"], "chunk_size": 12, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = create_job(Job.Kind.EMBED, params, queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING)
    embed = plan_until(job, "embed")
    with CaptureQueriesContext(connection) as queries:
        stages.run_part(job.pk, "embed", 0)
    beats = [q["sql"] for q in queries.captured_queries
             if q["sql"].startswith('UPDATE "jobs_job" SET "heartbeat_at"')]
    assert len(beats) >= 12 and embed.folder.done(0)
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total, job.stage) == (12, 34, "stage 1 of 2: embedding")


def test_a_cancelled_chunked_embedding_leaves_no_work_folder(imported_mini):
    params = {"splits": ["index"], "chunk_size": 50, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = create_job(Job.Kind.EMBED, params, queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, worker="w:1")
    job.refresh_from_db()
    embed = plan_until(job, "embed")
    compute_part(embed.stage, embed.folder, embed.plan, 0)  # one chunk of three on disk, the others still queued ...
    assert cancel_job(job)  # ... when the job is cancelled
    assert stages.resume(job.pk, "w:1", False).state == Job.State.CANCELLED  # the chord's callback: nothing resumes it
    assert not stages.work_of(job).path.exists()
    assert stages.run_part(job.pk, "embed", 1) == 1  # a part delivered late computes and leaves nothing
    assert not stages.work_of(job).path.exists() and not EmbeddingSet.objects.filter(job=job).exists()


def test_a_chunk_that_cannot_be_embedded_fails_the_job_and_a_database_error_is_retried(imported_mini, monkeypatch):
    params = {"splits": ["query"], "chunk_size": 12, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = create_job(Job.Kind.EMBED, params, queued=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, worker="w:1")
    job.refresh_from_db()
    plan_until(job, "embed")
    monkeypatch.setattr("ml.stages.embed.shared_models", lambda specs: [object()])

    def database_down(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")
    monkeypatch.setattr("ml.stages.embed.embed_database", database_down)
    with pytest.raises(OperationalError):  # transient: Celery runs the chunk task again later
        stages.run_part(job.pk, "embed", 1)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and stages.work_of(job).spec() is not None

    def broken(*args, **kwargs):
        raise ValueError("cannot load image 'x.jpg': cannot identify image file 'x.jpg'")
    monkeypatch.setattr("ml.stages.embed.embed_database", broken)
    assert stages.run_part(job.pk, "embed", 1) == 1  # for good: the task ends, so the chord's callback comes
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.finished_at is not None
    assert job.message == "embedding part 1: cannot load image 'x.jpg': cannot identify image file 'x.jpg'"
    assert job.error.startswith("ValueError in embedding part 1: ")
    assert not stages.work_of(job).path.exists()
    assert stages.resume(job.pk, "w:1", False).state == Job.State.FAILED
    assert not EmbeddingSet.objects.filter(job=job).exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_photo_broken_under_a_queued_embedding_fails_the_job_at_its_chunk(celery_worker_process, imported_mini,
                                                                            tmp_path):
    """The file of the last query photo was replaced after the import by bytes that are no image (the plan
    does not open the photos: its chunk task is the first to read it): the chunk task fails the job with the
    chunk and the reason, the chord ends, and neither the watchdog nor anything else runs the job again.
    Before, the chunk task raised, the chord's callback never came, and the job stayed running for the
    watchdog to send again for ever."""
    photo = Image.objects.filter(split="query").order_by("pk").last()
    bad = text_as_jpeg(tmp_path / "photo.jpg")
    Image.objects.filter(pk=photo.pk).update(path=str(bad))
    params = {"splits": ["query"], "chunk_size": 12, "embed": {"image_size": 64, "scales": [1.0], "num_workers": 0}}
    job = start_job(Job.Kind.EMBED, params)  # 34 photos: chunks 0 and 1 of 12, chunk 2 of 10 with the photo

    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120), (tmp_path / "worker.log").read_text()[-3000:]
    job.refresh_from_db()
    assert job.state == Job.State.FAILED, (job.state, job.message)
    assert job.message.startswith(f"embedding part 2: cannot load image '{bad}'"), job.message
    assert "cannot identify image file" in job.message and "ValueError in embedding part 2" in job.error
    assert not EmbeddingSet.objects.filter(job=job).exists()
    assert wait_for(lambda: "worker.resume_job" in (tmp_path / "worker.log").read_text(), 60)  # the chord ended
    assert wait_for(lambda: not stages.work_of(job).path.exists(), 30)
    assert recover_jobs(stale_after=0) == []  # nothing left for the watchdog to send again
