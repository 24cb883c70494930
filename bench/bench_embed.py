"""Embedding throughput: the product's extraction (ml.embed) against a naive loop, on real photos.

The naive loop is what one writes first: PIL decode, resize, one forward at a time in the default memory
layout, all in one thread of control, torch's default thread count. The product overlaps decoding
(DataLoader workers) with the forward passes, folds BatchNorm into the convolutions, uses channels-last
tensors and one torch thread per core left to it. All variants run in the same process, in turn, for a
few rounds, so load from other users of the machine hits them alike; each keeps its best round.

    .venv/bin/python bench/bench_embed.py [--images 40] [--size 512] [--rounds 2] [--no-write]

Prints a Markdown table and makes it the "Embedding throughput" section of docs/benchmarks.md, with machine
info (``bench.common.record``: the section is rewritten in place, the run it replaces moves to
docs/benchmarks-archive.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, record  # noqa: E402
from ml.embed import EmbedConfig, embed_images, normalise, target_size  # noqa: E402
from ml.models import LandmarkNet  # noqa: E402
from ml.weights import load_model  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "landmarks-mini" / "images"


@dataclass
class Result:
    name: str
    cfg: EmbedConfig | None  # None = the naive loop
    seconds: float
    images: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def naive_embed(model: LandmarkNet, paths: list[Path], image_size: int) -> np.ndarray:
    """The baseline: decode, resize and embed one image at a time, NCHW, no workers."""
    model.to(memory_format=torch.contiguous_format).eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for path in paths:
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            img = img.resize(target_size(img.width, img.height, image_size), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).unsqueeze(0).to(device)
            out.append(F.normalize(model(normalise(x)), dim=1)[0].cpu().numpy())
    return np.stack(out)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_naive(model: LandmarkNet, paths: list[Path], size: int, threads: int | None = None) -> float:
    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        return timed(lambda: naive_embed(model, paths, size))
    finally:
        torch.set_num_threads(default)


def run_product(model: LandmarkNet, paths: list[Path], cfg: EmbedConfig) -> float:
    return timed(lambda: embed_images(model, paths, cfg))


def variants(size: int) -> list[tuple[str, EmbedConfig]]:
    base = EmbedConfig(image_size=size, device="cpu")
    return [
        ("product defaults", base),
        ("batch 8", replace(base, batch_size=8)),
        ("channels_last off", replace(base, channels_last=False)),
        ("BN fusion off", replace(base, fuse_bn=False)),
        ("no workers (decode in-process), 1 thread", replace(base, num_workers=0, torch_threads=1)),
        ("no workers, threads auto (2 here)", replace(base, num_workers=0)),
        ("2 workers", replace(base, num_workers=2)),
        ("2 torch threads", replace(base, torch_threads=2)),
        ("3 scales (0.707, 1, 1.414)", replace(base, scales=(0.7071, 1.0, 1.4142))),
        ("3 scales, batch 8", replace(base, scales=(0.7071, 1.0, 1.4142), batch_size=8)),
    ]


def machine_info() -> str:
    """bench.common's machine line plus what matters here: the torch version and thread count."""
    return f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def describe(cfg: EmbedConfig | None, name: str = "") -> str:
    if cfg is None:
        return (
            "1 | 0 | off | 1 | 1"
            if "1 torch thread" in name
            else f"1 | 0 | off | 1 | {torch.get_num_threads()} (default)"
        )
    threads = cfg.resolved_threads()
    layout = "on" if cfg.channels_last else "off"
    return f"{cfg.batch_size} | {cfg.num_workers} | {layout} | {len(cfg.scales)} | {threads}"


def table(results: list[Result], naive_rate: float, n: int, size: int, rounds: int) -> str:
    lines = [
        f"{n} landmarks-mini photos at {size} px (long side), model tf_efficientnet_lite0 (packaged weights), "
        f"CPU. Each variant ran once per round, in turn; best of {rounds} rounds. "
        "The machine is shared with other users at the same time (load average above the core count), so "
        "numbers are noisy (+-20% run to run); with 2 OpenMP threads on 2 busy cores torch slows down "
        "several-fold, which is why the product picks one thread per core not used by a decode worker.",
        "",
        "| variant | batch | workers | channels_last | scales | torch threads | images/s | vs naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {describe(r.cfg, r.name)} | {r.rate:.2f} | {r.rate / naive_rate:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of .jpg photos")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="packaged:tf_efficientnet_lite0")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)

    paths = sorted(args.data.glob("*.jpg"))[: args.images]
    if not paths:
        parser.error(f"no .jpg photos in {args.data}")
    model = load_model(args.model)
    info = machine_info()
    print(info, flush=True)

    # Warm up both paths (allocator, oneDNN kernels, worker start-up code paths) on a few images.
    run_naive(model, paths[:3], args.size)
    run_product(model, paths[:3], variants(args.size)[0][1])

    # Every variant runs once per round, in turn, so load from other users spreads over all of them;
    # each keeps its best round.
    runners: list[tuple[str, EmbedConfig | None, int | None]] = [
        ("naive loop", None, None),
        ("naive loop, 1 torch thread", None, 1),
    ] + [(name, cfg, None) for name, cfg in variants(args.size)]
    best: dict[str, float] = {}
    for round_no in range(args.rounds):
        for name, cfg, threads in runners:
            if cfg is None:
                seconds = run_naive(model, paths, args.size, threads)
            else:
                seconds = run_product(model, paths, cfg)
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"round {round_no + 1}: {name}: {len(paths) / seconds:.2f} img/s", flush=True)
    results = [Result(name, cfg, best[name], len(paths)) for name, cfg, _ in runners]

    text = table(results, results[0].rate, len(paths), args.size, args.rounds)
    print()
    print(text)
    if not args.no_write:
        command = "python bench/bench_embed.py " + " ".join(sys.argv[1:] if argv is None else argv)
        record("Embedding throughput", f"Measured with torch {torch.__version__}.\n\n{text}", command.strip())


if __name__ == "__main__":
    main()
