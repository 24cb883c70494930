"""The loop closed, in a real browser with a real worker: an admin curates a cluster, starts retrain ->
rebuild the index -> evaluate from the review queue, and sees the new model and index on the versions page
with their evaluation figures, the change against the versions they replaced, and what they came from.
Kept fast: four landmarks, two training steps at 64 px, the baseline preset, a three-query evaluation set."""

import pytest
from django.core.management import call_command

from tests.browser.conftest import check_layout, login
from tests.curation.fixtures import make_review_data
from tests.layouts import make_eval_layout, make_mini_subset
from webapp.jobs.models import JobChain
from webapp.search.models import Evaluation, IndexVersion, ModelVersion
from worker.importing import import_dataset

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_curate_start_the_loop_and_see_the_new_versions(page, live_server, admin_user_role, celery_worker_process,
                                                       tmp_path, settings):
    settings.IMPORT_ROOTS = [str(tmp_path)]
    import_dataset(make_mini_subset(tmp_path / "catalogue", {"1", "2", "6", "7"}))
    evaluation = make_eval_layout(tmp_path / "eval")
    call_command("build_index", "--pipeline", "baseline")  # the index the loop's will replace
    before = IndexVersion.objects.get()
    cluster = make_review_data()

    login(page, live_server, "operator", "pw-operator-123")
    page.goto(f"{live_server.url}/curation/clusters/{cluster.pk}/")
    page.wait_for_load_state()
    page.locator(".review-card").first.focus()
    page.keyboard.press("Shift+A")
    page.wait_for_function("document.querySelectorAll('.review-card.selected').length === 3")
    page.keyboard.press("a")
    # Thumbnails are made on first view, beside a worker loading torch on two cores: give it time.
    page.wait_for_selector("text=3 images: accept suggestion. No open clusters left.", timeout=60_000)

    page.goto(f"{live_server.url}/curation/")
    page.fill("#id_loop-evaluation_set", str(evaluation))
    page.select_option("#id_loop-pipeline", "baseline")
    page.fill("#id_loop-max_steps", "2")
    page.fill("#id_loop-image_size", "64")
    page.fill("#id_loop-batch_size", "8")
    check_layout(page, "loop-form")
    page.click("#start-loop")
    page.wait_for_selector("text=Started: Retrain → rebuild the index → evaluate")
    chain = JobChain.objects.get()
    # The loops section follows the jobs and reloads the page when the loop has ended.
    page.wait_for_selector(f"[data-loop='{chain.pk}'].state-succeeded, [data-loop='{chain.pk}'].state-stopped",
                           timeout=300_000)
    assert chain.status()[0] == "succeeded", chain.status()[1]
    assert "all 3 steps succeeded" in page.locator(f"[data-loop='{chain.pk}'] .loop-status").inner_text()

    model = ModelVersion.objects.exclude(checkpoint="").get()
    index = IndexVersion.objects.get(is_active=True)
    figures = Evaluation.objects.get(index_version=index, dataset=str(evaluation)).figures
    row = page.locator(f"tr[data-index='{index.pk}']")
    assert row.locator("[data-figure='map']").inner_text().startswith(f"{figures['map']:.1f}")
    assert row.locator("[data-figure='gap'] .change").count() == 1  # against the index it replaced
    assert Evaluation.objects.filter(index_version=before, dataset=str(evaluation)).exists()
    provenance = row.locator(".provenance").inner_text()
    assert "catalogue" in provenance and "3 curator decisions" in provenance and f"Index #{before.pk}" in provenance
    model_row = page.locator(f"tr[data-model='{model.pk}']")
    assert "recipe recommended" in model_row.inner_text() and model_row.locator(".change").count() == 4  # the loop offers it first
    check_layout(page, "versions-after-loop")
