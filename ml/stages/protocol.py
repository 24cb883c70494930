"""The protocol every chunked job follows, written once: a job is a list of stages; a stage plans its parts
once, each part is computed once and marked done, and the parts are joined into the stage's output.

``run_stages`` runs a list in this process (the foreground commands, ``evaluate``, tests); given a ``send``
it lets the caller hand a stage's pending parts to other processes (``worker.stages``: one Celery chord per
stage) and resume later: whatever is done is found on disk and skipped, so a job whose worker died resumes
where it stopped and ends as an uninterrupted run ends.

Files of a job's work folder W::

    W/spec.json                    the job's settings, written once before any stage
    W/ids.txt, W/paths.txt         the images it works on, one per line (written before spec.json)
    W/<stage>/part-NNNNNN.json     one part's inputs (written before the plan)
    W/<stage>/plan.json            the stage's plan: part sizes and settings; written last of the planning
    W/<stage>/part-NNNNNN.lock     held while the part is computed: a twin task waits, then skips it
    W/<stage>/part-NNNNNN.done     the part is complete
    W/<stage>/joined.json          the stage's output: the stage is complete

Every file is written by rename (``ml.atomic_files``). Locks are flock(2) locks: the work folder must be on
one machine or a file system that honours them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.atomic_files import write_bytes

log = logging.getLogger(__name__)
PLAN = "plan.json"
JOINED = "joined.json"
SPEC = "spec.json"
# (what the job is doing, e.g. "stage 2 of 5: local features", items done, items in the stage)
StageProgress = Callable[[str, int, int], None]
PartProgress = Callable[[int, int], None]


@dataclass
class Plan:
    """A stage's fixed plan: how many items each part holds (progress counts items), and the settings its
    parts read."""

    sizes: list[int]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> int:
        return len(self.sizes)

    @property
    def items(self) -> int:
        return sum(self.sizes)


class Stage:
    """One step of a job. A subclass names itself and says what its parts are, how one is computed and how
    they are joined; the protocol above does the rest (once, resumable, shared by many workers)."""

    name = ""  # its folder in the work folder; unique within a job
    title = ""  # what the job page says it is doing
    queue = "cpu"  # the workers that compute its parts: "gpu" where a part runs a network

    def queue_of(self, plan: Plan) -> str:
        """The workers for this plan's parts (a stage whose plan leaves the network out may use the CPU's)."""
        return self.queue

    def plan(self, folder: StageFolder) -> Plan:
        """Decide the parts (written once): their inputs go to ``folder.write_inputs`` before this returns."""
        raise NotImplementedError

    def compute(self, folder: StageFolder, plan: Plan, i: int, progress: PartProgress | None) -> str | None:
        """Compute part ``i`` and publish what it makes by rename; it may run again after a crash. Returns a
        note on what it did, for the log, or None when it found its output on disk already."""
        raise NotImplementedError

    def join(self, folder: StageFolder, plan: Plan) -> dict:
        """The stage's output (JSON) from its finished parts; it may run again after a crash."""
        return {}


