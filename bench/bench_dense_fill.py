"""The default pipeline's database pass with its dense features: made by a pass of their own (one
single-scale forward and one decode a photo, ``DenseFeatureStore.ensure``), as build_index's feature stage
did, against caught from the multi-scale pass that makes the descriptors and regions
(``ml.dense_matching.DenseCacheFill``), as its embedding chunks do now.

Every row runs in this process, in turn, each keeping its best round; each round fills an empty cache.
The last line compares the two caches: the share of kept positions that agree (the caught ones come from
the BN-fused network, which rounds differently) and the inliers of the pairs of photos of one landmark.

    .venv/bin/python bench/bench_dense_fill.py [--images 145] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import SHARED_DATA, best_of, photo_bench, record, table  # noqa: E402
from ml.dense_matching import DenseCacheFill, dense_inliers  # noqa: E402
from ml.pipeline import DEFAULT_PIPELINE, database_regions, dense_store, get_pipeline, load_models  # noqa: E402


def in_empty_folder(fn):
    """``fn(folder)`` as a call of no arguments, each call given an empty folder of its own."""
    def run():
        with tempfile.TemporaryDirectory() as tmp:
            return fn(Path(tmp))
    return run


def main(argv: list[str] | None = None) -> None:
    args, paths = photo_bench(__doc__.splitlines()[0], argv)
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    models = load_models(pipeline)
    ids = [Path(p).stem for p in paths]
    kept: dict[str, dict] = {}

    def regions_only(_folder: Path) -> None:
        database_regions(models, paths, pipeline)

    def own_pass(folder: Path) -> None:
        database_regions(models, paths, pipeline)
        store = dense_store(pipeline, folder, models[0])
        store.ensure(list(zip(ids, paths, strict=True)))
        kept["own"] = {i: store.get(i) for i in ids}

    def caught(folder: Path) -> None:
        fill = DenseCacheFill.for_embedding(dense_store(pipeline, folder), ids, pipeline.embed_config())
        database_regions(models, paths, pipeline, dense=fill)
        assert fill.filled == len(ids)
        kept["caught"] = {i: fill.store.get(i) for i in ids}

    t_regions, _ = best_of(args.rounds, in_empty_folder(regions_only))
    t_own, _ = best_of(args.rounds, in_empty_folder(own_pass))
    t_caught, _ = best_of(args.rounds, in_empty_folder(caught))
    rows = [
        ["descriptors + regions, no dense features", f"{t_regions:.1f}", f"{len(paths) / t_regions:.2f}", "-"],
        ["+ dense features by a pass of their own (before)", f"{t_own:.1f}", f"{len(paths) / t_own:.2f}",
         f"{t_own - t_regions:+.1f} s"],
        ["+ dense features caught from the same pass (now)", f"{t_caught:.1f}", f"{len(paths) / t_caught:.2f}",
         f"{t_caught - t_regions:+.1f} s"],
    ]
    agree = np.mean([(kept["own"][i].positions == kept["caught"][i].positions).all(axis=1).mean() for i in ids])
    pairs = _same_landmark_pairs(ids)
    gaps = [abs(dense_inliers(kept["own"][a], kept["own"][b]) - dense_inliers(kept["own"][a], kept["caught"][b]))
            for a, b in pairs]
    body = table(["database pass", "seconds", "images/s", "dense features cost"], rows)
    body += (f"\n\n{len(paths)} landmarks-mini photos, pipeline `{pipeline.name}` ({', '.join(pipeline.models)}, "
             f"{pipeline.image_size} px, scales {', '.join(f'{s:.3f}' for s in pipeline.scales)}, flip "
             f"{pipeline.flip}), best of {args.rounds} rounds. Caught against own-pass features: "
             f"{agree:.1%} of kept positions agree; over {len(pairs)} pairs of photos of one landmark the "
             f"dense inliers differ by {np.mean(gaps) if gaps else 0:.1f} on average (largest {max(gaps, default=0)}).")
    command = "python bench/bench_dense_fill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.no_write:
        print(body)
    else:
        record("Database dense features from the embedding's own pass", body, command.strip())


def _same_landmark_pairs(ids: list[str], limit: int = 60) -> list[tuple[str, str]]:
    """Up to ``limit`` pairs of the photos ``ids`` that show one landmark (landmarks-mini's labels)."""
    with open(SHARED_DATA / "landmarks-mini" / "images.csv", newline="") as f:
        labels = {row["id"]: row["landmark_id"] for row in csv.DictReader(f) if row.get("landmark_id")}
    by_landmark: dict[str, list[str]] = {}
    for i in ids:
        if labels.get(i):
            by_landmark.setdefault(labels[i], []).append(i)
    pairs = [(a, b) for members in by_landmark.values() for a, b in zip(members, members[1:], strict=False)]
    return pairs[:limit]


if __name__ == "__main__":
    main()
