"""Evaluate a retrieval pipeline on any data set in the evaluation layout (data README):

    DATASET/images/<id>.jpg, DATASET/queries/<id>.jpg (looked up first for query ids), DATASET/gnd.json =
    {"images": [...], "queries": {qid: {"easy", "hard", "junk", "bbx"?}}, "labels": {id: landmark}?}

``evaluate`` prepares the database once (embeddings, DBA, index, local features), then runs
``ml.pipeline.search_one`` for every query, exactly as the product does, and scores the rankings:
revisited-Oxford Medium / Hard mAP (percent, trapezoidal AP), Kaggle mAP@100 (positives = easy + hard,
junk removed), recall@1 / @10, and the time per query and for the database.
With ``use_labels=False`` the ``labels`` entry of gnd.json is never looked at.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.metrics import mean_average_precision_at_k, recall_at_k, revisited_map
from ml.models import LandmarkNet
from ml.pipeline import (
    PipelineConfig,
    SearchDatabase,
    SearchResult,
    database_regions,
    dense_fill,
    embed_database,
    get_pipeline,
    load_models,
    prepare_database,
    ranking_depth,
    search_one,
    with_models,
)
from ml.regional import whole_image_vectors

Progress = Callable[[int, int], None]
RESULT_KEYS = (
    "medium", "hard", "map_at_100", "recall_at_1", "recall_at_10", "seconds_per_query",
    "database_seconds", "pipeline", "rankings",
)


class LayoutError(ValueError):
    """The directory is not in the evaluation layout; the message says what is missing or wrong."""


@dataclass
class EvalQuery:
    query_id: str
    path: Path
    easy: list[str]
    hard: list[str]
    junk: list[str]
    bbx: list[float] | None


@dataclass
class EvalLayout:
    root: Path
    database_ids: list[str]
    database_paths: list[Path]
    queries: list[EvalQuery]
    labels: dict[str, Hashable] | None


def read_layout(dataset_dir: str | os.PathLike, use_labels: bool = True) -> EvalLayout:
    """Check and read a data set in the evaluation layout; raises LayoutError naming what is wrong."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a directory")
    gnd_path = root / "gnd.json"
    if not gnd_path.is_file():
        raise LayoutError(f"{root} has no gnd.json: not in the evaluation layout (images/, queries/, gnd.json)")
    try:
        gnd = json.loads(gnd_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{gnd_path} is not readable JSON: {exc}") from exc
    if not isinstance(gnd, dict) or not isinstance(gnd.get("images"), list) or not isinstance(gnd.get("queries"), dict):
        raise LayoutError(f"{gnd_path} needs an 'images' list and a 'queries' object")
    db_ids = [str(i) for i in gnd["images"]]
    if not db_ids or not gnd["queries"]:
        raise LayoutError(f"{gnd_path} lists no database images or no queries")
    if len(set(db_ids)) != len(db_ids):
        raise LayoutError(f"{gnd_path}: database ids repeat")
    db_paths = [_image_path(root, "images", i) for i in db_ids]
    missing = [i for i, p in zip(db_ids, db_paths, strict=True) if p is None]
    if missing:
        raise LayoutError(f"{root}/images lacks {len(missing)} database image(s), e.g. {missing[0]}.jpg")
    queries = [_read_query(root, str(qid), entry) for qid, entry in gnd["queries"].items()]
    labels = None
    if use_labels and gnd.get("labels") is not None:  # with use_labels=False the key is never looked at
        if not isinstance(gnd["labels"], dict):
            raise LayoutError(f"{gnd_path}: 'labels' must map database ids to landmark ids")
        labels = {str(k): v for k, v in gnd["labels"].items()}
    return EvalLayout(root, db_ids, db_paths, queries, labels)


def _image_path(root: Path, folder: str, image_id: str) -> Path | None:
    if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
        raise LayoutError(f"image id {image_id!r} cannot name a file")
    path = root / folder / f"{image_id}.jpg"
    return path if path.is_file() else None


def _read_query(root: Path, qid: str, entry: Any) -> EvalQuery:
    if not isinstance(entry, dict):
        raise LayoutError(f"gnd.json: query {qid} must be an object with easy/hard/junk lists")
    path = _image_path(root, "queries", qid) or _image_path(root, "images", qid)
    if path is None:
        raise LayoutError(f"query image {qid}.jpg is in neither {root}/queries nor {root}/images")
    bbx = entry.get("bbx")
    if bbx is not None and (not isinstance(bbx, list) or len(bbx) != 4):
        raise LayoutError(f"gnd.json: query {qid} bbx must be [x1, y1, x2, y2]")
    lists = {name: [str(i) for i in entry.get(name, [])] for name in ("easy", "hard", "junk")}
    return EvalQuery(qid, path, lists["easy"], lists["hard"], lists["junk"], bbx)


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class EvalCache:
    """Reuse across evaluations of one data set (benchmarks): models, database vectors and their time."""

    feature_dir: Path
    models: dict[tuple[str, ...], list[LandmarkNet]] = field(default_factory=dict)
    vectors: dict[tuple, tuple[np.ndarray, float]] = field(default_factory=dict)
    regions: dict[tuple, tuple[np.ndarray, float]] = field(default_factory=dict)  # (N, R, D), seconds
    feature_seconds: float | None = None  # time the local features of the database took when computed


@dataclass
class EvalRun:
    metrics: dict[str, Any]
    results: dict[str, SearchResult]
    layout: EvalLayout
    database: SearchDatabase
    models: list[LandmarkNet]


def evaluate(
    dataset_dir: str | os.PathLike,
    pipeline: str | PipelineConfig | None = None,
    model_spec: str | None = None,
    use_labels: bool = True,
    progress: Progress | None = None,
    cache: EvalCache | None = None,
) -> dict[str, Any]:
    """Metrics of ``pipeline`` (a preset name or config; default: the product default) on a data set.

    ``model_spec`` (a checkpoint path or ``load_model`` spec, 'a+b' for an ensemble) replaces the
    pipeline's models. Returns exactly ``RESULT_KEYS``.
    """
    return run_evaluation(dataset_dir, pipeline, model_spec, use_labels, progress, cache).metrics


def run_evaluation(
    dataset_dir: str | os.PathLike,
    pipeline: str | PipelineConfig | None = None,
    model_spec: str | None = None,
    use_labels: bool = True,
    progress: Progress | None = None,
    cache: EvalCache | None = None,
) -> EvalRun:
    """``evaluate`` plus the per-query search results (hits, recognition, timings)."""
    layout = read_layout(dataset_dir, use_labels)
    config = with_models(get_pipeline(pipeline), model_spec)
    tmp = None
    if cache is None:
        tmp = Path(tempfile.mkdtemp(prefix="landmarks-eval-"))
        cache = EvalCache(tmp / "features")
    try:
        database, db_seconds = _prepare(layout, config, cache, progress)
        models = cache.models[tuple(config.models)]
        results: dict[str, SearchResult] = {}
        offset = len(layout.database_ids)
        total = offset + len(layout.queries)
        for n, query in enumerate(layout.queries, start=1):
            results[query.query_id] = search_one(
                database, models, query.path, top_k=ranking_depth(database.index.count), bbx=query.bbx
            )
            if progress is not None:
                progress(offset + n, total)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    metrics = score(layout, results, config, db_seconds)
    return EvalRun(metrics, results, layout, database, models)


def _prepare(
    layout: EvalLayout, config: PipelineConfig, cache: EvalCache, progress: Progress | None
) -> tuple[SearchDatabase, float]:
    key = tuple(config.models)
    if key not in cache.models:
        cache.models[key] = load_models(config)  # loading weights is not database preparation
    models = cache.models[key]
    n = len(layout.database_ids)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * n // max(total, 1), n), n + len(layout.queries))

    vkey = (str(layout.root), key, config.model_weights, config.image_size, tuple(config.scales), config.flip)
    started = time.perf_counter()
    regions = None
    dense = dense_fill(config, cache.feature_dir, layout.database_ids)  # from the embedding's own passes
    if config.regional.enabled:  # one pass gives regions and vectors (region 0 is the whole image)
        rkey = (*vkey, config.regional.levels, config.regional.overlap)
        if rkey not in cache.regions:
            found = database_regions(models, layout.database_paths, config, progress=report, dense=dense)
            cache.regions[rkey] = (found, time.perf_counter() - started)
        regions, embed_seconds = cache.regions[rkey]
        vectors = whole_image_vectors(regions)
    else:
        if vkey not in cache.vectors:
            vectors = embed_database(models, layout.database_paths, config, progress=report, dense=dense)
            cache.vectors[vkey] = (vectors, time.perf_counter() - started)
        vectors, embed_seconds = cache.vectors[vkey]
    started = time.perf_counter()
    had_features = cache.feature_seconds is not None
    database = prepare_database(
        models, list(zip(layout.database_ids, layout.database_paths, strict=True)), config, layout.labels,
        feature_dir=cache.feature_dir, vectors=vectors, progress=report, regions=regions,
    )
    prep_seconds = time.perf_counter() - started
    if config.uses_local_features:
        if had_features:
            prep_seconds += cache.feature_seconds  # cached: count the time it took when computed
        else:
            cache.feature_seconds = prep_seconds
    return database, embed_seconds + prep_seconds


def score(
    layout: EvalLayout, results: dict[str, SearchResult], config: PipelineConfig, database_seconds: float
) -> dict[str, Any]:
    """The metrics dict (``RESULT_KEYS``) of the rankings in ``results``."""
    rankings = {q.query_id: [h.image_id for h in results[q.query_id].hits] for q in layout.queries}
    depth = min(len(r) for r in rankings.values())
    ranks = np.array([rankings[q.query_id][:depth] for q in layout.queries], dtype=object).T
    gnd = [{"easy": q.easy, "hard": q.hard, "junk": q.junk} for q in layout.queries]
    revisited = revisited_map(ranks, gnd)
    solution, predictions = {}, {}
    for q in layout.queries:
        positives = set(q.easy) | set(q.hard)
        if positives:
            junk = set(q.junk)
            solution[q.query_id] = positives
            predictions[q.query_id] = [i for i in rankings[q.query_id] if i not in junk]
    has_positives = bool(solution)
    seconds = [r.timings.get("total", 0.0) for r in results.values()]
    return {
        "medium": revisited["medium"],
        "hard": revisited["hard"],
        "map_at_100": 100.0 * mean_average_precision_at_k(predictions, solution, 100) if has_positives else None,
        "recall_at_1": 100.0 * recall_at_k(predictions, solution, 1) if has_positives else None,
        "recall_at_10": 100.0 * recall_at_k(predictions, solution, 10) if has_positives else None,
        "seconds_per_query": float(np.mean(seconds)) if seconds else 0.0,
        "database_seconds": float(database_seconds),
        "pipeline": {"name": config.name, "parameters": asdict(config)},
        "rankings": rankings,
    }
