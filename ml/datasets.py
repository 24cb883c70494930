"""Reading a data set's listing from disk, whatever its layout. No image is opened here.

Three layouts are recognised from what is in the folder:

- ``landmarks-mini``: ``images.csv`` (id, landmark_id, split, ...) + ``landmarks.csv`` (landmark_id, name,
  ...) + ``images/<id>.jpg``;
- ``gldv2``: ``train.csv`` (id, url, landmark_id), or ``gldv2-clean``: ``train.csv``/``train_clean.csv``
  (landmark_id, images) with space-separated image ids; images at ``train/a/b/c/<id>.jpg`` or ``a/b/c/<id>.jpg``;
  landmark names from ``train_label_to_category.csv`` when present;
- ``folders``: one folder per landmark, whose name is the landmark's name and id.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ml.images import IMAGE_SUFFIXES

# Ids become file names and URL parts: letters, digits and a few safe marks, never a path.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
GLDV2_CSV_NAMES = ("train.csv", "train_clean.csv", "clean_train.csv")


class DatasetError(ValueError):
    """The folder is not a data set we can read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LandmarkRecord:
    landmark_id: str
    name: str
    source: str = ""


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    path: Path
    landmark_id: str | None
    split: str | None = None
    source: str = ""


@dataclass
class DatasetListing:
    layout: str
    root: Path
    landmarks: list[LandmarkRecord]
    images: list[ImageRecord]
    problems: list[str] = field(default_factory=list)  # rows skipped, each naming the row and why


