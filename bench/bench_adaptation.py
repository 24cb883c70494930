"""Adapting to the collection without labels: whitening learned from the pairs the collection itself verifies
(``AdaptationConfig``), chosen on folds of landmarks-dev/train and reported on landmarks-dev/eval and
landmarks-mini, without labels (the regime it is for) and with them.

    .venv/bin/python bench/bench_adaptation.py --choose [--folds 3]     # settings on train folds
    .venv/bin/python bench/bench_adaptation.py --confirm 10 15 0.1 [--pipeline P]  # a whole preset on the folds
    .venv/bin/python bench/bench_adaptation.py --report [--pipeline P] [--no-write]  # with and without it

Choosing runs the default pipeline's global descriptor (lite2 at 3 scales, mirrored, no re-ranking) on each
fold's database (the same folds as bench/calibrate.py) for every setting; confirming runs a whole preset
with and without the chosen setting on the same folds (there it lifted `web-fast` on every fold and
lowered `default`, whose regions, QE and bonuses were tuned on unwhitened cosines); reporting runs a preset as it is and
without its adaptation, side by side, on the report sets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.calibrate import REPORT_SETS, fold_layout  # noqa: E402
from bench.common import record, table  # noqa: E402
from bench.pipelines import variant  # noqa: E402
from ml.evaluate import EvalCache, evaluate  # noqa: E402
from ml.pipeline import DEFAULT, PipelineConfig  # noqa: E402
from ml.whitening import AdaptationConfig  # noqa: E402

GLOBAL = replace(PipelineConfig(name="global"), models=DEFAULT.models, scales=DEFAULT.scales, flip=DEFAULT.flip,
                 local_features=DEFAULT.local_features)
SETTINGS = [AdaptationConfig()] + [AdaptationConfig(neighbours=k, min_inliers=m, shrinkage=s)
                                   for k, m, s in ((10, 15, 0.1), (10, 25, 0.1), (5, 15, 0.1), (10, 15, 0.3))]


def describe(cfg: AdaptationConfig) -> str:
    return "none" if not cfg.enabled else f"{cfg.neighbours}-NN, >= {cfg.min_inliers} inliers, shrinkage {cfg.shrinkage:g}"


def choose(folds: int) -> None:
    rows = {describe(c): [] for c in SETTINGS}
    for seed in range(1, folds + 1):
        with tempfile.TemporaryDirectory(prefix="adapt-") as tmp:
            layout = fold_layout(Path(tmp) / "layout", seed, absent=5, per_landmark=4)
            cache = EvalCache(Path(tmp) / "cache")
            for cfg in SETTINGS:
                m = evaluate(layout, replace(GLOBAL, adaptation=cfg), use_labels=False, cache=cache)
                rows[describe(cfg)].append(m["medium"])
                print(seed, describe(cfg), f"{m['medium']:.2f}", flush=True)
    print(table(["adaptation", *[f"fold {s}" for s in range(1, folds + 1)], "mean"],
                [[name, *[f"{v:.2f}" for v in vals], f"{sum(vals) / len(vals):.2f}"] for name, vals in rows.items()]))


def confirm(folds: int, setting: AdaptationConfig, preset: PipelineConfig = DEFAULT) -> None:
    """A whole preset with and without adaptation on the train folds, without labels: does what helps the
    global descriptor still help after regions, QE and verification?"""
    rows = []
    for seed in range(1, folds + 1):
        with tempfile.TemporaryDirectory(prefix="adapt-") as tmp:
            layout = fold_layout(Path(tmp) / "layout", seed, absent=5, per_landmark=4)
            cache = EvalCache(Path(tmp) / "cache")
            base = evaluate(layout, replace(preset, adaptation=AdaptationConfig()), use_labels=False, cache=cache)
            adapted = evaluate(layout, replace(preset, adaptation=setting), use_labels=False, cache=cache)
            rows.append([seed, f"{base['medium']:.2f}", f"{adapted['medium']:.2f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(table(["fold", f"{preset.name} without adaptation", f"with {describe(setting)}"], rows))


def report(write: bool, preset: PipelineConfig) -> None:
    started = time.perf_counter()
    without = replace(preset, name=f"{preset.name} without adaptation", adaptation=AdaptationConfig())
    rows = []
    for name, folder in REPORT_SETS.items():
        with tempfile.TemporaryDirectory(prefix="adapt-") as tmp:
            cache = EvalCache(Path(tmp))  # one embedding of the set for the four runs
            for labels in (False, True):
                for pipeline in (without, preset):
                    m = evaluate(folder, pipeline, use_labels=labels, cache=cache)
                    rows.append([name, "yes" if labels else "no", f"`{pipeline.name}`", f"{m['medium']:.2f}",
                                 f"{m['seconds_per_query']:.2f}", f"{m['database_seconds']:.0f}"])
                    print(" | ".join(rows[-1]), flush=True)
    body = table(["data set", "labels", "pipeline", "mAP medium", "s/query", "database s"], rows)
    body += (f"\n\n`{preset.name}` adapts with {describe(preset.adaptation)} (chosen on landmarks-dev/train folds "
             f"with `--choose`, confirmed on them with `--confirm`). Whole run: {time.perf_counter() - started:.0f} s.")
    if write:
        record("Adapting to the collection (whitening from verified pairs)", body,
               "python bench/bench_adaptation.py " + " ".join(sys.argv[1:]))
    else:
        print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choose", action="store_true")
    parser.add_argument("--confirm", nargs=3, metavar=("NEIGHBOURS", "MIN_INLIERS", "SHRINKAGE"),
                        help="the default with and without this adaptation on the train folds")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--pipeline", default="web-fast-adapted",
                        help="the preset or bench variant --confirm and --report run")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.choose:
        choose(args.folds)
    if args.confirm:
        k, m, shrink = args.confirm
        confirm(args.folds, AdaptationConfig(neighbours=int(k), min_inliers=int(m), shrinkage=float(shrink)),
                variant(args.pipeline))
    if args.report:
        report(not args.no_write, variant(args.pipeline))


if __name__ == "__main__":
    main()
