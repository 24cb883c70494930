"""Running a search by photo and keeping it: the upload is checked and normalised, the engine ranks the
collection, and the query with its top results becomes a SearchQuery with a shareable URL."""

from __future__ import annotations

import io
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image as PILImage

from ml.images import decode_upload
from webapp.catalog.limits import image_limits
from webapp.catalog.models import Image, Landmark
from webapp.search.engine import Options, decode_side, search_photo
from webapp.search.models import SearchQuery, SearchResult

MAX_RESULTS = 100


def run_search(data: bytes, name: str, user, options: Options | None = None) -> SearchQuery:
    """Search for the uploaded bytes; raises ml.images.BadImage for anything that is not a usable photo."""
    image = decode_upload(data, image_limits(), max_side=decode_side())  # no larger than the search needs
    return _search_and_store(image, name, user, options or Options())


class PhotoMissing(Exception):
    """A stored photo that a page needs is gone from storage (deleted, or its disk lost)."""


def open_query_photo(query: SearchQuery) -> PILImage.Image:
    """The search's stored photo, decoded; PhotoMissing when storage no longer has it (or it cannot be read)."""
    try:
        with default_storage.open(query.photo.name, "rb") as f:
            image = PILImage.open(f)
            image.load()
    except OSError as exc:  # FileNotFoundError, or a file cut short
        raise PhotoMissing("The photo of this search is no longer stored, so it cannot be shown or searched "
                           "again.") from exc
    return image


def rerun_search(query: SearchQuery, user, options: Options) -> SearchQuery:
    """The same photo searched again with other options (a new query, so both stay shareable)."""
    image = open_query_photo(query)
    return _search_and_store(image.convert("RGB"), query.original_name, user, options)


def _search_and_store(image: PILImage.Image, name: str, user, options: Options) -> SearchQuery:
    outcome = search_photo(image, MAX_RESULTS, options)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92)  # what we keep is our own re-encoding, never the raw upload
    uid = uuid.uuid4()
    photo_name = default_storage.save(f"queries/{uid}.jpg", ContentFile(buf.getvalue()))
    landmarks = {lm.external_id: lm for lm in Landmark.objects.filter(
        external_id__in=[c for c, _ in outcome.candidates])}
    images = dict(Image.objects.filter(external_id__in=[h.image_id for h in outcome.hits])
                  .values_list("external_id", "pk"))
    with transaction.atomic():
        query = SearchQuery.objects.create(
            uid=uid, user=user if user and user.is_authenticated else None, photo=photo_name,
            original_name=(name or "")[:255], model_version=outcome.index_version.embedding_set.model_version,
            index_version=outcome.index_version, options=vars(options),
            landmark=landmarks.get(outcome.landmark_id) if outcome.landmark_id else None,
            confidence=outcome.confidence,
            candidates=[{"id": c, "name": landmarks[c].name if c in landmarks else c, "confidence": s}
                        for c, s in outcome.candidates],
            seconds=outcome.seconds)
        SearchResult.objects.bulk_create([
            SearchResult(query=query, rank=r, image_id=images[h.image_id], score=h.score,
                         global_score=h.global_score, inliers=h.inliers if h.verification is not None else None,
                         dense_inliers=h.dense_inliers or None, verified=h.verified)
            for r, h in enumerate((h for h in outcome.hits if h.image_id in images), start=1)])
    return query
