"""Helpers shared by the benchmarks: machine description, and recording results in docs/benchmarks.md.

docs/benchmarks.md is a reference: one section per benchmark, the latest run. ``record`` rewrites the
section its title names, in place, and moves the run it replaces to docs/benchmarks-archive.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"
ARCHIVE = ROOT / "docs" / "benchmarks-archive.md"
RESULTS_HEADER = (
    "# Benchmarks\n\n"
    "Each section is the latest run of one benchmark, rewritten in place by the script in `bench/` that its "
    "stamp line names (date · machine · command); superseded runs are in "
    "[benchmarks-archive.md](benchmarks-archive.md).\n"
)
ARCHIVE_HEADER = (
    "# Benchmarks archive\n\n"
    "Superseded runs of the benchmarks in [benchmarks.md](benchmarks.md), and records of experiments "
    "tried and not kept, newest last. Each section is as it stood, with its own date: `bench/common.py` "
    "moves a section here, unchanged, when its benchmark records a new run.\n"
)
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


def sections(text: str) -> tuple[str, list[str]]:
    """The text before the first ``## `` heading, and each section: from its ``## `` heading up to the
    next one (or the end)."""
    starts = [m.start() for m in re.finditer(r"^## ", text, flags=re.MULTILINE)]
    if not starts:
        return text, []
    ends = starts[1:] + [len(text)]
    return text[: starts[0]], [text[a:b] for a, b in zip(starts, ends, strict=True)]


def section_title(section: str) -> str:
    return section.split("\n", 1)[0].removeprefix("## ").strip()


def _join(head: str, parts: list[str]) -> str:
    """The file's text: its header, then the sections, one blank line between each."""
    return "\n".join([head.rstrip("\n") + "\n", *(p.rstrip("\n") + "\n" for p in parts)])


def _write(path: Path, text: str) -> None:
    """Write the whole text to a temporary file beside ``path``, then rename it over ``path``: a reader
    (or a crash) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def record(title: str, body: str, command: str) -> None:
    """Print ``body`` and make it the section ``## {title}`` of docs/benchmarks.md, with the date, the
    machine and the command.

    The section of that title is rewritten in place (the other sections keep their text and order), or
    added at the end if there is none; the section it replaces is appended, unchanged, to
    docs/benchmarks-archive.md. A title names exactly one section: if the file holds it more than once,
    nothing is written and ``ValueError`` says so.
    """
    if not title.strip() or "\n" in title or title != title.strip():
        raise ValueError(f"a benchmark title is one line with no surrounding spaces: {title!r}")
    if re.search(r"^## ", body, flags=re.MULTILINE):
        raise ValueError(f"the body of {title!r} has a '## ' heading of its own; it would split the section")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = body.strip("\n")
    new = f"## {title}\n\n{stamp} · {machine()} · `{command}`\n\n{body}\n"
    print("\n" + new)  # first, so that the figures are not lost if the file cannot be written

    head, parts = sections(RESULTS.read_text() if RESULTS.exists() else "")
    same = [i for i, part in enumerate(parts) if section_title(part) == title]
    if len(same) > 1:
        raise ValueError(
            f"{RESULTS} has {len(same)} sections titled {title!r}; a title must name one section. Keep the "
            f"current one, move the others to {ARCHIVE}, and record again.")
    if same:
        old = parts[same[0]]
        parts[same[0]] = new
        archive_head, archived = sections(ARCHIVE.read_text() if ARCHIVE.exists() else "")
        # The archive first: if writing the results then fails, the old run is in both files, not lost.
        _write(ARCHIVE, _join(archive_head if archive_head.strip() else ARCHIVE_HEADER, [*archived, old]))
    else:
        parts.append(new)
    _write(RESULTS, _join(head if head.strip() else RESULTS_HEADER, parts))
