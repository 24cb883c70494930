"""The dense-matching step's settings on landmarks-mini, with and without labels, around the default.

Every query is embedded once (the default pipeline's search, with its RootSIFT and dense features); each
setting then re-runs only the ranking (``ml.pipeline.rank``) on those inputs, so a setting takes seconds.
The first row (top_n = 0) is ``default-nodense``; the row with the default's settings must equal what
``evaluate`` reports for ``default``.

    .venv/bin/python bench/sweep_dense.py [--data DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ml.pipeline as pipeline_module  # noqa: E402
from bench.common import SHARED_DATA, record, table  # noqa: E402
from ml.dense_matching import DenseMatchConfig  # noqa: E402
from ml.evaluate import EvalCache, _prepare, read_layout, score  # noqa: E402
from ml.weights import shared_models  # noqa: E402

SETTINGS = [dict(top_n=0)] + [
    dict(top_n=50, min_inliers=t, weight=w) for t in (15, 20, 25) for w in (0.25, 0.5, 1.0, 2.0)
] + [dict(top_n=50, inlier_cap=c) for c in (30, 100)] + [dict(top_n=n) for n in (20, 100)]


def query_inputs(layout, database, models) -> dict:
    """Per query, the arguments the default's search passes to ``rank`` (descriptor, features, regions)."""
    captured, real = {}, pipeline_module.rank
    try:
        for q in layout.queries:
            def capture(db, qvec, qfeats, depth=None, qregions=None, qdense=None, _id=q.query_id):
                captured[_id] = (qvec, qfeats, qregions, qdense)
                return real(db, qvec, qfeats, depth, qregions, qdense)
            pipeline_module.rank = capture
            pipeline_module.search_one(database, models, q.path, bbx=q.bbx)
    finally:
        pipeline_module.rank = real
    return captured


def metrics(layout, database, inputs, labels) -> tuple[float, float]:
    db = replace(database, labels=labels)
    results = {}
    for q in layout.queries:
        qvec, qfeats, qregions, qdense = inputs[q.query_id]
        results[q.query_id] = pipeline_module.rank(db, qvec, qfeats, depth=db.index.count, qregions=qregions,
                                                   qdense=qdense)
    m = score(layout, results, database.pipeline, 0.0)
    return m["medium"], m["map_at_100"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "landmarks-mini")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    layout = read_layout(args.data, use_labels=True)
    default = pipeline_module.get_pipeline("default")
    with tempfile.TemporaryDirectory() as tmp:
        cache = EvalCache(Path(tmp))
        database, _ = _prepare(layout, default, cache, None)
        inputs = query_inputs(layout, database, shared_models(default.models))
        rows = []
        for setting in SETTINGS:
            dense = DenseMatchConfig(**setting)
            variant = replace(database, pipeline=replace(default, dense=dense))
            no_labels, with_labels = metrics(layout, variant, inputs, None), metrics(layout, variant, inputs, database.labels)
            mark = " **(default)**" if dense == default.dense else ""
            rows.append([f"top {dense.top_n}, >= {dense.min_inliers}, cap {dense.inlier_cap}, weight {dense.weight:g}{mark}"
                         if dense.top_n else "off (`default-nodense`)",
                         f"{no_labels[0]:.2f}", f"{no_labels[1]:.2f}", f"{with_labels[0]:.2f}", f"{with_labels[1]:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    body = table(["dense matching", "no labels: mAP medium", "mAP@100", "labels: mAP medium", "mAP@100"], rows)
    print(body)
    if not args.no_write:
        record("Dense matching settings on landmarks-mini", body, "python bench/sweep_dense.py")


if __name__ == "__main__":
    main()
