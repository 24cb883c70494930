"""Retrieval on landmarks-mini: every pipeline variant tried, with and without the database labels.

Runs ``ml.evaluate`` (what ``manage.py evaluate`` runs) for each variant (``bench/pipelines.py``) in one
process. Database
embeddings and local features are computed once per model configuration and reused by later variants;
their "database s" then repeats the time they took when computed. Query time is measured for every
variant (embedding, local features, search, re-ranking). For variants using labels, recognition is scored
too: GAP (ml.metrics) over the 34 queries plus 4 non-landmark photos (scikit-image's coffee, chelsea,
astronaut, rocket), and how many of those 4 got "no landmark" at the pipeline's threshold.

    .venv/bin/python bench/bench_retrieval.py [--data DIR] [--only NAME ...] [--no-write]

Prints a Markdown table and makes it, with machine info, the section "Retrieval on landmarks-mini" of
docs/benchmarks.md (rewritten in place; the run it replaces moves to docs/benchmarks-archive.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import SHARED_DATA, record, table  # noqa: E402
from bench.pipelines import variant  # noqa: E402
from ml.evaluate import EvalCache, run_evaluation  # noqa: E402
from ml.metrics import global_average_precision  # noqa: E402
from ml.pipeline import DEFAULT_PIPELINE, search_one  # noqa: E402
from ml.recognize import gap_predictions  # noqa: E402

# (pipeline, use labels) in the order they were tried.
VARIANTS = [
    ("baseline", False),
    ("baseline-lite2", False),
    ("ensemble", False),
    ("lite2-ms", False),
    ("lite2-ms-qe", False),
    ("lite2-ms-dba-qe", False),
    ("lite2-ms-regional", False),
    ("lite2-ms-sv", False),
    ("default-global", False),
    ("default-noflip", False),
    ("default-nodense", False),
    ("default", False),
    ("lite2-ms-lw", True),
    ("default-global", True),
    ("default-noflip", True),
    ("default-nodense", True),
    ("default", True),
    ("lite2-ms-qe-sv-ly3", True),
    ("lite2-ms-qe-sv-mk", True),
    ("lite2-ms-qe-sv-bridged", True),
    ("web-fast", False),
    ("web-fast", True),
]
NON_LANDMARKS = ("coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg")


def non_landmark_photos() -> list[Path]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return [folder / n for n in NON_LANDMARKS if (folder / n).is_file()]


def recognition_scores(run) -> tuple[str, str]:
    """GAP over the queries (+ non-landmark photos) and how many non-landmarks were rejected."""
    labels = run.layout.labels
    recognitions = {qid: r.recognition for qid, r in run.results.items()}
    truth = {q.query_id: {labels[i] for i in q.easy + q.hard if i in labels} for q in run.layout.queries}
    rejected = 0
    photos = non_landmark_photos()
    for n, photo in enumerate(photos):
        rec = search_one(run.database, run.models, photo).recognition
        recognitions[f"non-landmark-{n}"] = rec
        truth[f"non-landmark-{n}"] = set()
        rejected += rec.landmark_id is None
    gap = global_average_precision(gap_predictions(recognitions), truth)
    return f"{gap:.3f}", f"{rejected}/{len(photos)}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "landmarks-mini")
    parser.add_argument("--only", nargs="*", help="pipeline names to run (default: all variants)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if not args.only or v[0] in args.only]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        cache = EvalCache(Path(tmp))
        for name, labels in variants:
            t = time.perf_counter()
            run = run_evaluation(args.data, variant(name), use_labels=labels, cache=cache)
            m = run.metrics
            gap, rejected = recognition_scores(run) if labels else ("-", "-")
            mark = " **(default)**" if name == DEFAULT_PIPELINE else ""
            rows.append([
                f"`{name}`{mark}", "yes" if labels else "no", f"{m['medium']:.2f}", f"{m['map_at_100']:.2f}",
                f"{m['recall_at_1']:.1f}", f"{m['seconds_per_query']:.2f}", f"{m['database_seconds']:.0f}",
                gap, rejected,
            ])
            print(" | ".join(rows[-1]), f"({time.perf_counter() - t:.0f} s)", flush=True)
    body = table(["variant", "labels", "mAP medium", "mAP@100", "recall@1", "s/query", "database s", "GAP",
                  "non-landmarks rejected"], rows)
    descriptions = "\n".join(f"- `{n}`: {variant(n).description}" for n in dict.fromkeys(n for n, _ in variants))
    body += (
        f"\n\n{descriptions}\n\nData set {args.data.name}: 145 labelled database images, 34 queries. s/query = "
        "query embedding + local features + search + re-ranking (database local features precomputed). "
        "Database s = embeddings (+ region descriptors) + local features + DBA/index, counted once per model "
        "configuration and "
        "repeated for variants that reuse them. The 2 CPU cores were shared with other engineers' jobs, so "
        f"times vary by run. Whole benchmark: {time.perf_counter() - started:.0f} s."
    )
    if args.no_write:
        print(body)
    else:
        record("Retrieval on landmarks-mini", body, "python bench/bench_retrieval.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
