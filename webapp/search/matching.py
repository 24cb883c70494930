"""'Why this match': the inlier correspondences between a query photo and a result, drawn as lines
between the two photos side by side (an SVG built here, so it needs no script): RootSIFT's, and, when the
pipeline matches them, those of dense matching on the network's feature maps (cell centres)."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse
from PIL import Image as PILImage

from ml.dense_matching import cells_to_pixels, dense_verification, extract_dense
from ml.spatial import FeatureStore, extract_local_features, verify_pair
from webapp.catalog.models import Image
from webapp.search.engine import current_engine
from webapp.search.models import SearchQuery
from webapp.search.querying import PhotoMissing, open_query_photo
from webapp.search.services import image_file_path

HEIGHT = 480  # both photos are drawn at this height


@dataclass
class Drawing:
    width: int
    height: int
    query_width: int
    result_width: int
    query_url: str
    result_url: str
    lines: list[tuple[float, float, float, float]]
    inliers: int
    putative: int
    dense_lines: list[tuple[float, float, float, float]]
    dense_inliers: int  # 0 when the index has no dense features
    only_dense: bool  # dense matching verifies the pair where RootSIFT does not (day/night, seasons)


def match_drawing(query: SearchQuery, image: Image, query_url: str) -> Drawing:
    """The drawing, with the search's photo at ``query_url``. Raises PhotoMissing when the search's photo or
    the result's file is gone."""
    qimg = open_query_photo(query)  # before loading anything: a lost photo is answered at once
    engine = current_engine()
    pipeline = engine.database.pipeline
    qfeats = extract_local_features(qimg, pipeline.local_features)
    # An index built without verification has no cache: the result's features are computed now.
    dfeats = _cached_or_made(engine.database.features, image, lambda photo: extract_local_features(
        photo, pipeline.local_features))
    check = verify_pair(qfeats, dfeats, pipeline.matching)
    qs, ds = HEIGHT / qimg.height, HEIGHT / image.height
    qw, dw = round(qimg.width * qs), round(image.width * ds)

    def joined(qpoints, dpoints) -> list[tuple[float, float, float, float]]:
        return [(float(qx * qs), float(qy * qs), float(qw + dx * ds), float(dy * ds))
                for (qx, qy), (dx, dy) in zip(qpoints, dpoints, strict=True)]

    dense_lines, dense_inliers = [], 0
    if engine.database.dense is not None:
        qdense = extract_dense(engine.models[0], qimg, pipeline.dense, pipeline.image_size)
        ddense = _cached_or_made(engine.database.dense, image, lambda photo: extract_dense(
            engine.models[0], photo, pipeline.dense, pipeline.image_size))
        dense = dense_verification(qdense, ddense, pipeline.dense)
        dense_inliers = dense.inliers
        dense_lines = joined(cells_to_pixels(dense.query_points, qdense.grid, qimg.size),
                             cells_to_pixels(dense.database_points, ddense.grid, (image.width, image.height)))
    only_dense = dense_inliers >= pipeline.dense.min_inliers and check.inliers < pipeline.verification.min_inliers
    return Drawing(qw + dw, HEIGHT, qw, dw, query_url,
                   reverse("image-preview", args=[image.external_id]),
                   joined(check.query_points, check.database_points), check.inliers, check.putative, dense_lines,
                   dense_inliers, only_dense)


def _cached_or_made(store: FeatureStore | None, image: Image, make):
    """The result's cached features, else (no cache, or its file lost or cut short) ``make`` of its photo."""
    feats = store.readable(image.external_id) if store is not None else None
    if feats is not None:
        return feats
    try:
        with PILImage.open(image_file_path(image)) as photo:
            return make(photo)
    except OSError as exc:
        raise PhotoMissing(f"The file of result {image.external_id} is missing from the collection, so its "
                           "matches cannot be drawn.") from exc
