"""The three import layouts, built in a test folder from landmarks-mini's real photos."""

import csv
import shutil
from pathlib import Path

from tests.conftest import MINI, mini_landmarks, mini_rows


def _copy(image_id: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MINI / "images" / f"{image_id}.jpg", dst)


def make_gldv2_layout(root: Path, under_train: bool = True) -> Path:
    """GLDv2: train.csv (id,url,landmark_id) and images at [train/]a/b/c/<id>.jpg."""
    base = root / "train" if under_train else root
    rows = mini_rows()
    root.mkdir(parents=True)
    with (root / "train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "landmark_id"])
        for r in rows:
            w.writerow([r["id"], f"https://example.org/{r['id']}.jpg", r["landmark_id"]])
    for r in rows:
        i = r["id"]
        _copy(i, base / i[0] / i[1] / i[2] / f"{i}.jpg")
    with (root / "train_label_to_category.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["landmark_id", "category"])
        for lid, name in mini_landmarks().items():
            w.writerow([lid, f"http://commons.wikimedia.org/wiki/Category:{name}"])
    return root


def make_gldv2_clean_layout(root: Path) -> Path:
    """GLDv2-clean: landmark_id,images (space-separated ids) and images at a/b/c/<id>.jpg."""
    root.mkdir(parents=True)
    by_landmark: dict[str, list[str]] = {}
    for r in mini_rows():
        by_landmark.setdefault(r["landmark_id"], []).append(r["id"])
        i = r["id"]
        _copy(i, root / i[0] / i[1] / i[2] / f"{i}.jpg")
    with (root / "train_clean.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["landmark_id", "images"])
        for lid, ids in by_landmark.items():
            w.writerow([lid, " ".join(ids)])
    return root


def make_folders_layout(root: Path) -> Path:
    """One folder per landmark, named after it."""
    names = mini_landmarks()
    for r in mini_rows():
        _copy(r["id"], root / names[r["landmark_id"]] / f"{r['id']}.jpg")
    return root
