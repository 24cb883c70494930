"""Helpers shared by the benchmarks: machine description and appending results to docs/benchmarks.md."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"
SHARED_DATA = Path(os.environ.get("LANDMARKS_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    line = f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}"
    torch = sys.modules.get("torch")  # only benchmarks that use torch name the GPU
    if torch is not None and torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return line


def photo_bench(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The options of a benchmark over landmarks-mini photos (--data, --images, --rounds, --no-write), and
    the first ``--images`` of those photos, by name."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "landmarks-mini" / "images")
    parser.add_argument("--images", type=int, default=145)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    return args, [str(p) for p in sorted(args.data.glob("*.jpg"))[: args.images]]


def best_of(rounds: int, fn) -> tuple[float, object]:
    """The shortest time, in seconds, of ``rounds`` calls of ``fn()``, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str, command: str) -> None:
    """Print ``body`` and append it to docs/benchmarks.md under ``title`` with the machine and command."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title}\n\n{stamp} · {machine()} · `{command}`\n\n{body}\n"
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmarks\n\nEach section is appended by a script in `bench/`; newest last.\n")
    with RESULTS.open("a") as f:
        f.write(text)
