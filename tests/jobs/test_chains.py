"""Jobs that run in turn: each step starts when the one before it succeeded, with what that one made in its
parameters; a failure stops the chain and says where and why, a retry goes on from it, and the watchdog
starts a step the runner could not."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.layouts import make_mini_subset
from webapp.jobs.chains import start_chain
from webapp.jobs.models import Job, JobChain
from webapp.jobs.services import retry_job
from worker.runner import execute_job
from worker.watchdog import recover_jobs

pytestmark = pytest.mark.django_db


def import_then_thumbnails(path) -> list[dict]:
    return [{"kind": Job.Kind.IMPORT, "params": {"path": str(path), "thumbnails": False, "index": False}},
            {"kind": Job.Kind.THUMBNAILS, "params": {"missing": True}, "takes": {"expected": "images_added"}}]


def test_each_step_starts_when_the_one_before_succeeded_with_what_it_made(tmp_path):
    chain = start_chain("import, then thumbnails", import_then_thumbnails(make_mini_subset(tmp_path / "d", {"6"})))
    first = chain.jobs.get()
    assert (first.chain_step, first.state, first.queued) == (0, Job.State.QUEUED, True)
    assert chain.status()[0] == "running"

    assert execute_job(first.pk).state == Job.State.SUCCEEDED
    second = chain.jobs.get(chain_step=1)
    assert second.kind == Job.Kind.THUMBNAILS and second.params == {"missing": True, "expected": 4}
    assert execute_job(first.pk).state == Job.State.SUCCEEDED and chain.jobs.count() == 2  # not started twice
    assert execute_job(second.pk).state == Job.State.SUCCEEDED
    assert JobChain.objects.get(pk=chain.pk).status() == ("succeeded", "all 2 steps succeeded")


def test_a_failed_step_stops_the_chain_and_a_retry_goes_on_from_it(tmp_path):
    folder = tmp_path / "later"
    chain = start_chain("import, then thumbnails", import_then_thumbnails(folder))
    failed = execute_job(chain.jobs.get().pk)
    assert failed.state == Job.State.FAILED and not chain.jobs.filter(chain_step=1).exists()
    state, said = chain.status()
    assert state == "stopped" and said.startswith(f"stopped at step 1 of 2 (Import data set, job #{failed.pk}): failed: ")
    assert str(folder) in said

    make_mini_subset(folder, {"6"})
    again = retry_job(failed)
    assert (again.chain_id, again.chain_step) == (chain.pk, 0)
    execute_job(again.pk)
    assert chain.status()[0] == "running" and chain.jobs.get(chain_step=1).params["expected"] == 4


def test_a_step_missing_its_input_stops_the_chain_saying_so(tmp_path):
    steps = import_then_thumbnails(make_mini_subset(tmp_path / "d", {"6"}))
    steps[1]["takes"] = {"model_version": "model_version"}  # an import makes no model
    chain = start_chain("wrong chain", steps)
    execute_job(chain.jobs.get().pk)
    stopped = chain.jobs.get(chain_step=1)
    assert stopped.state == Job.State.FAILED and "reported no model_version" in stopped.message
    assert chain.status()[0] == "stopped"


def test_the_watchdog_starts_a_step_whose_predecessor_succeeded_without_starting_it(tmp_path):
    chain = start_chain("import, then thumbnails", import_then_thumbnails(tmp_path))
    # The step's process recorded the success and died before it could start the next step.
    Job.objects.filter(pk=chain.jobs.get().pk).update(state=Job.State.SUCCEEDED, result={"images_added": 7},
                                                      finished_at=timezone.now() - timedelta(minutes=2))
    started = recover_jobs()
    second = chain.jobs.get(chain_step=1)
    assert started == [second.pk] and second.params["expected"] == 7
    assert recover_jobs() == []  # once
