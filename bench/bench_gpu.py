"""GPU throughput: embedding (naive loop vs the product's batched extraction, 1 and 3 scales, AMP on/off)
and training (fp32 vs bf16 vs fp16 autocast), on CUDA, with real landmarks-mini photos.

    python bench/bench_gpu.py [--size 512] [--no-write]

Needs a CUDA device (exits otherwise). Embedding rates count decoded photos per second, decode included
(DataLoader workers on the host's cores). Training is timed two ways: `ml.train.train` end to end from
JPEGs (steps after the first few, data loading included) and the GPU step alone on a batch already on the
device (forward, ArcFace loss, backward, AdamW), which is the ceiling a faster input pipeline could reach.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_embed import naive_embed  # noqa: E402
from bench.common import SHARED_DATA, record, table  # noqa: E402
from ml.data import TrainingManifest  # noqa: E402
from ml.embed import EmbedConfig, embed_images  # noqa: E402
from ml.models import ModelConfig  # noqa: E402
from ml.train import TrainConfig, train  # noqa: E402
from ml.weights import create_model, load_model  # noqa: E402

MINI = SHARED_DATA / "landmarks-mini"
BACKBONE = "tf_efficientnet_lite0"


def cuda_seconds(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def embedding_rows(paths: list[Path], size: int, rounds: int) -> list[list]:
    model = load_model(f"packaged:{BACKBONE}")
    base = EmbedConfig(image_size=size, device="cuda", batch_size=32, num_workers=8, channels_last=False)
    variants = [
        ("product: batch 32, 8 decode workers, fp16 autocast, NCHW", base),
        ("product, fp32 (AMP off)", replace(base, amp=False)),
        ("product, batch 1", replace(base, batch_size=1)),
        ("product, 3 scales (0.707, 1, 1.414)", replace(base, scales=(0.7071, 1.0, 1.4142))),
        ("product, channels_last (the CPU default)", replace(base, channels_last=True)),
    ]
    model.cuda()
    naive_embed(model, paths[:4], size)  # warm-up: CUDA context, kernels, allocator
    embed_images(model, paths[:40], base)
    print("warmed up", flush=True)
    best: dict[str, float] = {}
    for _ in range(rounds):
        best["naive"] = min(best.get("naive", 1e9), cuda_seconds(lambda: naive_embed(model.cuda(), paths, size)))
        print(f"naive: {len(paths) / best['naive']:.1f} img/s", flush=True)
        for name, cfg in variants:
            best[name] = min(best.get(name, 1e9), cuda_seconds(lambda cfg=cfg: embed_images(model, paths, cfg)))
            print(f"{name}: {len(paths) / best[name]:.1f} img/s", flush=True)
    naive_rate = len(paths) / best["naive"]
    rows = [["naive loop (PIL decode, one image at a time, fp32, NCHW)", f"{naive_rate:.1f}", "1.00x"]]
    for name, _ in variants:
        rate = len(paths) / best[name]
        rows.append([name, f"{rate:.1f}", f"{rate / naive_rate:.2f}x"])
    return rows


def step_only_rate(amp: str | None, size: int, batch: int, steps: int = 20) -> float:
    """Images/s of forward + ArcFace loss + backward + AdamW on one batch already on the GPU."""
    model = create_model(ModelConfig(backbone=BACKBONE, head="arcface", num_classes=1000)).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model.head(model(x), y).float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    seconds = cuda_seconds(lambda: [step() for _ in range(steps)])
    return steps * batch / seconds


def end_to_end_rate(amp: str | None, size: int, batch: int, manifest: TrainingManifest) -> float:
    """Images/s of ml.train.train from JPEGs (8 loader workers), timed from its 4th step to its last."""
    stamps: list[float] = []
    cfg = TrainConfig(max_steps=24, batch_size=batch, image_size=size, amp=amp, device="cuda", num_workers=8,
                      optimizer="adamw", lr=1e-4, augmentation="soft")
    with tempfile.TemporaryDirectory() as tmp:
        train(ModelConfig(backbone=BACKBONE, head="arcface"), cfg, manifest, Path(tmp),
              on_metrics=lambda row: stamps.append(time.perf_counter()))
    return (len(stamps) - 4) * batch / (stamps[-1] - stamps[3])


def training_rows(size: int, batch: int) -> list[list]:
    # Every image twice over (train() samples without replacement per epoch): 24 steps need 24 * batch.
    manifest = TrainingManifest.from_dataset(MINI, splits=["index", "query"])
    rows = []
    for amp in (None, "bf16", "fp16"):
        rows.append([amp or "fp32", f"{step_only_rate(amp, size, batch):.0f}",
                     f"{end_to_end_rate(amp, size, batch, manifest):.0f}"])
        print("training", rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32, help="training batch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu needs a CUDA device")
    # No cudnn.benchmark: photos keep their aspect, so shapes vary and each new one would be re-tuned.
    paths = sorted((MINI / "images").glob("*.jpg"))
    trainrows = training_rows(args.size, args.batch)
    embed = embedding_rows(paths, args.size, args.rounds)
    body = f"Embedding {len(paths)} landmarks-mini photos at {args.size} px, {BACKBONE}, best of {args.rounds}:\n\n"
    body += table(["variant", "images/s", "vs naive"], embed)
    body += (f"\n\nTraining {BACKBONE} + ArcFace at {args.size}x{args.size}, batch {args.batch}, AdamW "
             "(images/s):\n\n")
    body += table(["precision", "GPU step only", "train() end to end from JPEGs (8 loader workers)"], trainrows)
    command = "python bench/bench_gpu.py " + " ".join(sys.argv[1:])
    if args.no_write:
        print(body)
    else:
        record("GPU throughput (embedding and AMP training)", body, command.strip())


if __name__ == "__main__":
    main()
