"""Load test of search by photo (POST /api/search) over loopback: the app under gunicorn on a private
SQLite var dir with landmarks-mini imported and an index built; 1, 10 and 50 concurrent clients, each
sending requests back to back; latency percentiles, throughput and errors.

    .venv/bin/python bench/bench_load.py [--pipelines baseline-lite0 default] [--workers 2] [--threads 4]

Everything it starts (gunicorn) is stopped at the end; the var dir is a temporary folder. The search
rate limit is turned off (SEARCH_RATE_LIMIT=0): this measures the search, not the limiter.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, SHARED_DATA, record, table  # noqa: E402

MINI = SHARED_DATA / "landmarks-mini"
# (clients, requests in all) per run; every run also stops at --cap seconds.
RUNS = [(1, 30), (10, 100), (50, 200)]


def manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_site(env: dict) -> str:
    """Migrate, import landmarks-mini, make a user; return its API key."""
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "import_dataset", str(MINI), "--no-thumbnails", "--no-index")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('bench')")
    return manage(env, "create_api_token", "bench").strip()


def query_photos() -> list[tuple[str, bytes]]:
    import csv

    with (MINI / "images.csv").open(newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["split"] == "query"]
    return [(f"{i}.jpg", (MINI / "images" / f"{i}.jpg").read_bytes()) for i in ids]


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n10\r\n--{boundary}--\r\n'.encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def search_once(url: str, key: str, photo: tuple[str, bytes]) -> tuple[float, int]:
    body, ctype = multipart(*photo)
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Token {key}", "Content-Type": ctype})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status = r.status
            json.loads(r.read())
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception:  # refused, reset, timed out: an error all the same
        status = 0
    return time.perf_counter() - start, status


def load_run(url: str, key: str, photos: list, clients: int, total: int, cap: float) -> dict:
    """``clients`` threads, each sending back to back, until ``total`` requests are sent or ``cap`` s pass."""
    lock, results, sent = threading.Lock(), [], [0]
    deadline = time.monotonic() + cap

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if sent[0] >= total:
                    return
                n = sent[0]
                sent[0] += 1
            seconds, status = search_once(url, key, photos[n % len(photos)])
            with lock:
                results.append((seconds, status))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ok = sorted(s for s, status in results if status == 200)
    return {"clients": clients, "requests": len(results), "ok": len(ok), "errors": len(results) - len(ok),
            "statuses": sorted({status for _, status in results if status != 200}),
            "elapsed": elapsed, "p50": pct(ok, 50), "p95": pct(ok, 95), "p99": pct(ok, 99),
            "throughput": len(ok) / elapsed}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def serve(env: dict, port: int, workers: int, threads: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--threads", str(threads), "--timeout", "180"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipelines", nargs="+", default=["baseline-lite0", "default"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cap", type=float, default=120, help="Seconds at most per run.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    photos = query_photos()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        env = {**os.environ, "LANDMARKS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
               "CELERY_BROKER_URL": "filesystem://", "SEARCH_RATE_LIMIT": "0", "LOG_LEVEL": "WARNING"}
        key = setup_site(env)
        port = free_port()
        url = f"http://127.0.0.1:{port}/api/search"
        web = serve(env, port, args.workers, args.threads, var / "gunicorn.log")
        try:
            for pipeline in args.pipelines:
                start = time.perf_counter()
                manage(env, "build_index", "--pipeline", pipeline)  # becomes active; the workers switch over
                print(f"{pipeline}: index built in {time.perf_counter() - start:.0f} s", flush=True)
                for _ in range(2 * args.workers):  # warm-up: every web process loads the models and index
                    assert search_once(url, key, photos[0])[1] == 200, (var / "gunicorn.log").read_text()[-2000:]
                for clients, total in RUNS:
                    r = load_run(url, key, photos, clients, total, args.cap)
                    print(pipeline, r, flush=True)
                    rows.append([pipeline, clients, r["requests"], f"{r['p50'] * 1000:.0f}", f"{r['p95'] * 1000:.0f}",
                                 f"{r['p99'] * 1000:.0f}", f"{r['throughput']:.2f}",
                                 f"{r['errors']}" + (f" ({', '.join(map(str, r['statuses']))})" if r["errors"] else ""),
                                 f"{r['elapsed']:.0f}"])
        finally:
            web.terminate()
            web.wait(timeout=30)
    body = table(["pipeline", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "searches/s", "errors",
                  "seconds"], rows)
    body += (f"\n\ngunicorn with {args.workers} workers × {args.threads} threads on 127.0.0.1, SQLite, landmarks-mini "
             f"(index of its train+index images); each client sends its next photo (the {len(photos)} query "
             "photos in turn, k=10) as soon as the last answer arrives; a run stops after its request count or "
             f"{args.cap:.0f} s. Latency is over successful answers; errors count non-200 answers and "
             "failed connections (status 0). The machine is shared, so other users' load is in these numbers.")
    if args.no_write:
        print(body)
    else:
        record("Load test: search by photo", body, "python bench/bench_load.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
