"""Load test of search by photo (POST /api/search) over loopback: the app under gunicorn on a private
SQLite var dir with landmarks-mini imported and an index built; 1, 10 and 50 concurrent clients, each
sending requests back to back; latency percentiles, throughput and errors. Then the server time of the
other pages (landmark, image, images list, jobs, models and indexes, ...) with no load: one client over
loopback, so the time measured is the server's plus well under a millisecond of connection.

    .venv/bin/python bench/bench_load.py [--pipelines baseline default] [--workers 2] [--threads 1]
    .venv/bin/python bench/bench_load.py --pipelines web-fast --synthetic 100000   # issue #6's target

``--synthetic N`` grows the index to N vectors after the build: synthetic Image rows that copy the
indexed real photos (file, landmark, thumbnail, cached local features) with perturbed copies of their
vectors, then indexed and published by the product's own `build_index --embedding-set`
(bench/load_site.py says how). Everything it starts (gunicorn) is stopped at the end; the var dir is a
temporary folder. The search rate limit is turned off (SEARCH_RATE_LIMIT=0): this measures the search,
not the limiter.
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
PAGES = [  # (name, path); {landmark}, {image}, {synthetic_image}, {query} are filled in per site
    ("home", "/"),
    ("landmark list", "/landmarks/"),
    ("landmark page (largest)", "/landmarks/{landmark}/"),
    ("image page", "/images/{image}/"),
    ("image page (synthetic)", "/images/{synthetic_image}/"),
    ("thumbnail", "/images/{image}/thumb.jpg"),
    ("images list", "/images/"),
    ("images list, page 100", "/images/?page=100"),
    ("images of a landmark", "/images/?landmark={landmark}"),
    ("images like one", "/images/?like={image}"),
    ("jobs", "/jobs/"),
    ("models and indexes", "/models/"),
    ("search results page", "/search/{query}/"),
    ("search history", "/search/history/"),
    ("API landmark", "/api/landmarks/{landmark}"),
    ("API image", "/api/images/{image}"),
]


def manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_site(env: dict) -> tuple[str, str]:
    """Migrate, import landmarks-mini with thumbnails, make a superuser; return its API key and a session."""
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "import_dataset", str(MINI), "--no-thumbnails", "--no-index")
    manage(env, "generate_thumbnails")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
           "User.objects.create_superuser('bench', 'bench@example.org', None)")
    key = manage(env, "create_api_token", "bench").strip()
    return key, django_call(env, "session_key('bench')")


def django_call(env: dict, call: str) -> str:
    """Run ``bench.load_site.<call>`` in the app's settings; its last printed line."""
    out = manage(env, "shell", "-c", f"from bench.load_site import *; {call}")
    return out.strip().splitlines()[-1]


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


def search_once(url: str, key: str, photo: tuple[str, bytes], answer: list | None = None) -> tuple[float, int]:
    body, ctype = multipart(*photo)
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Token {key}", "Content-Type": ctype})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status = r.status
            data = json.loads(r.read())
            if answer is not None:
                answer.append(data)
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception:  # refused, reset, timed out: an error all the same
        status = 0
    return time.perf_counter() - start, status


def get_once(url: str, session: str, key: str) -> tuple[float, int, int]:
    """(seconds, status, bytes) of one GET with the session cookie (pages) or the API key (/api/); the body
    is read to its end."""
    auth = {"Authorization": f"Token {key}"} if "/api/" in url else {"Cookie": f"sessionid={session}"}
    req = urllib.request.Request(url, headers=auth)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, size = r.status, len(r.read())
    except urllib.error.HTTPError as e:
        status, size = e.code, 0
    except Exception:
        status, size = 0, 0
    return time.perf_counter() - start, status, size


