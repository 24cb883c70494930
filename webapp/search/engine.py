"""Query-time search for the web app and the API: one photo in, landmark candidates and ranked results
with their evidence out. The active index version and its models are loaded once per process and
swapped when another version is published; labels are read from the database whenever they changed,
so a relabel counts at once without rebuilding the index."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from PIL import Image as PILImage

from ml.index import load_index
from ml.pipeline import SearchDatabase, get_pipeline, load_models, search_one, with_models
from ml.regional import load_regions
from ml.spatial import LocalFeatureStore
from ml.whitening import Whitening
from webapp.catalog.models import CatalogRevision, Image
from webapp.search.models import IndexVersion

_lock = threading.Lock()
_loaded: _Engine | None = None


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


def labels_of(ids: list[str]) -> list[str | None]:
    """Current labels by index position; deleted and taken-down images vote for nothing."""
    current: dict[str, str | None] = {}
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        current.update(Image.objects.filter(external_id__in=chunk, taken_down=False)
                       .values_list("external_id", "landmark__external_id"))
    return [current.get(i) for i in ids]


def hidden_ids(ids: list[str]) -> set[str]:
    """Of ``ids``, those deleted or taken down since the index was built (they never appear in results)."""
    visible = set(Image.objects.filter(external_id__in=ids, taken_down=False).values_list("external_id", flat=True))
    return set(ids) - visible


def _load(iv: IndexVersion) -> _Engine:
    pipeline = get_pipeline(iv.params.get("pipeline"))
    models_spec = "+".join(iv.params.get("models", []))
    pipeline = with_models(pipeline, models_spec) if models_spec else pipeline
    if iv.params.get("image_size"):  # queries are embedded the way the indexed vectors were
        pipeline = replace(pipeline, image_size=int(iv.params["image_size"]),
                           scales=tuple(iv.params.get("scales") or pipeline.scales),
                           flip=bool(iv.params.get("flip", False)))  # indexes built before flip TTA: unflipped
    index = load_index(iv.path)  # a single or a sharded folder: vectors memory-mapped either way
    features = LocalFeatureStore(iv.params["feature_dir"], pipeline.local_features) if pipeline.uses_local_features else None
    # Learned whitening, when the build used it: the indexed vectors have it, each query gets it too.
    # Region descriptors, when the build made them (an index built before a pipeline re-scored by regions
    # has none: its searches skip that step).
    database = SearchDatabase(index, pipeline, labels_of(index.ids), features, Whitening.load(iv.path),
                              load_regions(iv.path))
    side = round(pipeline.image_size * max(pipeline.scales))
    if pipeline.uses_local_features:
        side = max(side, pipeline.local_features.max_side)
    return _Engine(iv, load_models(pipeline), database, _labels_stamp(), side)


def current_engine() -> _Engine:
    global _loaded
    iv = IndexVersion.objects.filter(is_active=True).select_related("embedding_set__model_version").first()
    if iv is None:
        raise NoIndexError("no search index yet: import images, then run `python manage.py build_index`")
    with _lock:
        if _loaded is None or (_loaded.index_version.pk, _loaded.index_version.path) != (iv.pk, iv.path):
            _loaded = _load(iv)
        else:
            stamp = _labels_stamp()
            if stamp != _loaded.labels_stamp:
                _loaded.database.labels = labels_of(_loaded.database.ids)
                _loaded.labels_stamp = stamp
        return _loaded


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
    if not options.use_labels:
        from ml.rerank import LabelRerankConfig

        pipeline = replace(pipeline, label_rerank=LabelRerankConfig(method="none"))
    if pipeline is database.pipeline:
        return database
    return replace(database, pipeline=pipeline)
