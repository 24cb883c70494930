"""Import a data set from disk into Landmark and Image rows.

Validates every image (it must open and decode within the size limits), reports bad files by name and
goes on, skips what is already imported (so a second run adds nothing), and commits one transaction per
batch so an interruption loses at most the batch in flight. A landmark is created with its first imported
image, so rows that are all rejected leave no empty landmark behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from ml.datasets import ImageRecord, read_dataset
from ml.images import BadImage, ImageInfo, inspect_image_file
from webapp.catalog.limits import image_limits
from webapp.catalog.models import CatalogRevision, Image, Landmark, by_external_ids

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class ImportResult:
    layout: str
    landmarks_added: int = 0
    images_added: int = 0
    images_skipped: int = 0  # already imported
    bad_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Rows not imported for a reason (a bad file, a bad row), as against already imported."""
        return len(self.bad_files) + len(self.problems)

    def summary(self) -> dict:
        return {"layout": self.layout, "landmarks_added": self.landmarks_added,
                "images_added": self.images_added, "images_skipped": self.images_skipped,
                "bad_files": len(self.bad_files), "problems": len(self.problems)}


def import_dataset(root: Path, *, copy: bool = False, split: str | None = None, batch_size: int = 1000,
                   progress: Progress | None = None, note: Callable[[str], None] | None = None) -> ImportResult:
    """Import the data set at ``root``; ``note`` receives one line per bad file or skipped row."""
    listing = read_dataset(Path(root))
    result = ImportResult(listing.layout, problems=list(listing.problems))
    note = note or log.warning
    for line in listing.problems:
        note(line)
    landmarks = {r.landmark_id: r for r in listing.landmarks}
    dataset = Path(listing.root).name
    total = len(listing.images)
    for start in range(0, total, batch_size):
        batch = listing.images[start:start + batch_size]
        _import_batch(batch, landmarks, dataset, copy, split, result, note)
        if progress:
            progress(min(start + batch_size, total), total)
    if progress and total == 0:
        progress(0, 0)
    return result


def _ensure_landmarks(records, result: ImportResult) -> dict[str, int]:
    """Create the landmarks (of the rows about to be imported) that are not there yet, in the caller's
    transaction; return external id -> pk for all of them."""
    ids = [r.landmark_id for r in records]
    existing = _pks(Landmark, ids)
    new = [Landmark(external_id=r.landmark_id, name=r.name, source=r.source)
           for r in records if r.landmark_id not in existing]
    Landmark.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
    result.landmarks_added += len(new)
    return existing if not new else _pks(Landmark, ids)


def _pks(model, external_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    # 900 a query: under the 999 bound parameters of older SQLite builds.
    for _, rows in by_external_ids(model.objects.values_list("external_id", "pk"), external_ids, chunk=900):
        found.update(rows)
    return found


def _import_batch(batch: list[ImageRecord], landmarks: dict, dataset: str, copy: bool,
                  split: str | None, result: ImportResult, note) -> None:
    existing = _pks(Image, [r.image_id for r in batch])
    todo = [r for r in batch if r.image_id not in existing]
    result.images_skipped += len(batch) - len(todo)
    checked = _inspect_all(todo)
    rows, copied = [], []
    for rec, info in zip(todo, checked, strict=True):
        if (split or rec.split) and (split or rec.split) not in Image.Split.values:
            line = f"image {rec.image_id}: unknown split {split or rec.split!r} (expected {', '.join(Image.Split.values)})"
            result.problems.append(line)
            note(line)
            continue
        if isinstance(info, BadImage):
            line = f"bad image {rec.path} (id {rec.image_id}): {info}"
            result.bad_files.append(line)
            note(line)
            continue
        row = _image_row(rec, info, dataset, split)
        if copy:
            row.file.name = _copy_into_storage(rec)
            copied.append(row.file.name)
        rows.append((row, rec.landmark_id))
    try:
        with transaction.atomic():
            wanted = {lid for _, lid in rows if lid and lid in landmarks}
            landmark_pks = _ensure_landmarks([landmarks[lid] for lid in sorted(wanted)], result) if wanted else {}
            for row, lid in rows:
                row.landmark_id = landmark_pks.get(lid) if lid else None
            created = Image.objects.bulk_create([row for row, _ in rows], batch_size=500)
    except Exception:
        for name in copied:  # nothing half-written: drop the copies of a batch that did not commit
            default_storage.delete(name)
        raise
    result.images_added += len(created)
    if created:
        CatalogRevision.bump()
    result.added_ids.extend(im.pk for im in created if im.pk is not None)


def _inspect_all(records: list[ImageRecord]) -> list[ImageInfo | BadImage]:
    limits = image_limits()

    def inspect(rec: ImageRecord) -> ImageInfo | BadImage:
        try:
            return inspect_image_file(rec.path, limits)
        except BadImage as exc:
            return exc

    # Decoding releases the GIL, so threads overlap file reads and JPEG decoding.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(inspect, records))


def _image_row(rec: ImageRecord, info: ImageInfo, dataset: str, split: str | None) -> Image:
    return Image(
        external_id=rec.image_id,
        split=split or rec.split or Image.Split.TRAIN,
        path=str(rec.path),
        checksum=info.checksum,
        file_size=info.file_size,
        width=info.width,
        height=info.height,
        source=rec.source,
        dataset=dataset,
    )


def _copy_into_storage(rec: ImageRecord) -> str:
    suffix = rec.path.suffix.lower() or ".jpg"
    with rec.path.open("rb") as f:
        return default_storage.save(f"images/{rec.image_id}{suffix}", File(f))
