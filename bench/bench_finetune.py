"""Fine-tuning lite0 with ArcFace on the landmarks-mini `index` split, against its packaged ImageNet
weights, on the `query` split: retrieval mAP (revisited Medium, the product's evaluation) and recognition
GAP, before and after, in one run.

    .venv/bin/python bench/bench_finetune.py [--recipe few-shot] [--epochs 10] [--image-size 384]
    .venv/bin/python bench/bench_finetune.py --sweep [--device cuda] [--no-write]

Both models are evaluated with the same pipeline (global descriptor only, `baseline` preset settings), so
the difference is the training alone. Training uses only `index` images: the queries are never seen.
`--sweep` trains every recipe of SWEEP and tabulates them all (the table of what was tried). A run
rewrites its own section of docs/benchmarks.md ("Fine-tuning lite0 with ArcFace (landmarks-mini)", or
"Fine-tuning recipes compared (landmarks-mini)" for `--sweep`) and moves the one it replaces to
docs/benchmarks-archive.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import SHARED_DATA, record, table  # noqa: E402
from ml.data import TrainingManifest  # noqa: E402
from ml.evaluate import run_evaluation  # noqa: E402
from ml.metrics import global_average_precision  # noqa: E402
from ml.models import ModelConfig  # noqa: E402
from ml.pipeline import get_pipeline  # noqa: E402
from ml.recognize import gap_predictions  # noqa: E402
from ml.train import TrainConfig, train  # noqa: E402
from ml.weights import backbone_width  # noqa: E402

MINI = SHARED_DATA / "landmarks-mini"
BACKBONE = "tf_efficientnet_lite0"
EVAL_SIZE = 512  # the product's (and the reference baseline's) descriptor size, for both models

# "full": what one does first (random 512-d neck, everything trained at one lr, BatchNorm live).
# "few-shot": start from the off-the-shelf descriptor (identity neck), centres imprinted from class means,
# BatchNorm frozen: ml.train's options for a handful of images per class.
RECIPES: dict[str, dict] = {
    "full": dict(model=dict(), train=dict(lr=5e-4)),
    "few-shot": dict(model=dict(neck_init="identity"), train=dict(lr=1e-3, freeze_bn=True, head_init="imprint")),
}

# (recipe, overrides of TrainConfig): what --sweep tries.
SWEEP: list[tuple[str, dict]] = [
    ("full", dict(epochs=12, image_size=320)),
    ("few-shot", dict(epochs=0)),  # imprinting alone, no step: isolates what the steps add
    ("few-shot", dict(epochs=10)),
    ("few-shot", dict(epochs=5)),
    ("few-shot", dict(epochs=20)),
    ("few-shot", dict(epochs=10, image_size=512)),
    ("few-shot", dict(epochs=10, lr=3e-3)),
    ("few-shot", dict(epochs=10, backbone_lr_mult=0.1)),
    ("few-shot", dict(epochs=10, backbone_lr_mult=0.1, lr=3e-3)),
    ("few-shot", dict(epochs=10, backbone_lr_mult=0.0)),
    ("few-shot", dict(epochs=10, freeze_bn=False)),
    ("few-shot", dict(epochs=10, head_init="random")),
]


def measure(model_spec: str) -> dict:
    pipeline = replace(get_pipeline("baseline"), image_size=EVAL_SIZE)
    run = run_evaluation(MINI, pipeline, model_spec, use_labels=True)
    solution = {q.query_id: {run.layout.labels[i] for i in q.easy + q.hard} for q in run.layout.queries}
    predictions = gap_predictions({qid: r.recognition for qid, r in run.results.items()})
    return {"map": run.metrics["medium"], "map100": run.metrics["map_at_100"],
            "r1": run.metrics["recall_at_1"], "gap": 100 * global_average_precision(predictions, solution)}


def configs(recipe: str, overrides: dict, device: str, batch_size: int, workers: int = 0) -> tuple[ModelConfig, TrainConfig]:
    spec = RECIPES[recipe]
    model_kw = dict(spec["model"])
    if model_kw.get("neck_init") == "identity":
        model_kw["embedding_dim"] = backbone_width(BACKBONE)
    model = ModelConfig(backbone=BACKBONE, head="arcface", s=30.0, m=0.3, **model_kw)
    train_kw = dict(epochs=10, image_size=384, batch_size=batch_size, optimizer="adamw", warmup_steps=5,
                    augmentation="soft", device=device, num_workers=workers)
    train_kw.update(spec["train"])
    train_kw.update(overrides)
    if train_kw["epochs"] == 0:  # imprint only: zero optimizer steps
        train_kw.update(epochs=1, max_steps=0)
    return model, TrainConfig(**train_kw)


def describe(recipe: str, cfg: TrainConfig) -> str:
    epochs = 0 if cfg.max_steps == 0 else cfg.epochs
    parts = [f"{recipe}: {epochs} ep, {cfg.image_size} px, lr {cfg.lr:g}"]
    if cfg.backbone_lr_mult != 1.0:
        parts.append(f"backbone x{cfg.backbone_lr_mult:g}")
    parts.append("BN frozen" if cfg.freeze_bn else "BN live")
    parts.append(f"head {cfg.head_init}")
    return ", ".join(parts)


def run_recipe(recipe: str, overrides: dict, manifest: TrainingManifest, args: argparse.Namespace) -> list:
    model_cfg, train_cfg = configs(recipe, overrides, args.device, args.batch_size, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(model_cfg, train_cfg, manifest, Path(tmp) / "run")
        minutes = (time.perf_counter() - started) / 60
        tuned = measure(str(result.checkpoint))
    row = [describe(recipe, train_cfg),
           f"{minutes:.1f}", f"{tuned['map']:.1f}", f"{tuned['map100']:.1f}", f"{tuned['r1']:.1f}",
           f"{tuned['gap']:.1f}"]
    print(" | ".join(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="few-shot")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (1: two OpenMP threads on a busy 2-core machine crawl)")
    parser.add_argument("--workers", type=int, default=0, help="training data-loader workers")
    parser.add_argument("--sweep", action="store_true", help="train every recipe variant of SWEEP")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    manifest = TrainingManifest.from_dataset(MINI, splits=["index"])
    base = measure(f"packaged:{BACKBONE}")
    rows = [["lite0 ImageNet (packaged), no training", "-", f"{base['map']:.1f}", f"{base['map100']:.1f}",
             f"{base['r1']:.1f}", f"{base['gap']:.1f}"]]
    print(" | ".join(rows[0]), flush=True)
    if args.sweep:
        runs = SWEEP
    else:
        overrides = dict(epochs=args.epochs, image_size=args.image_size)
        if args.lr is not None:
            overrides["lr"] = args.lr
        runs = [(args.recipe, overrides)]
    for recipe, overrides in runs:
        rows.append(run_recipe(recipe, overrides, manifest, args))
    body = table(["model", "train min", "mAP (Medium)", "mAP@100", "recall@1", "GAP"], rows)
    body += (f"\n\nQueries: the 34 `query` photos; database: the 145 `index` photos with their labels. "
             f"Descriptor only (GeM, {EVAL_SIZE} px, no re-ranking); recognition by the product's kNN vote. "
             f"Training on the {len(manifest)} `index` images only: ArcFace s=30 m=0.3, AdamW with 5 warm-up "
             f"steps and cosine decay, batch {args.batch_size}, soft augmentation, on {args.device}"
             f"{f' ({args.threads} torch thread)' if args.device == 'cpu' else ''}.")
    command = "python bench/bench_finetune.py " + " ".join(sys.argv[1:])
    if args.no_write:
        print(body)
    else:
        title = "Fine-tuning recipes compared (landmarks-mini)" if args.sweep else \
            "Fine-tuning lite0 with ArcFace (landmarks-mini)"
        record(title, body, command.strip())


if __name__ == "__main__":
    main()
