"""A newly active index version is loaded in the background while searches go on with the loaded one
(SEARCH_ENGINE_SWAP = "background", the production default), and a starting web process loads the active
version before its first search. Transactional: the loading thread and the web process read committed rows."""

import logging

import pytest

from ml.images import load_rgb
from tests.conftest import MINI, _worker_env, wait_for
from tests.faults.private_services import free_port, start_web, stop_process
from webapp.search import engine
from webapp.search.models import IndexVersion
from webapp.search.services import activate_index

pytestmark = pytest.mark.django_db(transaction=True)
QUERY = MINI / "images" / "233e2de188985424.jpg"  # a London Bridge query


@pytest.fixture
def background_swap(settings, monkeypatch):
    settings.SEARCH_ENGINE_SWAP = "background"
    monkeypatch.setattr(engine, "_loaded", None)  # this process starts with no engine
    monkeypatch.setattr(engine, "_failed", {})
    yield
    engine.wait_for_load(120)


def _copy_of(iv: IndexVersion, **changes) -> IndexVersion:
    fields = {"embedding_set": iv.embedding_set, "path": iv.path, "params": iv.params, "size": iv.size, **changes}
    return IndexVersion.objects.create(**fields)


def test_a_new_version_loads_in_the_background_while_the_old_one_answers(active_index, background_swap):
    first = engine.current_engine()  # nothing loaded yet: this one waits for the load
    assert first.index_version.pk == active_index.pk

    newer = _copy_of(active_index)
    activate_index(newer)
    assert engine.current_engine() is first  # answers at once, from the version it has
    outcome = engine.search_photo(load_rgb(QUERY), top_k=5)
    assert outcome.index_version.pk == active_index.pk and outcome.landmark_id == "1"

    engine.wait_for_load(120)
    swapped = engine.current_engine()
    assert swapped is not first and swapped.index_version.pk == newer.pk
    assert engine.search_photo(load_rgb(QUERY), top_k=5).index_version.pk == newer.pk


def test_a_version_that_fails_to_load_leaves_the_loaded_one_serving(active_index, background_swap, tmp_path, caplog):
    serving = engine.current_engine()
    IndexVersion.objects.update(is_active=False)  # as if its files were lost after it became active
    broken = _copy_of(active_index, path=str(tmp_path / "gone"), is_active=True)

    with caplog.at_level(logging.ERROR, logger="webapp.search.engine"):
        assert engine.current_engine() is serving
        engine.wait_for_load(120)
    assert f"loading index version {broken.pk} failed" in caplog.text
    loader = engine._loader
    assert engine.current_engine() is serving  # still, and no new attempt for RETRY_FAILED_LOAD_SECONDS
    assert engine._loader is loader and not loader.is_alive()


def test_a_starting_web_process_loads_the_active_index_before_any_search(active_index, settings, tmp_path):
    log = tmp_path / "web.log"
    web = start_web(_worker_env(settings), free_port(), log)
    try:
        loaded = f"search engine: index version {active_index.pk} loaded"
        assert wait_for(lambda: loaded in log.read_text(), 120), log.read_text()[-3000:]
    finally:
        stop_process(web)
