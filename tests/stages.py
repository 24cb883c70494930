"""Helpers for tests that stop a staged job part-way: run its stages up to one, plan that one, and look at
its parts as a worker would find them."""

from __future__ import annotations

from dataclasses import dataclass

from ml.stages.protocol import Plan, Stage, StageFolder, plan_stage, run_stages
from webapp.jobs.models import Job
from worker.stages import OPENERS, StagedJob


@dataclass
class Planned:
    staged: StagedJob
    stage: Stage
    folder: StageFolder
    plan: Plan


def plan_until(job: Job, name: str) -> Planned:
    """The stages of ``job`` before ``name`` run here, and ``name`` planned (none of its parts computed)."""
    staged = OPENERS[job.kind](job, True)
    names = [s.name for s in staged.stages]
    k = names.index(name)
    run_stages(staged.stages[:k], staged.work.path)
    stage = staged.stages[k]
    folder = staged.work.stage(name)
    return Planned(staged, stage, folder, plan_stage(stage, folder))


def done_parts(job: Job, name: str) -> set[int]:
    """The parts of ``job``'s stage ``name`` marked done on disk."""
    from worker.stages import work_of

    folder = work_of(job).stage(name)
    return {int(p.name[5:11]) for p in folder.path.glob("part-*.done")} if folder.path.is_dir() else set()
