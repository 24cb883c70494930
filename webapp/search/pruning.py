"""Deleting old index versions and embedding sets, files and rows.

Every build publishes a new index folder and, unless it reuses one, a new embedding set; nothing is deleted
by itself, so that any earlier version can be rolled back to. At scale that fills disks: at 4 M images an
index holds 20 GB of vectors and a set 10 GB, plus 200 GB of region descriptors. ``prune`` keeps the
active index and the ``keep`` most recently published other versions (what `rollback` can go back to),
and the embedding sets those use plus the ``keep`` newest sets; it deletes the rest.

It also deletes the per-image feature caches (RootSIFT, dense) that no kept index uses: the dense features
of an older model, about 90 KB a photo (360 GB at 4 M photos), are of no use once no index made with that
model is left. The RootSIFT cache of the default setting stays whatever is kept: cleaning jobs verify with it.
A photo deleted from the catalogue loses its files in every cache as soon as the deletion commits
(``forget_features``, connected in ``webapp.search.apps``); files left by photos deleted otherwise (before
that existed, or in the database by hand) go when pruning.

It refuses while a job is queued or running: a build, an embedding or a cleaning may be reading a set or
an index it would delete (a clean plan names its set only in its own files). It deletes files only under
ARTIFACTS_ROOT, and never a folder that a kept row also points to.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce

from ml.dense_matching import DENSE_KEY_PREFIX
from ml.spatial import SIFT_KEY_PREFIX, LocalFeatureConfig, cache_file_name
from webapp.catalog.models import ID_CHUNK, Image
from webapp.jobs.models import Job
from webapp.search.models import EmbeddingSet, IndexVersion
from webapp.search.services import feature_dir

CACHE_PREFIXES = (SIFT_KEY_PREFIX, DENSE_KEY_PREFIX)
log = logging.getLogger(__name__)


class PruneRefused(RuntimeError):
    """Pruning now could delete what a job is using."""


@dataclass
class Prune:
    """What ``prune`` deletes (or, in a dry run, would delete)."""

    indexes: list[IndexVersion] = field(default_factory=list)
    sets: list[EmbeddingSet] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # under ARTIFACTS_ROOT, used by no kept row
    caches: list[Path] = field(default_factory=list)  # feature caches (one folder per setting) no kept index uses
    orphans: list[Path] = field(default_factory=list)  # files, in the caches that stay, of photos since deleted
    left: list[Path] = field(default_factory=list)  # outside ARTIFACTS_ROOT: the rows go, the files stay
    bytes: int = 0


def what_to_delete(keep: int) -> Prune:
    """What pruning to the active index plus ``keep`` other versions (and ``keep`` newest sets) deletes."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    busy = Job.objects.exclude(state__in=Job.FINISHED_STATES)
    if busy.exists():
        jobs = ", ".join(f"#{j.pk} {j.kind} ({j.state})" for j in busy[:5])
        raise PruneRefused(f"jobs are queued or running ({jobs}); prune when they have finished")
    newest_first = (Coalesce("published_at", "created_at").desc(), "-id")  # NULLs sort apart per database
    indexes = list(IndexVersion.objects.order_by(*newest_first))
    kept = [iv for iv in indexes if iv.is_active] + [iv for iv in indexes if not iv.is_active][:keep]
    kept_ids = {iv.pk for iv in kept}
    sets = list(EmbeddingSet.objects.order_by("-created_at", "-id"))
    kept_sets = {iv.embedding_set_id for iv in kept} | {es.pk for es in sets[:keep]}
    out = Prune(indexes=[iv for iv in indexes if iv.pk not in kept_ids],
                sets=[es for es in sets if es.pk not in kept_sets])
    in_use = {_resolved(iv.path) for iv in kept} | {_resolved(es.path) for es in sets if es.pk in kept_sets}
    root = Path(settings.ARTIFACTS_ROOT).resolve()
    for path in {_resolved(row.path) for row in [*out.indexes, *out.sets]} - in_use - {None}:
        (out.folders if path.is_relative_to(root) and path != root else out.left).append(path)
    out.folders.sort()
    out.left.sort()
    out.caches = _unused_caches(kept)
    out.orphans = _orphans([cache for cache in cache_folders() if cache not in out.caches])
    out.bytes = _size(out.folders + out.caches, kept=[p for p in in_use if p is not None])
    out.bytes += sum(path.stat().st_size for path in out.orphans)
    return out


