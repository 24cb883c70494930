"""The curation loop closed, on the server: an admin starts retrain -> rebuild the index -> evaluate from the
review pages; its jobs run in turn (here in the foreground, one after the other, as the workers would);
the new model and index record what they were derived from, and the versions page shows their figures on
the chosen evaluation set with the change against the versions they replaced."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from tests.layouts import make_eval_layout, make_mini_subset
from webapp.catalog.models import Image, Landmark
from webapp.curation import actions
from webapp.curation.models import CleaningRun
from webapp.jobs.models import Job, JobChain
from webapp.search.models import Evaluation, IndexVersion, ModelVersion
from worker.importing import import_dataset
from worker.runner import execute_job

pytestmark = pytest.mark.django_db
TINY = {"loop-recipe": "current", "loop-pipeline": "baseline", "loop-max_steps": "2", "loop-image_size": "64",
        "loop-batch_size": "8"}


@pytest.fixture
def small_catalogue(db, tmp_path, settings):
    """Four landmarks of landmarks-mini (17 photos) and an evaluation set beside them, both importable."""
    settings.IMPORT_ROOTS = [str(tmp_path)]
    import_dataset(make_mini_subset(tmp_path / "catalogue", {"1", "2", "6", "7"}))
    return make_eval_layout(tmp_path / "eval")


def test_the_loop_records_provenance_and_shows_figures_against_the_parent(small_catalogue, client, admin_user_role,
                                                                         curator_user):
    call_command("build_index", "--pipeline", "baseline")  # the index the loop's will replace
    before = IndexVersion.objects.get()
    run = CleaningRun.objects.create()
    image = Image.objects.filter(landmark__name="colosseum").first() or Image.objects.first()
    change = actions.relabel([image], Landmark.objects.get(name="london_bridge"), acting_user=curator_user)[0]

    client.force_login(admin_user_role)
    assert 'id="start-loop"' in client.get(reverse("curation-queue")).content.decode()
    client.post(reverse("loop-start"), {**TINY, "loop-evaluation_set": str(small_catalogue)})
    chain = JobChain.objects.get()
    assert [s["kind"] for s in chain.steps] == ["train", "build_index", "evaluate"]
    for step in range(3):  # each job exists only once the one before it succeeded
        job = chain.jobs.get(chain_step=step)
        assert execute_job(job.pk).state == Job.State.SUCCEEDED, job.error
    assert chain.status()[0] == "succeeded"

    model = ModelVersion.objects.exclude(checkpoint="").get()
    assert model.parent.name == "tf_efficientnet_lite0-imagenet"  # the model active before it
    assert model.params["provenance"] == {"datasets": ["catalogue"], "images": 17, "cleaning_run": run.pk,
                                          "decisions": 1, "decisions_upto": change.pk, "recipe": "current"}
    assert model.params["train"]["max_steps"] == 2 and model.params["train"]["image_size"] == 64
    index = IndexVersion.objects.get(is_active=True)
    assert index.parent == before and index.embedding_set.model_version == model
    assert index.params["provenance"]["decisions_upto"] == change.pk and index.params["config"]
    assert set(Evaluation.objects.values_list("index_version", flat=True)) == {index.pk, before.pk}
    figures = Evaluation.objects.get(index_version=index).figures
    assert set(figures) == {"map", "map_no_labels", "gap", "recall_at_1", "queries"} and figures["queries"] == 3
    assert all(0 <= figures[k] <= 100 for k in ("map", "map_no_labels", "gap", "recall_at_1"))

    page = client.get(reverse("model-list"), {"eval": str(small_catalogue)}).content.decode()
    row = page[page.index(f'data-index="{index.pk}"'):].split("</tr>")[0]
    assert f"{figures['map']:.1f}" in row and 'title="against its parent"' in row
    assert f"cleaning run #{run.pk}" in row and f"label changes up to #{change.pk}" in row and "pipeline baseline" in row
    assert f"parent: Index #{before.pk}" in row
    model_row = page[page.index(f'data-model="{model.pk}"'):].split("</tr>")[0]
    assert "recipe current" in model_row and "parent: tf_efficientnet_lite0-imagenet" in model_row
    assert f"figures of index #{index.pk}" in model_row and 'class="change' in model_row
    assert "all 3 steps succeeded" in page


def test_the_loop_refuses_an_evaluation_set_it_cannot_read(small_catalogue, client, admin_user_role, tmp_path):
    client.force_login(admin_user_role)
    response = client.post(reverse("loop-start"), {**TINY, "loop-evaluation_set": str(tmp_path / "catalogue")},
                           follow=True)
    assert "The loop did not start." in response.content.decode() and "gnd.json" in response.content.decode()
    outside = client.post(reverse("loop-start"), {**TINY, "loop-evaluation_set": "/etc"}, follow=True)
    assert "is not under an allowed folder" in outside.content.decode()
    assert not JobChain.objects.exists()


def test_only_admins_start_the_loop(small_catalogue, client, curator_user):
    client.force_login(curator_user)
    assert 'id="start-loop"' not in client.get(reverse("curation-queue")).content.decode()
    assert client.post(reverse("loop-start"), {**TINY, "loop-evaluation_set": str(small_catalogue)}).status_code == 403
    assert not JobChain.objects.exists()