def time_pages(base: str, session: str, key: str, targets: dict, repeats: int, warm: int) -> list[list]:
    """Each page ``warm`` times to warm it (thumbnails, per-process caches: as many times as there are web
    processes, give or take where gunicorn sends them), then ``repeats`` times in a row: p50 and max."""
    rows = []
    for name, path in PAGES:
        if "{synthetic_image}" in path and not targets.get("synthetic_image"):
            continue
        url = base + path.format(**targets)
        for _ in range(warm):
            get_once(url, session, key)
        got = [get_once(url, session, key) for _ in range(repeats)]
        times = sorted(t for t, status, _ in got if status == 200)
        errors = sorted({status for _, status, _ in got if status != 200})
        rows.append([name, f"`{path}`", f"{pct(times, 50) * 1000:.0f}", f"{max(times, default=float('nan')) * 1000:.0f}",
                     f"{got[-1][2] / 1024:.0f}", ", ".join(map(str, errors)) or "0"])
        print(rows[-1], flush=True)
    return rows


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
    parser.add_argument("--pipelines", nargs="+", default=["baseline", "default"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker (the product's default)")
    parser.add_argument("--cap", type=float, default=120, help="Seconds at most per run.")
    parser.add_argument("--runs", nargs="+", default=[f"{c}:{n}" for c, n in RUNS], metavar="CLIENTS:REQUESTS",
                        help="Load runs, e.g. 1:30 10:100 50:200 (each also stops at --cap seconds).")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="Grow each index to N vectors with synthetic images (see the module's doc).")
    parser.add_argument("--noise", type=float, default=1.0, help="Synthetic vectors: noise norm (1.0: cos ~0.7).")
    parser.add_argument("--page-repeats", type=int, default=10, help="Timed GETs per page (0: no page timings).")
    parser.add_argument("--var", type=Path, help="Keep the site in this (new) folder instead of a temporary one.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.synthetic and len(args.pipelines) > 1:
        # The synthetic rows are train/index images: a second build would embed every one of their files.
        parser.error("--synthetic takes one pipeline (run the script once per pipeline)")
    runs = [tuple(int(v) for v in r.split(":")) for r in args.runs]
    photos = query_photos()
    rows, page_rows, notes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        var = args.var or Path(tmp)
        var.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LANDMARKS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
               "CELERY_BROKER_URL": "filesystem://", "SEARCH_RATE_LIMIT": "0", "LOG_LEVEL": "WARNING"}
        key, session = setup_site(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/api/search"
        web = serve(env, port, args.workers, args.threads, var / "gunicorn.log")
        try:
            for pipeline in args.pipelines:
                start = time.perf_counter()
                manage(env, "build_index", "--pipeline", pipeline)  # becomes active; the workers switch over
                print(f"{pipeline}: index built in {time.perf_counter() - start:.0f} s", flush=True)
                if args.synthetic:
                    grown = json.loads(django_call(env, f"populate({args.synthetic}, noise={args.noise})"))
                    start = time.perf_counter()
                    manage(env, "build_index", "--pipeline", pipeline, "--embedding-set", str(grown["embedding_set"]))
                    grown["index_s"] = time.perf_counter() - start
                    print(f"{pipeline}: grown to {grown}", flush=True)
                    notes.append(
                        f"Setup of {pipeline}: {grown['synthetic']:,} synthetic images in {grown['seconds']:.0f} s "
                        f"(rows {grown['rows_s']:.0f} s, vectors {grown['vectors_s']:.0f} s, embedding shards "
                        f"{grown['embeddings_s']:.0f} s, local-feature links {grown['features_s']:.0f} s), then "
                        f"`build_index --embedding-set` (index and publish) {grown['index_s']:.0f} s")
                # Warm-up, concurrent so that every web process loads the models, the index and the labels.
                warm = load_run(url, key, photos, 2 * args.workers, 4 * args.workers, args.cap)
                assert warm["errors"] == 0, (var / "gunicorn.log").read_text()[-2000:]
                for clients, total in runs:
                    r = load_run(url, key, photos, clients, total, args.cap)
                    print(pipeline, r, flush=True)
                    rows.append([pipeline, clients, r["requests"], f"{r['p50'] * 1000:.0f}", f"{r['p95'] * 1000:.0f}",
                                 f"{r['p99'] * 1000:.0f}", f"{r['throughput']:.2f}",
                                 f"{r['errors']}" + (f" ({', '.join(map(str, r['statuses']))})" if r["errors"] else ""),
                                 f"{r['elapsed']:.0f}"])
                if args.page_repeats:
                    answer: list = []
                    search_once(url, key, photos[0], answer)
                    targets = json.loads(django_call(env, "page_targets()"))
                    targets["query"] = answer[0]["query_url"].rstrip("/").rsplit("/", 1)[-1]
                    page_rows += [[pipeline, *row] for row in time_pages(base, session, key, targets, args.page_repeats, 2 * args.workers)]
        finally:
            web.terminate()
            web.wait(timeout=30)
    size = (f"{args.synthetic:,} images indexed: landmarks-mini's {len(photos)} query photos aside, its indexed photos "
            "and synthetic copies of them" if args.synthetic else "landmarks-mini (index of its train+index images)")
    body = table(["pipeline", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "searches/s", "errors",
                  "seconds"], rows)
    body += (f"\n\ngunicorn with {args.workers} workers × {args.threads} threads (SEARCH_THREADS="
             f"{os.environ.get('SEARCH_THREADS', '1')}) on 127.0.0.1, SQLite, {size}; "
             f"each client sends its next photo (the {len(photos)} query photos in turn, k=10) to `POST /api/search` "
             "as soon as the last answer arrives; a run stops after its request count or "
             f"{args.cap:.0f} s. Latency is over successful answers; errors count non-200 answers and "
             "failed connections (status 0). The machine is shared, so other users' load is in these numbers.")
    if args.synthetic:
        body += (" Synthetic images (`bench/load_site.py`): each copies one indexed real photo (file, landmark, "
                 "thumbnail) and gets its vector plus Gaussian noise (norm "
                 f"{args.noise:g}, re-normalised: cosine ~{1 / (1 + args.noise ** 2) ** 0.5:.2f} to the original); "
                 "its local features are the real photo's (a hard link in the feature cache), so verifying a "
                 "synthetic candidate costs what verifying a real one does, and answers as that photo would. "
                 + " ".join(n + "." for n in notes))
    if page_rows:
        body += "\n\n" + table(["pipeline", "page", "path", "p50 ms", "max ms", "KiB", "errors"], page_rows)
        body += (f"\n\nServer time of other pages with no load: each page requested {2 * args.workers} times to warm "
                 "it (first hits build per-process caches and thumbnails), then "
                 f"{args.page_repeats} times in a row by one client (logged in as a superuser) over loopback, "
                 "timed in the client from request to the last byte (loopback adds well under 1 ms).")
    title = f"Load test: search by photo at {args.synthetic:,} images" if args.synthetic else "Load test: search by photo"
    if args.no_write:
        print(body)
    else:
        record(title, body, "python bench/bench_load.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
