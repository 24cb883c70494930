"""`prune_indexes`: old index versions and embedding sets are deleted, rows and files, keeping the active
index and what rollback can go back to; nothing while a job is queued or running."""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from ml.dense_matching import cache_key as dense_cache_key
from ml.pipeline import feature_cache_keys, get_pipeline
from ml.spatial import LocalFeatureConfig
from tests.conftest import synthetic_embedding_set
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from webapp.jobs.services import create_job
from webapp.search.models import EmbeddingSet, IndexVersion
from webapp.search.pruning import prune
from webapp.search.services import activate_index, feature_dir

pytestmark = pytest.mark.django_db
PIPELINE = "baseline"  # no verification: the index holds the set's vectors as they are


def _builds(settings, count: int) -> list[IndexVersion]:
    """``count`` index versions, each built from its own embedding set under ARTIFACTS_ROOT; oldest first."""
    out = []
    for n in range(count):
        es, _, _ = synthetic_embedding_set(Path(settings.ARTIFACTS_ROOT) / "embeddings" / f"set{n}", 120, 8)
        call_command("build_index", "--pipeline", PIPELINE, "--embedding-set", str(es.pk))
        out.append(IndexVersion.objects.get(is_active=True))
    return out


def test_prune_keeps_the_active_index_and_the_most_recent_others(settings, capsys):
    v1, v2, v3, v4 = _builds(settings, 4)
    activate_index(v1)  # rolled back to the oldest: the active one is kept whatever its age
    mine = Path(settings.MEDIA_ROOT) / "mine"  # a folder outside ARTIFACTS_ROOT: its row may go, never its files
    mine.mkdir(parents=True)
    outside = IndexVersion.objects.create(embedding_set=v2.embedding_set, path=str(mine), size=1,
                                          published_at=v1.published_at - timedelta(days=1))
    everything = [v1, v2, v3, v4]
    set_path = {iv.pk: Path(iv.embedding_set.path) for iv in everything}

    call_command("prune_indexes", "--keep", "1", "--dry-run")
    assert capsys.readouterr().out.count("would delete index #") == 3
    assert IndexVersion.objects.count() == 5 and all(Path(iv.path).is_dir() for iv in everything)

    call_command("prune_indexes", "--keep", "1")
    said = capsys.readouterr().out
    # Kept: v1 (active), v4 (the most recent other) and their sets; v4's is also the newest set.
    assert set(IndexVersion.objects.values_list("pk", flat=True)) == {v1.pk, v4.pk}
    assert set(EmbeddingSet.objects.values_list("pk", flat=True)) == {v1.embedding_set_id, v4.embedding_set_id}
    for iv in (v1, v4):
        assert Path(iv.path).is_dir() and set_path[iv.pk].is_dir()
    for iv in (v2, v3):
        assert not Path(iv.path).exists() and not set_path[iv.pk].exists()
    assert not IndexVersion.objects.filter(pk=outside.pk).exists()
    assert mine.is_dir() and f"left in place (outside ARTIFACTS_ROOT): {mine.resolve()}" in said
    assert "deleted 3 index versions, 2 embedding sets and 0 feature caches: 4 folders" in said

    call_command("rollback", "--index", str(v4.pk))  # what is left can still be switched to
    assert IndexVersion.objects.get(is_active=True) == v4


def test_prune_refuses_while_a_job_is_queued_or_running(settings):
    v1, v2, v3 = _builds(settings, 3)
    create_job(Job.Kind.BUILD_INDEX, {"pipeline": PIPELINE, "embedding_set": v1.embedding_set_id})
    with pytest.raises(CommandError, match=r"jobs are queued or running \(#\d+ build_index \(queued\)\)"):
        call_command("prune_indexes", "--keep", "0")
    assert IndexVersion.objects.count() == 3 and all(Path(iv.path).is_dir() for iv in (v1, v2, v3))
    Job.objects.update(state=Job.State.SUCCEEDED)
    with pytest.raises(CommandError, match="keep must be >= 0"):
        call_command("prune_indexes", "--keep", "-1")


def _cache(folder: Path, size: int = 4096) -> Path:
    folder.mkdir(parents=True)
    (folder / "a1b2.npz").write_bytes(b"x" * size)
    return folder


