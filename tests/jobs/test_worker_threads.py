"""Each prefork child of a worker gets its share of the cores, so N children do not each run torch on
every core (bench: 2 processes x 1 thread embed 2.0x faster than 1 process x 2 threads)."""

import os

from worker.celery import app


def _start_controller(**options) -> None:
    app.WorkController(queues=["threads-test"], **options)  # sends worker_init, as `celery worker` does


def test_prefork_children_share_the_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # unset for the worker; restored after the test
    _start_controller(concurrency=2, pool_cls="prefork")
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, cores // 2))


def test_a_solo_worker_and_an_operators_budget_are_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    _start_controller(concurrency=2, pool_cls="solo")
    assert os.environ["OMP_NUM_THREADS"] == ""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _start_controller(concurrency=2, pool_cls="prefork")
    assert os.environ["OMP_NUM_THREADS"] == "3"