def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` from the files in it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if (root / "images.csv").is_file() and (root / "landmarks.csv").is_file():
        return "landmarks-mini"
    for name in GLDV2_CSV_NAMES:
        if (root / name).is_file():
            header = _header(root / name)
            if {"id", "landmark_id"} <= set(header):
                return "gldv2"
            if {"landmark_id", "images"} <= set(header):
                return "gldv2-clean"
            raise DatasetError(
                f"{root / name}: unknown columns {header}; expected id,url,landmark_id (GLDv2) "
                "or landmark_id,images (GLDv2-clean)"
            )
    if any(_image_files(d) for d in _subfolders(root)):
        return "folders"
    raise DatasetError(
        f"{root}: no known data set layout: expected images.csv + landmarks.csv, a GLDv2 train.csv, "
        "or one folder of images per landmark"
    )


def read_dataset(root: Path) -> DatasetListing:
    """List the landmarks and images of the data set at ``root``."""
    root = Path(root).resolve()
    layout = detect_layout(root)
    reader = {"landmarks-mini": _read_mini, "gldv2": _read_gldv2, "gldv2-clean": _read_gldv2_clean,
              "folders": _read_folders}[layout]
    listing = reader(root)
    listing.images = _dedupe(listing.images, listing.problems)
    return listing


# --- landmarks-mini -------------------------------------------------------------------------------

def _read_mini(root: Path) -> DatasetListing:
    problems: list[str] = []
    landmarks = []
    for n, row in _rows(root / "landmarks.csv", required={"landmark_id", "name"}):
        lid = _check_id(row["landmark_id"], f"landmarks.csv row {n}: landmark_id", problems)
        if lid:
            landmarks.append(LandmarkRecord(lid, row["name"].strip() or lid, (row.get("source") or "").strip()))
    known = {lm.landmark_id for lm in landmarks}
    images = []
    for n, row in _rows(root / "images.csv", required={"id", "landmark_id"}):
        where = f"images.csv row {n}"
        iid = _check_id(row["id"], f"{where}: id", problems)
        lid = (row["landmark_id"] or "").strip() or None
        if not iid:
            continue
        if lid is not None and lid not in known:
            problems.append(f"{where}: image {iid} has unknown landmark_id {lid!r} (not in landmarks.csv)")
            continue
        path = _inside(root, root / "images" / f"{iid}.jpg", where, problems)
        if path:
            images.append(ImageRecord(iid, path, lid, (row.get("split") or "").strip() or None,
                                      (row.get("source") or "").strip()))
    return DatasetListing("landmarks-mini", root, landmarks, images, problems)


# --- GLDv2 ----------------------------------------------------------------------------------------

def _gldv2_csv(root: Path) -> Path:
    return next(root / n for n in GLDV2_CSV_NAMES if (root / n).is_file())


def gldv2_image_path(root: Path, image_id: str) -> Path:
    """GLDv2 keeps ``<id>.jpg`` under its first three characters: ``[train/]a/b/c/<id>.jpg``."""
    rel = Path(image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")
    under_train = root / "train" / rel
    return under_train if under_train.exists() or (root / "train").is_dir() else root / rel


def _gldv2_landmarks(root: Path, ids: Iterable[str]) -> list[LandmarkRecord]:
    names: dict[str, str] = {}
    categories = root / "train_label_to_category.csv"
    if categories.is_file():
        for _, row in _rows(categories, required={"landmark_id", "category"}):
            url = row["category"].strip()
            # Categories are Wikimedia URLs: .../Category:Eiffel_Tower -> "Eiffel Tower".
            names[row["landmark_id"].strip()] = url.rsplit("Category:", 1)[-1].replace("_", " ") or url
    return [LandmarkRecord(lid, names.get(lid, f"landmark {lid}")) for lid in sorted(set(ids), key=_natural)]


def _gldv2_record(root: Path, iid: str, lid: str, where: str, problems: list[str]) -> ImageRecord | None:
    iid = _check_id(iid, f"{where}: id", problems)
    lid = _check_id(lid, f"{where}: landmark_id", problems)
    if not iid or not lid:
        return None
    if len(iid) < 3:
        problems.append(f"{where}: image id {iid!r} is shorter than the 3 characters its path needs")
        return None
    path = _inside(root, gldv2_image_path(root, iid), where, problems)
    return ImageRecord(iid, path, lid, "train") if path else None


def _read_gldv2(root: Path) -> DatasetListing:
    csv_path = _gldv2_csv(root)
    problems: list[str] = []
    images = []
    for n, row in _rows(csv_path, required={"id", "landmark_id"}):
        rec = _gldv2_record(root, row["id"], row["landmark_id"], f"{csv_path.name} row {n}", problems)
        if rec:
            images.append(rec)
    landmarks = _gldv2_landmarks(root, (im.landmark_id for im in images))
    return DatasetListing("gldv2", root, landmarks, images, problems)


def _read_gldv2_clean(root: Path) -> DatasetListing:
    csv_path = _gldv2_csv(root)
    problems: list[str] = []
    images = []
    for n, row in _rows(csv_path, required={"landmark_id", "images"}):
        for iid in (row["images"] or "").split():
            rec = _gldv2_record(root, iid, row["landmark_id"], f"{csv_path.name} row {n}", problems)
            if rec:
                images.append(rec)
    landmarks = _gldv2_landmarks(root, (im.landmark_id for im in images))
    return DatasetListing("gldv2-clean", root, landmarks, images, problems)


# --- one folder per landmark ------------------------------------------------------------------------

def _read_folders(root: Path) -> DatasetListing:
    problems: list[str] = []
    landmarks, found = [], []
    for folder in _subfolders(root):
        files = _image_files(folder)
        if not files:
            continue
        landmarks.append(LandmarkRecord(_slug(folder.name), folder.name))
        found.extend((folder, f) for f in files)
    # An image's id is its file name without extension, or folder/name where two folders share a name.
    stems: dict[str, int] = {}
    for _, f in found:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    images = []
    for folder, f in found:
        iid = _slug(f.stem if stems[f.stem] == 1 else f"{folder.name}-{f.stem}")
        iid = _check_id(iid, f"{f.relative_to(root)}: id", problems)
        path = _inside(root, f, str(f.relative_to(root)), problems)
        if iid and path:
            images.append(ImageRecord(iid, path, _slug(folder.name), None))
    return DatasetListing("folders", root, landmarks, images, problems)


# --- helpers --------------------------------------------------------------------------------------

def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _rows(path: Path, required: set[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with its header checked; ``n`` counts data rows from 1."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = required - set(header)
            if missing:
                raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}; found {header}")
            reader.fieldnames = header
            for n, row in enumerate(reader, start=1):
                yield n, {k: (v or "") for k, v in row.items() if k is not None}
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV: {exc}") from exc


def _check_id(value: str | None, where: str, problems: list[str]) -> str | None:
    value = (value or "").strip()
    if _SAFE_ID.match(value) and ".." not in value:
        return value
    problems.append(f"{where}: {value!r} is not a valid id (letters, digits, '_', '-', '.'; at most 200)")
    return None


def _inside(root: Path, path: Path, where: str, problems: list[str]) -> Path | None:
    """``path`` made absolute, or None (with a problem noted) if it would escape the data set's folder.

    Checked on the normalised path, not the resolved one: a symbolic link the owner put inside the
    folder is theirs to make, while an id like ``../../etc/passwd`` is not.
    """
    absolute = Path(os.path.abspath(path))
    if absolute.is_relative_to(root):
        return absolute
    problems.append(f"{where}: {path} points outside the data set folder {root}")
    return None


def _dedupe(images: list[ImageRecord], problems: list[str]) -> list[ImageRecord]:
    seen: dict[str, ImageRecord] = {}
    for rec in images:
        if rec.image_id in seen:
            problems.append(f"duplicate image id {rec.image_id}: kept the first ({seen[rec.image_id].path})")
        else:
            seen[rec.image_id] = rec
    return list(seen.values())


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _slug(name: str) -> str:
    """A folder or file name made into an id: unsafe characters become '_'."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip("._-")[:200] or "_"


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
