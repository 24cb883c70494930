"""Fine-tuning lite0 with ArcFace on the landmarks-mini `index` split, against its packaged ImageNet
weights, on the `query` split: retrieval mAP (revisited Medium, the product's evaluation) and recognition
GAP, before and after, in one run.

    .venv/bin/python bench/bench_finetune.py [--epochs 12] [--image-size 320]

Both models are evaluated with the same pipeline (global descriptor only, `baseline-lite0` settings), so
the difference is the training alone. Training uses only `index` images: the queries are never seen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import SHARED_DATA, record, table  # noqa: E402
from ml.data import TrainingManifest  # noqa: E402
from ml.evaluate import run_evaluation  # noqa: E402
from ml.metrics import global_average_precision  # noqa: E402
from ml.models import ModelConfig  # noqa: E402
from ml.pipeline import get_pipeline  # noqa: E402
from ml.recognize import gap_predictions  # noqa: E402
from ml.train import TrainConfig, train  # noqa: E402

MINI = SHARED_DATA / "landmarks-mini"


EVAL_SIZE = 512  # the product's (and the reference baseline's) descriptor size, for both models


def measure(model_spec: str, image_size: int = EVAL_SIZE) -> dict:
    pipeline = replace(get_pipeline("baseline-lite0"), image_size=image_size)
    run = run_evaluation(MINI, pipeline, model_spec, use_labels=True)
    solution = {q.query_id: {run.layout.labels[i] for i in q.easy + q.hard} for q in run.layout.queries}
    predictions = gap_predictions({qid: r.recognition for qid, r in run.results.items()})
    return {"map": run.metrics["medium"], "map100": run.metrics["map_at_100"],
            "r1": run.metrics["recall_at_1"], "gap": 100 * global_average_precision(predictions, solution)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    args = parser.parse_args()
    manifest = TrainingManifest.from_dataset(MINI, splits=["index"])
    rows = []
    base = measure("packaged:tf_efficientnet_lite0")
    rows.append(["lite0 ImageNet (packaged)", "-", f"{base['map']:.1f}", f"{base['map100']:.1f}",
                 f"{base['r1']:.1f}", f"{base['gap']:.1f}"])
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(ModelConfig(backbone="tf_efficientnet_lite0", head="arcface", s=30.0, m=0.3),
                       TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                                   warmup_steps=5, image_size=args.image_size, augmentation="soft",
                                   device="cpu"),
                       manifest, Path(tmp) / "run")
        minutes = (time.perf_counter() - started) / 60
        tuned = measure(str(result.checkpoint))
    rows.append([f"lite0 + ArcFace, {args.epochs} epochs on index ({len(manifest)} images)", f"{minutes:.1f}",
                 f"{tuned['map']:.1f}", f"{tuned['map100']:.1f}", f"{tuned['r1']:.1f}", f"{tuned['gap']:.1f}"])
    body = table(["model", "train min", "mAP (Medium)", "mAP@100", "recall@1", "GAP"], rows)
    body += (f"\n\nQueries: the 34 `query` photos; database: the 145 `index` photos with their labels. "
             f"Descriptor only (GeM, {EVAL_SIZE} px, no re-ranking); recognition by the product's kNN vote. "
             f"Training: ArcFace s=30 m=0.3, {args.optimizer} lr {args.lr} with warm-up and cosine decay, "
             f"batch {args.batch_size}, {args.image_size} px, soft augmentation, CPU.")
    record("Fine-tuning lite0 with ArcFace (landmarks-mini)", body,
           f"python bench/bench_finetune.py --epochs {args.epochs} --image-size {args.image_size} "
           f"--optimizer {args.optimizer} --lr {args.lr}")


if __name__ == "__main__":
    main()
