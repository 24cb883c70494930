"""The stage protocol (ml/stages/protocol.py) on a small stage of its own: parts computed once and joined
once, whatever was interrupted and wherever the parts ran; the first plan kept; a half-written plan made
again; a twin task waiting for the part being computed, then skipping it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ml.stages.protocol import Plan, Stage, StageFolder, Work, chunks, compute_part, plan_stage, run_stages


class Squares(Stage):
    """Squares of the job's numbers (its "ids"), in parts of ``size``; joined as their sum."""

    name = "squares"
    title = "squaring"

    def __init__(self, work: Work, size: int, calls: list | None = None):
        self.work, self.size, self.calls = work, size, calls if calls is not None else []

    def plan(self, folder: StageFolder) -> Plan:
        numbers = [int(i) for i in self.work.ids()]
        bounds = chunks(len(numbers), self.size)
        for i, (lo, hi) in enumerate(bounds):
            folder.write_inputs(i, numbers[lo:hi])
        self.calls.append(("plan",))
        return Plan([hi - lo for lo, hi in bounds], {"size": self.size})

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> str:
        self.calls.append(("compute", i))
        values = [n * n for n in folder.inputs(i)]
        folder.file(f"out-{i}.txt").write_text(" ".join(map(str, values)))
        return f"{len(values)} numbers"

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        self.calls.append(("join",))
        return {"sum": sum(int(v) for i in range(plan.parts) for v in folder.file(f"out-{i}.txt").read_text().split())}


class Halve(Squares):
    """A second stage reading the first one's output."""

    name = "halve"
    title = "halving"

    def plan(self, folder: StageFolder) -> Plan:
        return Plan([1])

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress) -> None:
        total = self.work.stage("squares").joined()["sum"]
        folder.file("half.txt").write_text(str(total / 2))

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        return {"half": float(folder.file("half.txt").read_text())}


def _work(tmp_path: Path, count: int = 10) -> Work:
    work = Work(tmp_path / "work")
    work.create({"what": "test"}, [str(n) for n in range(count)], [f"/n/{n}" for n in range(count)])
    return work


def test_stages_run_in_turn_and_report_their_progress(tmp_path):
    work = _work(tmp_path)
    calls: list = []
    seen: list = []
    outputs = run_stages([Squares(work, 4, calls), Halve(work, 1)], work.path,
                         progress=lambda label, done, total: seen.append((label, done, total)))
    assert outputs == {"squares": {"sum": 285}, "halve": {"half": 142.5}}
    assert calls == [("plan",), ("compute", 0), ("compute", 1), ("compute", 2), ("join",)]
    assert ("stage 1 of 2: squaring", 10, 10) in seen and ("stage 2 of 2: halving", 1, 1) in seen
    firsts = [done for label, done, total in seen if label.startswith("stage 1") and total]
    assert firsts == sorted(firsts)  # items done only grow within a stage

    again: list = []
    assert run_stages([Squares(work, 4, again), Halve(work, 1)], work.path) == outputs
    assert again == []  # joined stages are read back, not run again


def test_a_resumed_stage_keeps_its_plan_and_skips_the_parts_done(tmp_path):
    work = _work(tmp_path)
    calls: list = []
    stage = Squares(work, 3, calls)
    folder = work.stage(stage.name)
    plan = plan_stage(stage, folder)
    assert plan.sizes == [3, 3, 3, 1] and folder.inputs(3) == [9]
    assert compute_part(stage, folder, plan, 1) and not compute_part(stage, folder, plan, 1)
    # Killed here. The job's settings changed meanwhile are not read again: the first plan stands.
    assert plan_stage(Squares(work, 5, calls), folder) == plan
    notes: list[str] = []
    out = run_stages([Squares(work, 5, calls)], work.path, note=notes.append)
    assert out["squares"] == {"sum": 285}
    assert calls == [("plan",), ("compute", 1), ("compute", 0), ("compute", 2), ("compute", 3), ("join",)]
    assert notes == ["stage 1 of 1: squaring: resumed, 1 of 4 parts already done"]


def test_a_plan_left_half_written_is_made_again(tmp_path):
    """Part inputs are written before the plan: without plan.json the planning did not finish (the process
    died in it), and whatever it left is dropped and planned afresh."""
    work = _work(tmp_path)
    folder = work.stage("squares")
    folder.path.mkdir(parents=True)
    folder.write_inputs(0, [100, 200])  # from the interrupted planning, not this plan's
    assert folder.read_plan() is None
    plan = plan_stage(Squares(work, 10), folder)
    assert plan.sizes == [10] and folder.inputs(0) == list(range(10))


def test_sending_the_parts_elsewhere_stops_the_run_until_they_are_done(tmp_path):
    """``send`` is how the workers take a stage's parts: it raises to stop, the parts are computed by other
    processes (here: by hand), and the next run joins and goes on."""
    work = _work(tmp_path)

    class Sent(Exception):
        pass

    sent: list = []

    def send(n, stage, folder, plan, pending):
        sent.append((n, stage.name, pending))
        raise Sent

    stages = [Squares(work, 4), Halve(work, 1)]
    with pytest.raises(Sent):
        run_stages(stages, work.path, send=send)
    assert sent == [(0, "squares", [0, 1, 2])]
    folder = work.stage("squares")
    for i in (0, 1, 2):
        compute_part(stages[0], folder, folder.read_plan(), i)
    with pytest.raises(Sent):  # the next stage's one part goes out the same way
        run_stages(stages, work.path, send=send)
    assert sent[-1] == (1, "halve", [0]) and folder.joined() == {"sum": 285}
    assert run_stages(stages, work.path)["halve"] == {"half": 142.5}


def test_a_twin_task_waits_for_the_part_being_computed_then_skips_it(tmp_path):
    work = _work(tmp_path)
    calls: list = []
    stage = Squares(work, 4, calls)
    folder = work.stage(stage.name)
    plan = plan_stage(stage, folder)
    results: list = []
    twin = threading.Thread(target=lambda: results.append(compute_part(stage, folder, plan, 0)))
    with folder.lock("part-000000"):  # the first task is computing part 0
        twin.start()
        time.sleep(0.5)
        assert twin.is_alive() and results == []  # waiting, not computing too
        stage.compute(folder, plan, 0, None)
        folder.file("part-000000.done").write_bytes(b"")
    twin.join(10)
    assert results == [False] and calls == [("plan",), ("compute", 0)]


def test_a_part_of_a_job_whose_work_was_dropped_does_nothing(tmp_path):
    work = _work(tmp_path)
    stage = Squares(work, 4)
    folder = work.stage(stage.name)
    plan = plan_stage(stage, folder)
    work.drop()
    assert work.spec() is None and not work.path.exists()
    assert not compute_part(stage, folder, plan, 1)
    assert not work.path.exists()  # nothing written back into a dropped folder


def test_the_work_keeps_the_settings_and_images_it_started_with(tmp_path):
    work = _work(tmp_path, 3)
    assert work.create({"what": "changed"}, ["x"], ["/x"]) == {"what": "test"}
    assert work.ids() == ["0", "1", "2"] and work.paths() == ["/n/0", "/n/1", "/n/2"]
    other = Work(tmp_path / "other")
    with pytest.raises(ValueError, match="one one-line path per id"):
        other.create({}, ["a", "b"], ["/a", "/b\nc"])
    assert other.spec() is None
