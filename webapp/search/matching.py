"""'Why this match': the inlier correspondences between a query photo and a result, drawn as lines
between the two photos side by side (an SVG built here, so it needs no script)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image as PILImage

from ml.spatial import extract_local_features, verify_pair
from webapp.catalog.models import Image
from webapp.search.engine import current_engine
from webapp.search.models import SearchQuery
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


def match_drawing(query: SearchQuery, image: Image) -> Drawing:
    engine = current_engine()
    pipeline = engine.database.pipeline
    with default_storage.open(query.photo.name, "rb") as f:
        qimg = PILImage.open(f)
        qimg.load()
    qfeats = extract_local_features(qimg, pipeline.local_features)
    if engine.database.features is not None and image.external_id in engine.database.features:
        dfeats = engine.database.features.get(image.external_id)
    else:  # an index built without verification: compute the result's features now
        dfeats = extract_local_features(PILImage.open(image_file_path(image)), pipeline.local_features)
    check = verify_pair(qfeats, dfeats, pipeline.matching)
    qs, ds = HEIGHT / qimg.height, HEIGHT / image.height
    qw, dw = round(qimg.width * qs), round(image.width * ds)
    lines = [(float(qx * qs), float(qy * qs), float(qw + dx * ds), float(dy * ds))
             for (qx, qy), (dx, dy) in zip(check.query_points, check.database_points, strict=True)]
    return Drawing(qw + dw, HEIGHT, qw, dw, reverse("search-photo", args=[query.uid]),
                   reverse("image-preview", args=[image.external_id]), lines, check.inliers, check.putative)
