"""Query-time search for the web app and the API: one photo in, landmark candidates and ranked results
with their evidence out. The active index version and its models are loaded once per process; labels are
read from the database whenever they changed, so a relabel counts at once without rebuilding the index.

When another version is published (or rolled back to), the process loads it in a background thread and
keeps answering from the version it has until the new one is ready (``SEARCH_ENGINE_SWAP = "background"``):
loading reads the models and the label of every indexed image (800 queries of 5,000 ids at 4 M images),
and no search should wait for that. Only a process with no engine yet loads while its request waits;
``warm_up`` starts that first load as a web process starts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import connection
from PIL import Image as PILImage

from ml.pipeline import SearchDatabase, load_models, open_database, search_one
from ml.weights import weights_digest
from webapp.catalog.labels import hidden_ids, labels_of
from webapp.catalog.models import CatalogRevision
from webapp.search.models import IndexVersion

log = logging.getLogger(__name__)
RETRY_FAILED_LOAD_SECONDS = 30  # a version whose background load failed is tried again after this

_lock = threading.Lock()  # guards the three globals below
_loaded: _Engine | None = None
_loader: threading.Thread | None = None  # the background load in progress, if any
_failed: dict[tuple[int, str], float] = {}  # version -> when its background load failed
_load_lock = threading.Lock()  # one load at a time per process


class NoIndexError(RuntimeError):
    """No index has been built yet: search cannot run."""


@dataclass
class _Engine:
    index_version: IndexVersion
    models: list
    database: SearchDatabase
    labels_stamp: int
    decode_side: int | None = None  # the largest image side the pipeline looks at (see decode_side())


@dataclass
class Options:
    """What a user may switch on the results page."""

    verify: bool = True  # spatial verification of the top-N
    query_expansion: bool = True  # QE over verified images (and alpha-QE when the pipeline has it)
    use_labels: bool = True  # label-aware re-ranking and recognition

    @classmethod
    def from_dict(cls, data: dict | None) -> Options:
        data = data or {}
        return cls(**{k: bool(data[k]) for k in ("verify", "query_expansion", "use_labels") if k in data})


@dataclass
class Outcome:
    index_version: IndexVersion
    landmark_id: str | None  # the dataset's landmark id, or None: no landmark recognised
    confidence: float | None
    candidates: list[tuple[str, float]]
    hits: list  # ml.pipeline.Hit, best first
    seconds: float


def _labels_stamp() -> int:
    """Moves whenever labels or the searchable set change (relabel, takedown, import, delete): one query."""
    return CatalogRevision.current()


def _key(iv: IndexVersion) -> tuple[int, str]:
    return iv.pk, iv.path


def _load(iv: IndexVersion) -> _Engine:
    # Everything as the index recorded it at build time (models, sizes, scales, flip, every re-ranking
    # setting), whatever the presets say now.
    pipeline = iv.pipeline_config()
    _check_models(iv)
    database = open_database(iv.path, pipeline, iv.params["feature_dir"], dense=bool(iv.params.get("dense")))
    database.labels = labels_of(database.ids)
    side = round(pipeline.image_size * max(pipeline.scales))
    if pipeline.uses_local_features:
        side = max(side, pipeline.local_features.max_side)
    return _Engine(iv, load_models(pipeline), database, _labels_stamp(), side)


def _check_models(iv: IndexVersion) -> None:
    """Log loudly when a model's weights file changed since the index was built: its queries would then be
    embedded unlike its vectors."""
    for model in iv.params.get("models") or []:
        recorded = model.get("digest") if isinstance(model, dict) else None
        if recorded and weights_digest(model["spec"]) != recorded:
            log.error("index version %s: the weights of %s changed since it was built; rebuild the index",
                      iv.pk, model["spec"])


def _active_version() -> IndexVersion:
    iv = IndexVersion.objects.filter(is_active=True).select_related("embedding_set__model_version").first()
    if iv is None:
        raise NoIndexError("no search index yet: import images, then run `python manage.py build_index`")
    return iv


def current_engine() -> _Engine:
    """The engine to search with: the active version's or, while that one loads in the background, the
    one this process has."""
    iv = _active_version()
    with _lock:
        engine = _loaded
        if engine is not None and (_key(engine.index_version) == _key(iv) or _swap_in_background(iv)):
            _refresh_labels(engine)
            return engine
    return _load_now(iv)


def _refresh_labels(engine: _Engine) -> None:
    stamp = _labels_stamp()
    if stamp != engine.labels_stamp:
        engine.database.labels = labels_of(engine.database.ids)
        engine.labels_stamp = stamp


def _load_now(iv: IndexVersion) -> _Engine:
    """Load ``iv`` while the caller waits: nothing is loaded yet, or SEARCH_ENGINE_SWAP is "blocking"."""
    global _loaded
    with _load_lock:
        with _lock:
            if _loaded is not None and _key(_loaded.index_version) == _key(iv):
                return _loaded  # another request loaded it meanwhile
        engine = _load(iv)
        with _lock:
            _loaded = engine
        return engine


def _swap_in_background(iv: IndexVersion) -> bool:
    """Start loading ``iv`` in a background thread (unless it failed to load a moment ago); True when the
    caller should go on with the engine it has. Called with ``_lock`` held."""
    if settings.SEARCH_ENGINE_SWAP != "background":
        return False
    failed_at = _failed.get(_key(iv))
    if failed_at is None or time.monotonic() - failed_at >= RETRY_FAILED_LOAD_SECONDS:
        _start_loader(iv)
    return True


def _start_loader(iv: IndexVersion) -> None:
    """Load ``iv`` in a background thread unless a background load is running. Called with ``_lock`` held."""
    global _loader
    if _loader is None or not _loader.is_alive():
        _loader = threading.Thread(target=_load_in_background, args=(iv,), name="search-engine-load", daemon=True)
        _loader.start()


def _load_in_background(iv: IndexVersion) -> None:
    global _loaded
    try:
        with _load_lock:
            engine = _load(iv)
        with _lock:
            _loaded = engine
            _failed.pop(_key(iv), None)
        log.info("search engine: index version %s loaded", iv.pk)
    except Exception:
        log.exception("search engine: loading index version %s failed; searching the loaded one still", iv.pk)
        with _lock:
            _failed[_key(iv)] = time.monotonic()
    finally:
        connection.close()  # this thread's own database connection


def wait_for_load(timeout: float | None = None) -> None:
    """Return once the background load in progress, if any, has finished (or after ``timeout`` seconds)."""
    loader = _loader
    if loader is not None:
        loader.join(timeout)


def warm_up() -> None:
    """Load the active version in a background thread if this process has no engine yet (a web process
    starting), so that its first search does not wait for the models and labels. Without an index, or a
    database to ask, there is nothing to load: the first search says why."""
    try:
        iv = _active_version()
    except Exception as exc:
        log.info("search engine: nothing to warm up (%s)", exc)
        return
    with _lock:
        if _loaded is None:
            _start_loader(iv)


def decode_side() -> int | None:
    """How large an upload must be decoded for the loaded pipeline (global descriptor at its largest scale,
    local features), so a large JPEG can be decoded at reduced scale; None before this process has
    loaded an index (no query: the first upload is decoded whole). After a switch to another index the
    next upload may still be sized for the previous one, which changes its resolution a little, never
    what can be searched."""
    loaded = _loaded
    return loaded.decode_side if loaded is not None else None


def search_photo(image: PILImage.Image, top_k: int = 100, options: Options | None = None) -> Outcome:
    """Search the active index for ``image`` (an RGB PIL image, EXIF rotation applied)."""
    options = options or Options()
    engine = current_engine()
    database = _with_options(engine.database, options)
    started = time.perf_counter()
    # A few more than asked for, so hits hidden since the build (takedowns, deletions) can be dropped.
    result = search_one(database, engine.models, image, top_k=top_k + 20)
    hidden = hidden_ids([h.image_id for h in result.hits])
    hits = [h for h in result.hits if h.image_id not in hidden][:top_k]
    rec = result.recognition
    landmark = str(rec.landmark_id) if rec and rec.landmark_id is not None else None
    return Outcome(engine.index_version, landmark, rec.confidence if rec else None,
                   [(str(lid), float(c)) for lid, c in (rec.candidates if rec else [])][:5],
                   hits, time.perf_counter() - started)


def _with_options(database: SearchDatabase, options: Options) -> SearchDatabase:
    pipeline = database.pipeline
    if not options.verify:
        pipeline = replace(pipeline, verification=replace(pipeline.verification, top_n=0))
    if not options.query_expansion:
        pipeline = replace(pipeline, qe=replace(pipeline.qe, k=0),
                           verification=replace(pipeline.verification, qe_k=0))
    if not options.use_labels:  # neither the re-ranking step nor the score's label term
        from ml.rerank import LabelRerankConfig

        pipeline = replace(pipeline, label_rerank=LabelRerankConfig(method="none"),
                           scores=replace(pipeline.scores, label_weight=0.0))
    if pipeline is database.pipeline:
        return database
    return replace(database, pipeline=pipeline)
