"""build_index with a pipeline that re-scores by regions: the region descriptors are stored in the index
folder (published with it), the web engine memory-maps them, and searches use them. A chunked embedding job
asked for regions makes them on its workers, and build_index takes them from its embedding set."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from ml.embed import EmbedConfig, embed_images, read_embedding_shards, write_embedding_shards
from ml.images import load_rgb
from ml.pipeline import database_regions, load_models
from ml.regional import FILE_NAME, load_regions
from ml.weights import load_model
from tests.conftest import MINI, wait_for
from tests.pipelines import REGIONAL, config_file
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.jobs.services import start_job
from webapp.search.engine import current_engine, search_photo
from webapp.search.models import EmbeddingSet, IndexVersion
from webapp.search.services import image_file_path, packaged_model_version
from worker.stages import work_of

pytestmark = pytest.mark.django_db
QUERY = "0d186bfb6e895d52"  # a strecha_castle photo: 40 photos of its landmark in the index split


def test_regions_are_published_with_the_index_and_used_by_search(imported_mini, tmp_path):
    images = list(Image.objects.filter(split=Image.Split.INDEX).order_by("pk"))
    ids = [im.external_id for im in images]
    # A real embedding set (lite0, 128 px): build_index embeds queries and regions the way it was made.
    vectors = embed_images(load_model("tf_efficientnet_lite0"), [image_file_path(im) for im in images],
                           EmbedConfig(image_size=128, num_workers=0))
    path = write_embedding_shards(tmp_path / "emb", ids, vectors)
    es = EmbeddingSet.objects.create(model_version=packaged_model_version("tf_efficientnet_lite0"), path=str(path),
                                     dim=vectors.shape[1], image_count=len(ids), scales=[1.0],
                                     params={"models": ["tf_efficientnet_lite0"], "image_size": 128})
    call_command("build_index", "--config", config_file(tmp_path, REGIONAL), "--embedding-set", str(es.pk),
                 "--shard-size", "60")

    iv = IndexVersion.objects.get(is_active=True)
    regions = load_regions(iv.path)
    assert regions is not None and regions.shape[0] == len(ids) and regions.shape[2] == vectors.shape[1]
    assert sorted(p.name for p in Path(iv.path).iterdir() if not p.name.startswith("shard-")) == ["meta.json", FILE_NAME]  # no temp
    # Region 0 is the whole image: the very vector the index holds, in the same order.
    np.testing.assert_allclose(regions[:, 0].astype(np.float32), vectors, atol=3e-3)

    engine = current_engine()
    assert isinstance(engine.database.regions, np.memmap)  # memory-mapped, not loaded into the web process
    outcome = search_photo(load_rgb(MINI / "images" / f"{QUERY}.jpg"))
    castle = Image.objects.get(external_id=QUERY).landmark
    top = Image.objects.filter(external_id__in=[h.image_id for h in outcome.hits[:5]])
    assert all(im.landmark == castle for im in top)
    assert all(h.fused >= h.global_score - 1e-3 for h in outcome.hits[:20])
    assert any(h.fused > h.global_score + 0.01 for h in outcome.hits[:20])  # re-scored by regions


def test_one_pass_embeds_and_regions_the_catalogue(imported_mini, tmp_path):
    """Without an embedding set, build_index makes the regions once and indexes their whole-image rows: the
    embedding set it records holds the same vectors the index searches, and region 0 of each image."""
    call_command("build_index", "--config", config_file(tmp_path, REGIONAL), "--splits", "query")
    iv = IndexVersion.objects.get(is_active=True)
    regions = load_regions(iv.path)
    es_ids, es_vectors = read_embedding_shards(iv.embedding_set.path, dtype=np.float32)
    assert len(es_ids) == regions.shape[0] == 34
    np.testing.assert_allclose(es_vectors, regions[:, 0].astype(np.float32), atol=3e-3)
    # Region 0 is what the global descriptor of the same file is (the pass replaced embed_images).
    photo = Image.objects.get(external_id=es_ids[5])
    alone = embed_images(load_model("tf_efficientnet_lite2"), [image_file_path(photo)],
                         EmbedConfig(image_size=512, scales=(2**-0.5, 1.0, 2**0.5), num_workers=0))[0]
    np.testing.assert_allclose(es_vectors[5], alone, atol=3e-3)
    outcome = search_photo(load_rgb(image_file_path(photo)))
    assert outcome.hits[0].image_id == photo.external_id
    # The embedding set (made in chunks, as the embed job makes them) keeps the regions too (the same
    # file), so a later build from it takes them.
    assert iv.embedding_set.params["regional"] == {"levels": 3, "overlap": 0.4}
    assert iv.embedding_set.params["chunks"] == 1 and iv.embedding_set.params["models"] == ["tf_efficientnet_lite2"]
    assert (Path(iv.embedding_set.path) / FILE_NAME).stat().st_ino == (Path(iv.path) / FILE_NAME).stat().st_ino


def test_a_chunked_embedding_with_regions_gives_build_index_its_regions(imported_mini, tmp_path):
    """`embed --regions 3` keeps each chunk's region descriptors (from the same forward passes) and joins
    them into its embedding set: the same as one pass over all the photos, region 0 being the set's vectors.
    One photo per chunk, so chunks hold 10, 12 or 21 regions and the join pads them as one pass does.
    build_index from that set takes the file as it is (the same inode, not made again in one process)."""
    call_command("embed", "--splits", "query", "--image-size", "128", "--regions", "3", "--chunk-size", "1")
    es = EmbeddingSet.objects.get()
    assert es.params["regional"] == {"levels": 3, "overlap": 0.4} and es.params["chunks"] == 34
    ids, vectors = read_embedding_shards(es.path, dtype=np.float32)
    regions = load_regions(es.path)
    assert regions.shape == (34, 21, es.dim)
    padded = ~np.asarray(regions).any(axis=2)  # zero rows: photos with fewer regions than the most
    assert padded.sum(axis=1).max() == 11 and not padded[:, :10].any()
    np.testing.assert_allclose(vectors, regions[:, 0].astype(np.float32), atol=3e-3)
    pipeline = replace(REGIONAL, image_size=128, scales=(1.0,), models=("tf_efficientnet_lite0",))
    paths = [image_file_path(Image.objects.get(external_id=i)) for i in ids]
    whole = database_regions(load_models(pipeline), paths, pipeline)  # one pass, one process
    np.testing.assert_allclose(regions.astype(np.float32), whole.astype(np.float32), atol=3e-3)

    call_command("build_index", "--config", config_file(tmp_path, REGIONAL), "--embedding-set", str(es.pk))
    iv = IndexVersion.objects.get(is_active=True)
    assert (Path(iv.path) / FILE_NAME).stat().st_ino == (Path(es.path) / FILE_NAME).stat().st_ino
    assert not list(Path(iv.path).glob(".*.tmp"))
    photo = Image.objects.get(external_id=ids[7])
    assert search_photo(load_rgb(image_file_path(photo))).hits[0].image_id == photo.external_id


def test_a_set_embedded_with_flip_tta_is_indexed_and_searched_with_it(imported_mini, tmp_path):
    """The default pipeline also embeds the mirrored photo: a build from a set made with `embed --flip`
    records it, and the engine embeds queries the same way, so a database photo finds itself at cosine ~1
    (unmirrored, the same photo is measurably further: the check would fail on a mismatch)."""
    call_command("embed", "--splits", "query", "--image-size", "128", "--flip", "--regions", "3")
    es = EmbeddingSet.objects.get()
    assert es.params["embed"]["flip"] is True
    call_command("build_index", "--config", config_file(tmp_path, REGIONAL), "--embedding-set", str(es.pk))
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.params["config"]["flip"] is True and current_engine().database.pipeline.flip
    ids, vectors = read_embedding_shards(es.path, dtype=np.float32)
    photo = Image.objects.get(external_id=ids[4])
    hit = search_photo(load_rgb(image_file_path(photo))).hits[0]
    unflipped = embed_images(load_model("tf_efficientnet_lite0"), [image_file_path(photo)],
                             EmbedConfig(image_size=128, num_workers=0))[0]
    assert hit.image_id == photo.external_id
    assert hit.global_score > 0.995 > float(unflipped @ vectors[4])  # measured 0.998 and 0.990


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_queued_build_embeds_the_catalogue_in_chunks_on_the_workers(celery_worker_process, imported_mini,
                                                                      tmp_path):
    """build_index with no embedding set (what an import queues) sends its embedding chunks to the workers
    (a chord), whose callback hands the job back to build_index: it publishes the set with its regions,
    links them into the index, builds the shards and publishes the index."""
    job = start_job(Job.Kind.BUILD_INDEX, {"config": REGIONAL.as_dict(), "splits": ["query"], "chunk_size": 12})
    log = tmp_path / "worker.log"
    assert wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 300), log.read_text()[-3000:]
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.error
    text = log.read_text()
    assert text.count("worker.stage_part") >= 3 and "worker.resume_job" in text
    es = EmbeddingSet.objects.get(job=job)
    assert es.params["chunks"] == 3 and es.params["regional"] == {"levels": 3, "overlap": 0.4}
    assert es.image_filter == {"splits": ["query"]} and es.image_count == 34
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.embedding_set == es
    assert (Path(iv.path) / FILE_NAME).stat().st_ino == (Path(es.path) / FILE_NAME).stat().st_ino
    assert not work_of(job).path.exists()
    ids, _ = read_embedding_shards(es.path)
    photo = Image.objects.get(external_id=ids[20])
    assert search_photo(load_rgb(image_file_path(photo))).hits[0].image_id == photo.external_id