def _unused_caches(kept: list[IndexVersion]) -> list[Path]:
    """The feature caches under the product's feature folder that no kept index version reads.

    Only folders named as caches are candidates; each kept version says which it reads (recorded when it
    was built); when one does not, what it reads cannot be told and every cache stays."""
    folder = feature_dir()
    in_use = {LocalFeatureConfig().cache_key()}  # cleaning jobs verify with the default setting
    for iv in kept:
        keys = iv.feature_caches
        if keys is None:
            return []
        if iv.params.get("feature_dir") and Path(iv.params["feature_dir"]).resolve() == folder.resolve():
            in_use |= keys
    return [cache for cache in cache_folders() if cache.name not in in_use]


def cache_folders() -> list[Path]:
    """The per-setting feature caches under the product's feature folder (only folders named as caches)."""
    folder = feature_dir()
    if not folder.is_dir():
        return []
    return sorted(child for child in folder.iterdir() if child.is_dir() and child.name.startswith(CACHE_PREFIXES))


def forget_features(image_ids: list[str]) -> int:
    """Delete the cached features of ``image_ids`` (deleted from the catalogue) from every cache; returns
    the files deleted. An id imported again later gets features of its new file, not the old one's."""
    names = []
    for image_id in image_ids:
        try:
            names.append(cache_file_name(image_id))
        except ValueError:
            pass  # such an id never had a cache file
    deleted = 0
    for cache in cache_folders():
        for name in names:
            try:
                (cache / name).unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:  # not ours to delete here (a read-only mount): prune_indexes finds it later
                log.warning("cannot delete the cached features %s: %s", cache / name, exc)
    return deleted


def _orphans(caches: list[Path]) -> list[Path]:
    """The files in ``caches`` of photos no longer in the catalogue (deleted before ``forget_features``
    existed, or by hand in the database), read a chunk of ids at a time."""
    out: list[Path] = []
    for cache in caches:
        ids: list[str] = []
        with os.scandir(cache) as entries:
            for entry in entries:
                if entry.name.endswith(".npz") and not entry.name.startswith("."):  # ".x.tmp": being written
                    ids.append(entry.name.removesuffix(".npz"))
                if len(ids) == ID_CHUNK:
                    out += _not_in_catalogue(cache, ids)
                    ids = []
        out += _not_in_catalogue(cache, ids)
    return sorted(out)


def _not_in_catalogue(cache: Path, ids: list[str]) -> list[Path]:
    known = set(Image.objects.filter(external_id__in=ids).values_list("external_id", flat=True))
    return [cache / cache_file_name(i) for i in ids if i not in known]


def prune(keep: int, dry_run: bool = False) -> Prune:
    """Delete what ``what_to_delete(keep)`` lists: the rows in one transaction, then their folders."""
    out = what_to_delete(keep)
    if dry_run:
        return out
    with transaction.atomic():
        IndexVersion.objects.filter(pk__in=[iv.pk for iv in out.indexes]).delete()
        EmbeddingSet.objects.filter(pk__in=[es.pk for es in out.sets]).delete()
    for folder in out.folders + out.caches:  # after the rows: no row ever points to a folder half deleted
        shutil.rmtree(folder, ignore_errors=True)
    for path in out.orphans:
        path.unlink(missing_ok=True)
    return out


def _resolved(path: str) -> Path | None:
    return Path(path).resolve() if path else None


def _size(folders: list[Path], kept: list[Path]) -> int:
    """Bytes deleting ``folders`` frees: each file once, none that a kept folder also links (a set and the
    indexes built from it share their region file)."""
    seen: set[tuple[int, int]] = set()
    for _, st in _files(kept):
        seen.add((st.st_dev, st.st_ino))
    total = 0
    for _, st in _files(folders):
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def _files(folders: list[Path]):
    for folder in folders:
        for parent, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                yield path, os.lstat(path)
