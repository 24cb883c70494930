"""build_index with the default pipeline caches the database's dense features (ml.dense_matching) beside
the RootSIFT ones and records it; the web engine then matches every search's top 50 with them. An index
whose build did not cache them is searched without the step."""

import pytest
from django.core.management import call_command

from ml.images import load_rgb
from ml.pipeline import DEFAULT_PIPELINE, dense_store, get_pipeline
from webapp.catalog.models import Image
from webapp.search.engine import current_engine, search_photo
from webapp.search.models import IndexVersion
from webapp.search.services import image_file_path

pytestmark = pytest.mark.django_db


def test_the_default_build_caches_dense_features_and_search_matches_them(imported_mini):
    call_command("build_index", "--splits", "query")  # the default pipeline over the 34 query photos
    iv = IndexVersion.objects.get(is_active=True)
    assert iv.params["pipeline"] == DEFAULT_PIPELINE and iv.params["dense"] is True
    store = dense_store(get_pipeline(DEFAULT_PIPELINE), iv.params["feature_dir"])
    ids = list(Image.objects.filter(split=Image.Split.QUERY).values_list("external_id", flat=True))
    assert len(ids) == 34 and all(i in store for i in ids)
    assert all(not p.name.startswith(".") for p in store.folder.iterdir())  # no temp file left behind

    engine = current_engine()
    assert engine.database.dense is not None
    photo = Image.objects.get(external_id=ids[3])
    hits = search_photo(load_rgb(image_file_path(photo))).hits
    assert hits[0].image_id == photo.external_id and hits[0].dense_inliers >= 100  # itself, everywhere
    assert any(h.dense_inliers > 0 for h in hits[1:50]) and all(h.dense_inliers == 0 for h in hits[50:])

    # An index version built before dense matching (no "dense" in its params): searched without the step.
    IndexVersion.objects.filter(pk=iv.pk).update(params={k: v for k, v in iv.params.items() if k != "dense"})
    old = IndexVersion.objects.get(pk=iv.pk)
    old.pk = None
    old.job = None
    IndexVersion.objects.filter(is_active=True).update(is_active=False)
    old.save()
    assert current_engine().database.dense is None
    assert all(h.dense_inliers == 0 for h in search_photo(load_rgb(image_file_path(photo))).hits)
