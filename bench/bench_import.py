"""Import throughput: N synthetic GLDv2 rows (real landmarks-mini photos, hard-linked under new ids, so
every row is opened and decoded like a real one) imported on SQLite and on PostgreSQL.

    .venv/bin/python bench/bench_import.py [--rows 100000] [--postgres postgres://postgres@127.0.0.1:5432/]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, SHARED_DATA, record, table  # noqa: E402


def make_dataset(root: Path, rows: int) -> Path:
    """A GLDv2 layout of ``rows`` images, each a hard link to one of the landmarks-mini photos."""
    photos = sorted((SHARED_DATA / "landmarks-mini" / "images").glob("*.jpg"))
    with (root / "train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "landmark_id"])
        for n in range(rows):
            image_id = f"{n:016x}"[::-1]  # spread over the a/b/c folders like GLDv2's hex ids
            dst = root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(photos[n % len(photos)], dst)
            w.writerow([image_id, "", n % 20_000])
    return root


def run_import(data: Path, env: dict) -> dict:
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    start = time.perf_counter()
    out = subprocess.run([*manage, "import_dataset", str(data), "--no-thumbnails", "--no-index"], env=env, check=True,
                         capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    result = json.loads(out.rsplit("succeeded: ", 1)[1])
    return {"seconds": seconds, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gld").mkdir()
        data = make_dataset((tmp / "gld").resolve(), args.rows)
        targets = {"SQLite": f"sqlite:///{tmp / 'bench.sqlite3'}"}
        if args.postgres:
            subprocess.run(["psql", args.postgres + "postgres", "-qc", "DROP DATABASE IF EXISTS landmarks_bench"], check=True)
            subprocess.run(["psql", args.postgres + "postgres", "-qc", "CREATE DATABASE landmarks_bench"], check=True)
            targets["PostgreSQL"] = args.postgres + "landmarks_bench"
        for name, url in targets.items():
            env = {**os.environ, "DATABASE_URL": url, "LANDMARKS_VAR_DIR": str(tmp / "var"), "LOG_LEVEL": "WARNING"}
            r = run_import(data, env)
            assert r["images_added"] == args.rows, r
            rows.append([name, f"{args.rows:,}", f"{r['seconds']:.1f}", f"{args.rows / r['seconds']:,.0f}"])
            print(rows[-1], flush=True)
    body = table(["database", "rows", "seconds", "rows/s"], rows)
    body += ("\n\nEach row is a real landmarks-mini photo (hard-linked under a new GLDv2-style id), opened, "
             "checksummed and decoded (JPEG at 1/8 scale) before its row is written; one transaction per "
             "1,000 rows; the command's whole run, start-up included.")
    record("Import throughput (GLDv2 layout)", body, f"python bench/bench_import.py --rows {args.rows}")


if __name__ == "__main__":
    main()
