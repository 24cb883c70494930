"""Evaluate a retrieval pipeline on any data set in the evaluation layout (data README):

    DATASET/images/<id>.jpg, DATASET/queries/<id>.jpg (looked up first for query ids), DATASET/gnd.json =
    {"images": [...], "queries": {qid: {"easy", "hard", "junk", "bbx"?}}, "labels": {id: landmark}?}

``evaluate`` builds the database once with the product's own build stages (``ml.stages.index_build``:
embeddings, local features, regions, whitening and DBA, index shards), then runs
``ml.pipeline.search_one`` for every query, exactly as the product does, and scores the rankings:
revisited-Oxford Medium / Hard mAP (percent, trapezoidal AP), Kaggle mAP@100 (positives = easy + hard,
junk removed), recall@1 / @10, recognition GAP (percent; with labels only: each query's landmark is its
positives' label), and the time per query and for the database.
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

from ml.metrics import global_average_precision, mean_average_precision_at_k, recall_at_k, revisited_map
from ml.models import LandmarkNet
from ml.pipeline import (
    PipelineConfig,
    SearchDatabase,
    SearchResult,
    get_pipeline,
    ranking_depth,
    search_one,
    with_models,
)
from ml.recognize import gap_predictions
from ml.stages.index_build import build_database, embed_collection
from ml.weights import shared_models

Progress = Callable[[int, int], None]
RESULT_KEYS = (
    "medium", "hard", "map_at_100", "recall_at_1", "recall_at_10", "gap", "seconds_per_query",
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
    """Reuse across evaluations of one data set (benchmarks): the embedding sets (one per way of embedding,
    with the seconds they took) and the feature caches, in ``root``."""

    root: Path
    sets: dict[tuple, tuple[Path, float]] = field(default_factory=dict)
    feature_seconds: float | None = None  # time the local features of the database took when computed

    @property
    def feature_dir(self) -> Path:
        return self.root / "features"


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
        cache = EvalCache(tmp)
    try:
        database, db_seconds = _prepare(layout, config, cache, progress)
        models = shared_models(config.models)
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
    """The database built by the product's stages (``ml.stages.index_build``) in a folder of ``cache``,
    from an embedding set made once per way of embedding; and the seconds it took."""
    n = len(layout.database_ids)

    def report(_stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * n // max(total, 1), n), n + len(layout.queries))

    shared_models(config.models)  # loading weights is not database preparation
    items = list(zip(layout.database_ids, layout.database_paths, strict=True))
    key = (str(layout.root), tuple(config.models), config.model_weights, config.image_size, tuple(config.scales),
           config.flip, config.regional.levels, config.regional.overlap)
    if key not in cache.sets:
        started = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="set-", dir=_mkdir(cache.root)))
        embeddings = embed_collection(items, config, folder, cache.feature_dir, report)
        cache.sets[key] = (embeddings, time.perf_counter() - started)
    embeddings, embed_seconds = cache.sets[key]
    started = time.perf_counter()
    had_features = cache.feature_seconds is not None
    folder = Path(tempfile.mkdtemp(prefix="build-", dir=cache.root))
    database = build_database(items, config, folder, layout.labels, cache.feature_dir, embeddings, report)
    build_seconds = time.perf_counter() - started
    if config.uses_local_features:
        if had_features:
            build_seconds += cache.feature_seconds  # cached: count the time it took when computed
        else:
            cache.feature_seconds = build_seconds
    return database, embed_seconds + build_seconds


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def recognition_gap(layout: EvalLayout, results: dict[str, SearchResult]) -> float | None:
    """Kaggle's GAP (percent) of the recognitions, a query's landmark being its positives' label; None
    without database labels or without a query that has positives."""
    if layout.labels is None:
        return None
    truth = {q.query_id: {layout.labels[i] for i in q.easy + q.hard if i in layout.labels} for q in layout.queries}
    if not any(truth.values()):
        return None
    recognitions = {qid: r.recognition for qid, r in results.items() if r.recognition is not None}
    return 100.0 * global_average_precision(gap_predictions(recognitions), truth)


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
        "gap": recognition_gap(layout, results),
        "seconds_per_query": float(np.mean(seconds)) if seconds else 0.0,
        "database_seconds": float(database_seconds),
        "pipeline": {"name": config.name, "parameters": asdict(config)},
        "rankings": rankings,
    }
