"""The three import layouts, built in a test folder from landmarks-mini's real photos."""

import csv
import json
import shutil
from pathlib import Path

from tests.conftest import MINI, mini_landmarks, mini_rows

EVAL_QUERIES = ["2057eb3037d018d4", "0ccf2e2a3f817675", "0a87edf4e12b6e28"]


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


def make_mini_subset(root: Path, landmark_ids: set[str]) -> Path:
    """landmarks-mini's own layout (images.csv, landmarks.csv, images/) with only these landmarks' photos."""
    rows = [r for r in mini_rows() if r["landmark_id"] in landmark_ids]
    (root / "images").mkdir(parents=True)
    for name in ("images.csv", "landmarks.csv"):
        with (MINI / name).open(newline="") as src, (root / name).open("w", newline="") as dst:
            reader = csv.DictReader(src)
            writer = csv.DictWriter(dst, reader.fieldnames)
            writer.writeheader()
            writer.writerows(r for r in reader if r["landmark_id"] in landmark_ids)
    for r in rows:
        _copy(r["id"], root / "images" / f"{r['id']}.jpg")
    return root


def make_eval_layout(root: Path, queries=EVAL_QUERIES, positives_per_query: int = 3, negatives: int = 6) -> Path:
    """The evaluation layout (images/, gnd.json with labels) of a few landmarks-mini queries, their first
    positives and a few photos of other landmarks."""
    gnd = json.loads((MINI / "gnd.json").read_text())
    labels = gnd["labels"]
    db: list[str] = []
    entries = {}
    for q in queries:
        pos = gnd["queries"][q]["easy"][:positives_per_query]
        db += pos
        entries[q] = {"easy": pos, "hard": [], "junk": []}
    used = {labels[i] for i in db}
    db += [i for i in gnd["images"] if labels[i] not in used][:negatives]
    (root / "images").mkdir(parents=True)
    for i in db + list(queries):
        shutil.copyfile(MINI / "images" / f"{i}.jpg", root / "images" / f"{i}.jpg")
    layout = {"images": db, "queries": entries, "labels": {i: labels[i] for i in db}}
    (root / "gnd.json").write_text(json.dumps(layout))
    return root