class StageFolder:
    """One stage's files in a job's work folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read_plan(self) -> Plan | None:
        data = read_json(self.path / PLAN)
        return None if data is None else Plan(data["sizes"], data.get("data", {}))

    def write_plan(self, plan: Plan) -> Plan:
        write_json(self.path / PLAN, {"sizes": plan.sizes, "data": plan.data})
        return plan

    def inputs_path(self, i: int) -> Path:
        return self.path / f"part-{i:06d}.json"

    def write_inputs(self, i: int, data: Any) -> None:
        write_json(self.inputs_path(i), data)

    def inputs(self, i: int) -> Any:
        return json.loads(self.inputs_path(i).read_text())

    def file(self, name: str) -> Path:
        """A file the stage writes itself (a part's output, a joined file)."""
        return self.path / name

    def done(self, i: int) -> bool:
        return self.file(f"part-{i:06d}.done").exists()

    def pending(self, plan: Plan) -> list[int]:
        return [i for i in range(plan.parts) if not self.done(i)]

    def items_done(self, plan: Plan) -> int:
        return sum(size for i, size in enumerate(plan.sizes) if self.done(i))

    def joined(self) -> dict | None:
        return read_json(self.path / JOINED)

    @contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        """An exclusive lock on ``name.lock`` while one part (or the join) runs, so a task sent again for it
        waits for the first instead of computing it too. Yields False when the folder is gone (the job
        ended and its work was dropped)."""
        with file_lock(self.path / f"{name}.lock") as held:
            yield held


@contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` (created if need be) for the block; False when its folder is gone.
    The kernel releases the lock of a process that dies."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ running


def plan_stage(stage: Stage, folder: StageFolder) -> Plan:
    """The stage's plan: the one on disk, or a new one (a planning left half done is started again)."""
    folder.path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.path.parent / f".{folder.path.name}.plan.lock"):
        written = folder.read_plan()
        if written is not None:
            return written
        shutil.rmtree(folder.path, ignore_errors=True)
        folder.path.mkdir(parents=True)
        return folder.write_plan(stage.plan(folder))


def compute_part(stage: Stage, folder: StageFolder, plan: Plan, i: int, progress: PartProgress | None = None) -> bool:
    """Compute part ``i`` unless it is done (a twin task computing it is waited for); True when this call did."""
    name = f"part-{i:06d}"
    with folder.lock(name) as held:
        if not held or folder.done(i) or not folder.path.is_dir():  # done, or dropped: the job ended
            return False
        note = stage.compute(folder, plan, i, progress)
        write_bytes(folder.file(f"{name}.done"), b"")
    if note:  # None: its output was on disk already (the process died before marking it done)
        log.info("%s: %s part %d: %s", folder.path.parent.name, stage.name, i, note)  # the job's folder
    return True


def join_stage(stage: Stage, folder: StageFolder, plan: Plan) -> dict:
    """The stage's output, joined once (a twin waits for the first and reads what it wrote)."""
    with folder.lock("join") as held:
        joined = folder.joined()
        if joined is not None:
            return joined
        if not held:
            raise RuntimeError(f"{folder.path}: the work folder is gone (the job ended)")
        missing = folder.pending(plan)
        if missing:
            raise RuntimeError(f"{folder.path}: parts {missing[:5]} are not done")
        out = stage.join(folder, plan)
        write_json(folder.path / JOINED, out)
        return out


Send = Callable[[int, Stage, StageFolder, Plan, list[int]], None]


def run_stages(stages: Sequence[Stage], work: Path, progress: StageProgress | None = None,
               send: Send | None = None, note: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Run ``stages`` in turn, each as planned, computed and joined, skipping what is done; their outputs
    by name. ``send(number, stage, folder, plan, pending)`` may hand a stage's pending parts to other
    processes and raise to stop here (``worker.stages`` sends a chord whose callback runs this again).
    ``note(line)`` hears of parts found done when a stage resumes (a job's log)."""
    outputs: dict[str, dict] = {}
    for n, stage in enumerate(stages):
        folder = StageFolder(work / stage.name)
        joined = folder.joined()
        if joined is None:
            joined = _run_stage(stage, folder, stage_label(n, len(stages), stage), n, progress, send, note)
        outputs[stage.name] = joined
    return outputs


def stage_label(n: int, count: int, stage: Stage) -> str:
    return f"stage {n + 1} of {count}: {stage.title}"


def _run_stage(stage: Stage, folder: StageFolder, label: str, n: int, progress: StageProgress | None,
               send: Send | None, note: Callable[[str], None] | None) -> dict:
    def report(done: int) -> None:
        if progress is not None:
            progress(label, done, plan.items)

    report_planning = progress is not None and folder.read_plan() is None
    if report_planning:
        progress(label, 0, 0)
    plan = plan_stage(stage, folder)
    pending = folder.pending(plan)
    if note is not None and 0 < plan.parts - len(pending) < plan.parts:  # a stage left half done
        note(f"{label}: resumed, {plan.parts - len(pending)} of {plan.parts} parts already done")
    report(folder.items_done(plan))
    if pending and send is not None:
        send(n, stage, folder, plan, pending)
    for i in pending:
        before = folder.items_done(plan)
        compute_part(stage, folder, plan, i, lambda d, _t, before=before: report(before + d))
        report(folder.items_done(plan))
    return join_stage(stage, folder, plan)


# ------------------------------------------------------------------------------------- the work folder


class Work:
    """A job's work folder: its settings and images, written once, and one folder per stage."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def spec(self) -> dict | None:
        return read_json(self.path / SPEC)

    def create(self, spec: dict, ids: Sequence[str], paths: Sequence[str],
               columns: dict[str, Sequence[str]] | None = None) -> dict:
        """Write the job's settings and images (and ``columns``, one value per image, such as labels) unless
        an earlier run of the job did (a resumed job keeps what it started with); the settings on disk."""
        written = self.spec()
        if written is not None:
            return written
        shutil.rmtree(self.path, ignore_errors=True)
        bad = [p for p in paths if "\n" in str(p) or "\r" in str(p)]
        if len(ids) != len(paths) or bad:
            raise ValueError(f"need one one-line path per id: {len(ids)} ids, {len(paths)} paths, {bad[:2]!r}")
        write_lines(self.path / "ids.txt", ids)
        write_lines(self.path / "paths.txt", [str(p) for p in paths])
        for name, values in (columns or {}).items():
            write_lines(self.path / f"{name}.txt", [str(v) for v in values])
        write_json(self.path / SPEC, spec)
        return spec

    def ids(self) -> list[str]:
        return read_lines(self.path / "ids.txt")

    def paths(self) -> list[str]:
        return read_lines(self.path / "paths.txt")

    def column(self, name: str) -> list[str]:
        return read_lines(self.path / f"{name}.txt")

    def stage(self, name: str) -> StageFolder:
        return StageFolder(self.path / name)

    def drop(self) -> None:
        """Delete the work folder, its settings first: a part task that then finds none knows the job's work
        was dropped under it, and neither computes nor fails the job."""
        (self.path / SPEC).unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, json.dumps(data).encode())


def write_lines(path: Path, lines: Sequence[str]) -> None:
    write_bytes(path, "".join(f"{line}\n" for line in lines).encode())


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """Ranges [lo, hi) of ``count`` items in chunks of ``size`` (the last shorter; none for no items)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [(lo, min(lo + size, count)) for lo in range(0, count, size)]
