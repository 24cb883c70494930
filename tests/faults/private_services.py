"""Private PostgreSQL and Redis instances for outage tests: each test stops and starts its own servers and
never touches the shared ones on 5432 and 6379."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, _worker_env, stop_worker, wait_for

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- PostgreSQL -------------------------------------------------------------------------------------

@dataclass
class PrivatePostgres:
    data: Path
    port: int
    log: Path

    def url(self, db: str = "landmarks") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def _pg_ctl(self, *args: str) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args])

    def start(self) -> None:
        # Unix socket in the data folder: nothing of ours lands in the shared /var/run/postgresql.
        self._pg_ctl("-l", str(self.log), "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                     "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a crash or a failover."""
        self._pg_ctl("-m", "fast", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def psql(self, sql: str, db: str = "postgres") -> str:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                               "-Atqc", sql], check=True, capture_output=True, text=True).stdout.strip()


def _as_postgres(cmd: list[str]) -> None:
    """initdb and postgres refuse to run as root: run them as the postgres account when we are root."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def private_postgres(db: str = "landmarks") -> Iterator[PrivatePostgres]:
    """A throw-away PostgreSQL cluster (initdb) on a free port with database ``db``; removed afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (set PG_BIN)")
    # Under /tmp, not pytest's tmp_path: the postgres account must reach it (pytest's folder is 0700 root).
    root = Path(tempfile.mkdtemp(prefix="landmarks-pg-"))
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
    server = PrivatePostgres(root / "data", free_port(), root / "server.log")
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(server.data), "-U", "postgres", "--auth=trust",
                      "--no-sync", "-E", "UTF8"])
        server.start()
        server.psql(f"CREATE DATABASE {db}")
        yield server
    finally:
        if server.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------------

@dataclass
class PrivateRedis:
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: port_open(self.port), 20), "private redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        assert wait_for(lambda: not port_open(self.port), 10)


@contextlib.contextmanager
def private_redis(port: int | None = None) -> Iterator[PrivateRedis]:
    """A redis-server of our own on ``port`` (a free one by default), without persistence."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server not found on PATH")
    server = PrivateRedis(port or free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- processes of the product on private services ------------------------------------------------------

def start_worker_env(settings, log_path: Path, name: str = "w", env: dict | None = None) -> subprocess.Popen:
    """tests.conftest.start_worker with environment overrides (a private broker or database)."""
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery", "worker", "-Q", "cpu,gpu,interactive",
           "--pool", "solo", "--loglevel", "INFO", "--hostname", f"{name}-{os.getpid()}@%h"]
    full_env = {**(_worker_env(settings) if settings is not None else os.environ), **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    started = wait_for(lambda: "ready." in log_path.read_text() or proc.poll() is not None, 60)
    assert started and proc.poll() is None, f"worker did not start:\n{log_path.read_text()}"
    return proc


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    """Run a manage.py command in its own process (the product as an operator runs it); its stdout."""
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def start_web(env: dict, port: int, log_path: Path, workers: int = 1) -> subprocess.Popen:
    """gunicorn from the venv serving the app on 127.0.0.1:``port``; waits until it accepts connections."""
    cmd = [sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--timeout", "60"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    up = wait_for(lambda: port_open(port) or proc.poll() is not None, 60)
    assert up and proc.poll() is None, f"web server did not start:\n{log_path.read_text()}"
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    stop_worker(proc)  # terminate, then kill after 20 s: the same for any child process


def wait_until(condition, timeout: float, interval: float = 0.2) -> bool:
    """wait_for that treats an exception in ``condition`` (the database is down) as 'not yet'."""
    def safe() -> bool:
        try:
            return bool(condition())
        except Exception:
            return False
    return wait_for(safe, timeout, interval)