def test_prune_deletes_the_feature_caches_no_kept_index_reads(settings, capsys):
    old, new = _builds(settings, 2)  # new is active
    # As if both had been built by the default pipeline (RootSIFT and dense features), each with its model:
    # each records the caches it reads.
    default, folder = get_pipeline("default"), feature_dir()
    for iv, model in ((old, "/models/v1.pt"), (new, "/models/v2.pt")):
        built = replace(default, models=(model,))
        iv.params = {**iv.params, "pipeline": "default", "config": built.as_dict(), "dense": True,
                     "feature_caches": sorted(feature_cache_keys(built)), "feature_dir": str(folder)}
        IndexVersion.objects.filter(pk=iv.pk).update(params=iv.params)
    sift = _cache(folder / default.local_features.cache_key())
    dense_old = _cache(folder / dense_cache_key("/models/v1.pt", default.dense, default.image_size))
    dense_new = _cache(folder / dense_cache_key("/models/v2.pt", default.dense, default.image_size))
    other_sift = _cache(folder / LocalFeatureConfig(max_side=800).cache_key())  # a setting no index uses
    notes = _cache(folder / "notes")  # not named as a cache: never touched

    call_command("prune_indexes", "--keep", "1")  # both versions kept: only the unused setting goes
    said = capsys.readouterr().out
    assert f"deleted feature cache {other_sift}" in said and not other_sift.exists()
    assert all(p.is_dir() for p in (sift, dense_old, dense_new, notes))

    # A kept version that records no caches (built before versions recorded them): what it reads cannot be
    # told, so every cache stays.
    IndexVersion.objects.filter(pk=new.pk).update(params={k: v for k, v in new.params.items() if k != "feature_caches"})
    assert prune(0, dry_run=True).caches == []
    IndexVersion.objects.filter(pk=new.pk).update(params=new.params)

    out = prune(0)  # the old version goes, and with it the only index that read the v1 model's dense features
    assert [iv.pk for iv in out.indexes] == [old.pk] and out.caches == [dense_old]
    assert not dense_old.exists() and out.bytes >= 4096
    assert all(p.is_dir() for p in (sift, dense_new, notes))  # the active version's, and cleaning's RootSIFT


def test_a_deleted_image_loses_its_cached_features_once_the_deletion_commits(imported_mini,
                                                                            django_capture_on_commit_callbacks):
    """Its id may be imported again for another photo: that one must not be verified with the old one's
    features. Other photos' files, and folders not named as caches, are not touched."""
    gone, kept = list(Image.objects.order_by("pk")[:2])
    default, folder = get_pipeline("default"), feature_dir()
    caches = [folder / default.local_features.cache_key(),
              folder / dense_cache_key("/models/v1.pt", default.dense, default.image_size), folder / "notes"]
    for cache in caches:
        cache.mkdir(parents=True)
        for image in (gone, kept):
            (cache / f"{image.external_id}.npz").write_bytes(b"x")

    with pytest.raises(RuntimeError), transaction.atomic():  # a deletion rolled back: nothing goes
        gone.delete()
        raise RuntimeError("rolled back")
    assert all((cache / f"{gone.external_id}.npz").exists() for cache in caches)

    with django_capture_on_commit_callbacks(execute=True):
        Image.objects.filter(external_id=gone.external_id).delete()  # (the rolled-back delete cleared gone.pk)
    assert not any((cache / f"{gone.external_id}.npz").exists() for cache in caches[:2])
    assert (caches[2] / f"{gone.external_id}.npz").exists()  # not a cache
    assert all((cache / f"{kept.external_id}.npz").exists() for cache in caches)


def test_prune_deletes_the_cached_files_of_photos_no_longer_in_the_catalogue(imported_mini, capsys):
    """Files left by photos deleted before their files went with them (by hand, or by an older version)."""
    photo = Image.objects.order_by("pk").first()
    sift = feature_dir() / LocalFeatureConfig().cache_key()  # the cache cleaning uses: always kept
    sift.mkdir(parents=True)
    for image_id in (photo.external_id, "0ld1d", "0ld2d"):
        (sift / f"{image_id}.npz").write_bytes(b"x" * 100)
    (sift / ".0ld3d.npz.tmp").write_bytes(b"x")  # being written: not an entry
    notes = feature_dir() / "notes"  # not named as a cache: never touched
    notes.mkdir()
    (notes / "0ld1d.npz").write_bytes(b"x")

    planned = prune(2, dry_run=True)
    assert planned.orphans == [sift / "0ld1d.npz", sift / "0ld2d.npz"] and planned.bytes == 200
    assert (sift / "0ld1d.npz").exists()
    call_command("prune_indexes")
    assert "deleted 2 cached feature files of photos no longer in the catalogue" in capsys.readouterr().out
    assert sorted(p.name for p in sift.iterdir()) == [".0ld3d.npz.tmp", f"{photo.external_id}.npz"]
    assert (notes / "0ld1d.npz").exists()
