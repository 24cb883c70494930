"""Embedding N images with 1 and with 2 real Celery worker processes: the chunked chord of
`manage.py embed --queue` (chunks of 500) shared between the workers. With ``--job build``, a whole
`build_index --queue` of the default pipeline instead: embedding chunks (which also catch the dense
features), RootSIFT feature chunks, index shards.

    .venv/bin/python bench/bench_embed_workers.py [--images 10000] [--image-size 256] [--runs 1x1 1x2 2x1]
    .venv/bin/python bench/bench_embed_workers.py --job build --images 300 --chunk-size 50 --runs 1x1 2x1

The images are the landmarks-mini photos hard-linked under N GLDv2-style ids (as bench/bench_import.py
does), imported with --no-thumbnails --no-index into a temporary SQLite var dir. A run is timed from
the enqueue to the job's `succeeded`, the workers already started (their model loads on the first chunk,
inside the time). Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_import import make_dataset  # noqa: E402
from bench.common import ROOT, record, table  # noqa: E402


def manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def parse_run(text: str) -> tuple[int, int]:
    """'2x1' -> (2 workers, 1 torch thread each); '2' -> the machine's cores shared out among 2 workers."""
    workers, _, threads = text.partition("x")
    return int(workers), int(threads) if threads else max(1, len(os.sched_getaffinity(0)) // int(workers))


def start_workers(env: dict, count: int, logs: Path, threads: int) -> list[subprocess.Popen]:
    procs = []
    env = {**env, "OMP_NUM_THREADS": str(threads)}
    for n in range(count):
        log = logs / f"worker-{count}-{n}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "-Q", "cpu,gpu", "--pool", "solo",
               "--loglevel", "INFO", "--hostname", f"bench{n}-{os.getpid()}@%h"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text():
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                stop(procs)
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.2)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def job_state(db: Path, job_id: int) -> tuple[str, str]:
    with sqlite3.connect(db, timeout=30) as con:
        return con.execute("SELECT state, message FROM jobs_job WHERE id = ?", (job_id,)).fetchone()


def job_run(env: dict, db: Path, workers: int, threads: int, args, logs: Path) -> float:
    procs = start_workers(env, workers, logs, threads)
    try:
        start = time.perf_counter()
        if args.job == "build":
            out = manage(env, "build_index", "--queue", "--chunk-size", str(args.chunk_size))
        else:
            out = manage(env, "embed", "--queue", "--chunk-size", str(args.chunk_size), "--image-size",
                         str(args.image_size), "--num-workers", "0")
        job_id = int(re.search(r"queued job (\d+)", out).group(1))
        while (state := job_state(db, job_id))[0] not in ("succeeded", "failed", "cancelled"):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker died; see {logs}")
            time.sleep(0.5)
        seconds = time.perf_counter() - start
    finally:
        stop(procs)
    assert state[0] == "succeeded", state
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", choices=["embed", "build"], default="embed")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--runs", nargs="+", default=["1x1", "1x2", "2x1"],
                        help="WORKERSxTHREADS each (torch threads per worker process); WORKERS alone shares "
                             "the cores out among them")
    args = parser.parse_args()
    # A SIGTERM (timeout, Ctrl+C from a parent) still runs the finally blocks that stop the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rows, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "gld").mkdir()
        data = make_dataset((tmp / "gld").resolve(), args.images)
        db = tmp / "var" / "db.sqlite3"
        env = {**os.environ, "LANDMARKS_VAR_DIR": str(tmp / "var"), "DATABASE_URL": f"sqlite:///{db}",
               "CELERY_BROKER_URL": "filesystem://", "LOG_LEVEL": "WARNING"}
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "import_dataset", str(data), "--no-thumbnails", "--no-index")
        for workers, threads in map(parse_run, args.runs):
            # Every run starts with no cached features: an earlier run's would spare this one the work.
            shutil.rmtree(tmp / "var" / "artifacts" / "local-features", ignore_errors=True)
            seconds = job_run(env, db, workers, threads, args, tmp)
            base = base or seconds
            rows.append([workers, threads, f"{args.images:,}", f"{seconds:.0f}", f"{args.images / seconds:.1f}",
                         f"{base / seconds:.2f}×", f"{seconds * 10_000 / args.images:.0f}"])
            print(rows[-1], flush=True)
    body = table(["workers", "torch threads each", "images", "seconds", "images/s", "speed-up", "10 k images, s (scaled)"], rows)
    if args.job == "build":
        body += (f"\n\nThe default pipeline (lite2 at 512 px, 3 scales with flip, R-MAC regions, RootSIFT and dense "
                 f"features), chunks of {args.chunk_size} for the embedding and the RootSIFT features, one "
                 "solo-pool Celery worker process per worker with OMP_NUM_THREADS = its thread budget, filesystem "
                 "broker, SQLite. Timed from `build_index --queue` to `succeeded` (the index published).")
    else:
        body += (f"\n\nlite0 (packaged weights) at {args.image_size} px long side (not the product's 512, to keep "
                 f"the run short), chunks of {args.chunk_size}, DataLoader workers 0, one solo-pool Celery worker "
                 f"process per worker with OMP_NUM_THREADS = its thread budget, filesystem broker, SQLite. Timed "
                 "from `embed --queue` to `succeeded`.")
    if args.images != 10_000:
        body += (f" Measured on {args.images:,} images; the last column scales that time linearly to 10 k "
                 "(an extrapolation, not a measurement).")
    title = "build_index of the default pipeline: 1 vs 2 workers" if args.job == "build" else \
        "Embedding 10 k images: 1 vs 2 workers"
    record(title, body, "python bench/bench_embed_workers.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
