"""Searches while another index version becomes active: how long do they wait, and when does the new
version answer? The app under gunicorn (landmarks-mini, one pipeline, a private SQLite var dir), clients
searching back to back through `POST /api/search`; after a few seconds `manage.py rollback --index` makes
a second version (the same files under another IndexVersion row) active. Once with each
SEARCH_ENGINE_SWAP: "blocking" (a process loads the new version in the search that notices it, and its
other searches wait) and "background" (the product's default).

    .venv/bin/python bench/bench_swap.py [--pipeline default] [--clients 4] [--seconds 30]
    .venv/bin/python bench/bench_swap.py --pipeline web-fast --synthetic 1000000   # a load that takes long

``--synthetic N`` grows the index to N images as bench/bench_load.py does (synthetic rows copying the real
photos, perturbed vectors; pipelines without regions only), so that loading a version reads N labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_load import (  # noqa: E402
    django_call,
    free_port,
    manage,
    pct,
    query_photos,
    search_once,
    serve,
    setup_site,
)
from bench.common import record, table  # noqa: E402

COPY_ACTIVE = ("from webapp.search.models import IndexVersion; iv = IndexVersion.objects.get(is_active=True); "
               "iv.pk = None; iv.is_active = False; iv.job = None; iv.save(); print(iv.pk)")


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]  # `shell` may print a line of its own first


def searches(url: str, key: str, photos: list, clients: int, t0: float, seconds: float) -> list[tuple[float, float, int, int]]:
    """(start, seconds, status, index version) of every search ``clients`` threads send back to back, with
    start counted from ``t0`` (time.monotonic)."""
    lock, out = threading.Lock(), []

    def client(n: int) -> None:
        i = n
        while time.monotonic() - t0 < seconds:
            answer: list = []
            start = time.monotonic() - t0
            took, status = search_once(url, key, photos[i % len(photos)], answer)
            with lock:
                out.append((start, took, status, answer[0]["index_version"] if answer else -1))
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out)


def run_mode(mode: str, env: dict, key: str, photos: list, target: int, args) -> list:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/search"
    var = Path(env["LANDMARKS_VAR_DIR"])
    web = serve({**env, "SEARCH_ENGINE_SWAP": mode}, port, args.workers, 1, var / f"gunicorn-{mode}.log")
    try:
        for n in range(2 * args.workers):  # every process loads the active version
            assert search_once(url, key, photos[n])[1] == 200, (var / f"gunicorn-{mode}.log").read_text()[-2000:]
        t0, switched = time.monotonic(), []

        def switch() -> None:
            time.sleep(args.switch_at)
            manage(env, "rollback", "--index", str(target))
            switched.append(time.monotonic() - t0)  # the new version is active from here

        switcher = threading.Thread(target=switch)
        switcher.start()
        got = searches(url, key, photos, args.clients, t0, args.seconds)
        switcher.join()
    finally:
        web.terminate()
        web.wait(timeout=30)
    at = switched[0]
    before = [took for start, took, status, _ in got if start + took < at and status == 200]
    after = [took for start, took, status, _ in got if start + took >= at and status == 200]
    first_new = min((start + took for start, took, status, iv in got if iv == target), default=float("nan"))
    errors = sum(status != 200 for *_, status, _ in got)
    return [mode, len(got), f"{pct(sorted(before), 50) * 1000:.0f}", f"{max(before, default=float('nan')) * 1000:.0f}",
            f"{pct(sorted(after), 50) * 1000:.0f}", f"{max(after, default=float('nan')) * 1000:.0f}",
            f"{first_new - at:.1f}", errors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30, help="How long the clients search, per mode.")
    parser.add_argument("--switch-at", type=float, default=8, help="Seconds into the run when the version switches.")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="Grow the index to N images.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    photos = query_photos()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        env = {**os.environ, "LANDMARKS_VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}",
               "CELERY_BROKER_URL": "filesystem://", "SEARCH_RATE_LIMIT": "0", "LOG_LEVEL": "WARNING"}
        key, _ = setup_site(env)
        manage(env, "build_index", "--pipeline", args.pipeline)
        if args.synthetic:
            grown = json.loads(django_call(env, f"populate({args.synthetic})"))
            manage(env, "build_index", "--pipeline", args.pipeline, "--embedding-set", str(grown["embedding_set"]))
        first = last_line(manage(env, "shell", "-c", "from webapp.search.models import IndexVersion; "
                                 "print(IndexVersion.objects.get(is_active=True).pk)"))
        second = last_line(manage(env, "shell", "-c", COPY_ACTIVE))
        for mode, target in (("blocking", second), ("background", first)):  # each run switches to the other
            rows.append(run_mode(mode, env, key, photos, int(target), args))
            print(rows[-1], flush=True)
    body = table(["SEARCH_ENGINE_SWAP", "searches", "p50 ms before", "max ms before", "p50 ms after switch",
                  "max ms after switch", "new version answers after s", "errors"], rows)
    size = f"{args.synthetic:,} images (landmarks-mini and synthetic copies)" if args.synthetic else "landmarks-mini"
    body += (f"\n\ngunicorn with {args.workers} workers x 1 thread, SQLite, {size} indexed with `{args.pipeline}`; "
             f"{args.clients} clients search back to back (the {len(photos)} query photos in turn) for "
             f"{args.seconds:.0f} s; {args.switch_at:.0f} s in, `manage.py rollback --index` makes another version "
             "active (the same files under a second IndexVersion row, so the switch costs a full load: models, "
             "memory-mapped index, labels). \"Before\": searches that ended before the rollback command "
             "returned; \"after\": those that ended after it. The last column is when the first answer from the "
             "new version arrived, counted from then.")
    if args.no_write:
        print(body)
    else:
        title = "Searches while another index version becomes active"
        record(f"{title} ({args.synthetic:,} images)" if args.synthetic else title, body,
               "python bench/bench_swap.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
