"""The curation loop closed: retrain -> rebuild the index -> evaluate, as jobs that run in turn (a JobChain,
``webapp/jobs/chains.py``). The model is trained with a recipe (``ml.recipes``), the index rebuilt with it
(``takes`` the model version the training made), and the new index evaluated on the admin's evaluation set
beside the index it replaced (``takes`` the index version), so the versions page shows what the round of
curation changed."""

from __future__ import annotations

from ml.recipes import recipe_params
from webapp.jobs.chains import start_chain
from webapp.jobs.models import Job, JobChain

TITLE = "Retrain → rebuild the index → evaluate"


def start_loop(user, recipe: str, evaluation_set: str, pipeline: str, train: dict | None = None) -> JobChain:
    """``train``: overrides of the recipe's training settings (``ml.train.TrainConfig`` fields)."""
    steps = [
        {"kind": Job.Kind.TRAIN, "params": recipe_params(recipe, train=train)},
        {"kind": Job.Kind.BUILD_INDEX, "params": {"pipeline": pipeline}, "takes": {"model_version": "model_version"}},
        {"kind": Job.Kind.EVALUATE, "params": {"path": evaluation_set, "with_parent": True},
         "takes": {"index_version": "index_version"}},
    ]
    return start_chain(TITLE, steps, user)


def loops(count: int = 5) -> list[JobChain]:
    return list(JobChain.objects.filter(title=TITLE).select_related("created_by")[:count])
