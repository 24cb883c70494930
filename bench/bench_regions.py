"""The default pipeline's database pass: global descriptors only against the pass that also keeps the
R-MAC region descriptors (``ml.regional``), before and after it was decoded and batched like
``ml.embed.embed_images`` (a decode worker, BatchNorm folded into the convolutions on the CPU).

The "before" row runs today's code with the settings the pass had (decoding in the calling process, no
BN fusion, one image at a time), so all rows run in one process, in turn, each keeping its best round. The
last row shows the thread policy's part: with no decode worker torch takes every core, faster on an idle
machine, several times slower on a busy one (docs/benchmarks.md, "Embedding throughput").

    .venv/bin/python bench/bench_regions.py [--images 145] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import best_of, photo_bench, record, table  # noqa: E402
from ml.pipeline import DEFAULT_PIPELINE, embed_database, get_pipeline, load_models  # noqa: E402
from ml.regional import embed_database_regions, whole_image_vectors  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args, paths = photo_bench(__doc__.splitlines()[0], argv)
    pipeline = get_pipeline(DEFAULT_PIPELINE)
    models = load_models(pipeline)
    cfg = pipeline.embed_config()
    before = replace(cfg, fuse_bn=False, num_workers=0)

    def regions(c):
        return lambda: embed_database_regions(models, paths, c, pipeline.regional, None, pipeline.model_weights)
    t_global, vectors = best_of(args.rounds, lambda: embed_database(models, paths, pipeline))
    t_before, r_before = best_of(args.rounds, regions(before))
    t_after, r_after = best_of(args.rounds, regions(cfg))
    t_inline, _ = best_of(args.rounds, regions(replace(cfg, num_workers=0)))
    gap = float(np.abs(whole_image_vectors(r_after) - vectors).max())
    same = float(np.abs(r_after.astype(np.float32) - r_before.astype(np.float32)).max())
    rows = [
        ["global descriptors only (`embed_images`)", f"{t_global:.1f}", f"{len(paths) / t_global:.2f}", "-"],
        ["global + regions, before (in-process decode, no BN fusion)", f"{t_before:.1f}",
         f"{len(paths) / t_before:.2f}", f"{t_before / t_global:.2f}x"],
        ["global + regions, now (decode worker, BN fused)", f"{t_after:.1f}", f"{len(paths) / t_after:.2f}",
         f"{t_after / t_global:.2f}x"],
        ["global + regions, now, decoding in the calling process (torch threads: every core)", f"{t_inline:.1f}",
         f"{len(paths) / t_inline:.2f}", f"{t_inline / t_global:.2f}x"],
    ]
    body = table(["database pass", "seconds", "images/s", "vs global only"], rows)
    body += (f"\n\n{len(paths)} landmarks-mini photos, pipeline `{pipeline.name}` ({', '.join(pipeline.models)}, "
             f"{pipeline.image_size} px, scales {', '.join(f'{s:.3f}' for s in pipeline.scales)}, "
             f"{pipeline.regional.levels} R-MAC levels), best of {args.rounds} rounds. Largest difference: "
             f"region 0 against the global descriptor {gap:.1e}; regions now against before {same:.1e}.")
    command = "python bench/bench_regions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.no_write:
        print(body)
    else:
        record("The database pass with region descriptors", body, command.strip())


if __name__ == "__main__":
    main()
