"""Exploring by similarity with the active index's vectors: more like this, nearest other landmarks, and
2-D maps of embeddings. All optional: without an index these return nothing and pages say so."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ml.columns import IdColumn
from webapp.catalog.models import Image, Landmark
from webapp.search.engine import NoIndexError, current_engine


def _engine_or_none():
    try:
        return current_engine()
    except NoIndexError:
        return None


def vectors_for(ids: list[str], engine=None) -> tuple[list[str], np.ndarray] | None:
    """The indexed vectors of those of ``ids`` that are in the active index."""
    engine = engine or _engine_or_none()
    if engine is None:
        return None
    # Looked up in the index's sorted ids: a dict of every id would cost hundreds of MB at millions of images.
    pos = IdColumn.from_ids(engine.database.ids).positions(ids)
    found = [i for i in ids if i in pos]
    vectors = np.asarray(engine.database.index.vectors[[pos[i] for i in found]], dtype=np.float32)
    return found, vectors


def ranked_like(vector: np.ndarray, k: int, exclude: set[str] = frozenset(), engine=None) -> list[tuple[str, float]]:
    engine = engine or _engine_or_none()
    if engine is None:
        return []
    scores, positions = engine.database.index.search_positions(vector[None, :].astype(np.float32), k + len(exclude))
    ids = engine.database.ids
    out = [(ids[p], float(s)) for s, p in zip(scores[0], positions[0], strict=True) if p >= 0]
    return [(i, s) for i, s in out if i not in exclude][:k]


def more_like_this(image: Image, k: int = 12) -> list[tuple[Image, float]] | None:
    """Images nearest to ``image`` (None when it is not indexed or there is no index)."""
    engine = _engine_or_none()
    got = vectors_for([image.external_id], engine)
    if not got or not got[0]:
        return None
    hits = ranked_like(got[1][0], k, exclude={image.external_id}, engine=engine)
    images = Image.objects.filter(taken_down=False).select_related("landmark").in_bulk(
        [i for i, _ in hits], field_name="external_id")
    return [(images[i], s) for i, s in hits if i in images]


def nearest_landmarks(landmark: Landmark, k: int = 5, depth: int = 100) -> list[tuple[Landmark, float]] | None:
    """Other landmarks whose photos are nearest to this landmark's mean descriptor."""
    ids = list(landmark.images.values_list("external_id", flat=True)[:2000])
    engine = _engine_or_none()
    got = vectors_for(ids, engine)
    if not got or not got[0]:
        return None
    centroid = got[1].mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    hits = ranked_like(centroid, depth, exclude=set(ids), engine=engine)
    labels = dict(Image.objects.filter(external_id__in=[i for i, _ in hits], landmark__isnull=False)
                  .values_list("external_id", "landmark_id"))
    best: dict[int, float] = defaultdict(float)
    for image_id, score in hits:
        lm = labels.get(image_id)
        if lm is not None and lm != landmark.pk:
            best[lm] = max(best[lm], score)
    top = sorted(best.items(), key=lambda kv: -kv[1])[:k]
    landmarks = Landmark.objects.in_bulk([pk for pk, _ in top])
    return [(landmarks[pk], s) for pk, s in top]


@dataclass
class MapPoint:
    image: Image
    x: float
    y: float
    group: int  # colour index


def embedding_map(ids: list[str], size: int = 600, margin: int = 16) -> list[MapPoint] | None:
    """A 2-D PCA projection of the images' descriptors, scaled into a ``size`` square."""
    got = vectors_for(ids)
    if not got or len(got[0]) < 3:
        return None
    found, vectors = got
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    xy = margin + (xy - lo) / np.where(hi - lo > 0, hi - lo, 1) * (size - 2 * margin)
    images = Image.objects.select_related("landmark").in_bulk(found, field_name="external_id")
    groups: dict[int | None, int] = {}
    points = []
    for image_id, (x, y) in zip(found, xy, strict=True):
        im = images[image_id]
        group = groups.setdefault(im.landmark_id, len(groups))
        points.append(MapPoint(im, float(x), float(size - y), group % 10))
    return points
