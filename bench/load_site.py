"""Django-side helpers of bench/bench_load.py, run inside the app's settings with
``manage.py shell -c "from bench.load_site import ...; ..."``.

``populate(n)`` prepares a collection of ``n`` indexed images the fast way (bulk inserts, numpy), to be
indexed and published by the product's own path (``manage.py build_index --embedding-set ID``), so the
web app searches it like any index:

- Image rows ``syn-0000001``... (bulk_create), each a copy of one indexed real photo (round robin over
  them, so every real landmark gets its share): same file path, landmark, split, size and thumbnail, so
  pages show real thumbnails and a result can be opened;
- its vector is the real photo's vector (from the active index's EmbeddingSet) plus Gaussian noise
  (``noise`` = expected norm of the noise before re-normalising; 1.0 puts a copy at cosine ~0.7 to its
  original), so synthetic photos crowd the neighbourhoods of the real ones as more photos of the same
  places would;
- its local features are the real photo's cached features (a hard link under its own id), so verifying a
  synthetic candidate costs exactly what verifying a real one costs (and finds what the real one would);
- a new EmbeddingSet (fp16 shards) of the real and synthetic vectors, with the models and embedding
  settings of the active one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from ml.embed import read_embedding_shards, write_embedding_shards
from webapp.catalog.models import CatalogRevision, Image
from webapp.search.models import EmbeddingSet, IndexVersion

SYNTHETIC_PREFIX = "syn-"
COPIED_FIELDS = ("landmark_id", "split", "path", "checksum", "file_size", "width", "height", "thumbnail")


def populate(n: int, noise: float = 1.0, seed: int = 0, batch: int = 5000) -> dict:
    """Synthetic images and an EmbeddingSet of ``n`` vectors grown from the active index's; prints (JSON)
    the EmbeddingSet's id and what each step took."""
    started = time.perf_counter()
    iv = IndexVersion.objects.select_related("embedding_set__model_version").get(is_active=True)
    old = iv.embedding_set
    real_ids, real_vectors = read_embedding_shards(old.path)
    real_ids, real_vectors = list(real_ids), np.asarray(real_vectors, dtype=np.float32)
    extra = n - len(real_ids)
    if extra <= 0:
        raise ValueError(f"the active index has {len(real_ids)} vectors already; ask for more than that")
    rows = Image.objects.in_bulk(real_ids, field_name="external_id")
    rng = np.random.default_rng(seed)
    source = np.arange(extra) % len(real_ids)
    rng.shuffle(source)
    syn_ids = [f"{SYNTHETIC_PREFIX}{k:07d}" for k in range(1, extra + 1)]
    timings = {}

    t = time.perf_counter()
    for start in range(0, extra, batch):
        Image.objects.bulk_create([
            Image(external_id=syn_ids[k], dataset="synthetic", source=f"synthetic copy of {real_ids[source[k]]}",
                  **{f: getattr(rows[real_ids[source[k]]], f) for f in COPIED_FIELDS})
            for k in range(start, min(extra, start + batch))])
    CatalogRevision.bump()
    timings["rows"] = time.perf_counter() - t

    t = time.perf_counter()
    dim = real_vectors.shape[1]
    vectors = np.empty((n, dim), np.float32)
    vectors[: len(real_ids)] = real_vectors
    for start in range(0, extra, 65_536):  # in blocks: the noise of 1 M x 512 would be 2 GB at once
        stop = min(extra, start + 65_536)
        block = real_vectors[source[start:stop]] + rng.standard_normal((stop - start, dim), np.float32) * (
            noise / np.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[len(real_ids) + start: len(real_ids) + stop] = block
    ids = real_ids + syn_ids
    timings["vectors"] = time.perf_counter() - t

    t = time.perf_counter()
    stamp = f"{timezone.now():%Y%m%d-%H%M%S}-syn{n}-{uuid.uuid4().hex[:6]}"
    emb_dir = write_embedding_shards(Path(settings.ARTIFACTS_ROOT) / "embeddings" / stamp, ids, vectors)
    es = EmbeddingSet.objects.create(
        model_version=old.model_version, path=str(emb_dir), dim=dim, image_count=len(ids), scales=old.scales,
        image_filter={**old.image_filter, "synthetic": extra},
        params={**old.params, "synthetic": {"copies": extra, "noise": noise, "seed": seed}})
    timings["embeddings"] = time.perf_counter() - t

    t = time.perf_counter()
    pipeline = iv.pipeline_config()
    if pipeline.uses_local_features:
        folder = Path(iv.params["feature_dir"]) / pipeline.local_features.cache_key()
        for k, syn in enumerate(syn_ids):
            target = folder / f"{syn}.npz"
            if not target.exists():
                os.link(folder / f"{real_ids[source[k]]}.npz", target)
    timings["features"] = time.perf_counter() - t

    summary = {"embedding_set": es.pk, "vectors": len(ids), "synthetic": extra,
               "seconds": round(time.perf_counter() - started, 1),
               **{f"{k}_s": round(v, 1) for k, v in timings.items()}}
    print(json.dumps(summary))
    return summary


def session_key(username: str) -> str:
    """A logged-in session for ``username`` (the pages' cookie), printed for the calling process."""
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

    user = get_user_model().objects.get(username=username)
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    print(store.session_key)
    return store.session_key


def page_targets() -> dict:
    """Ids the page timings visit: the landmark with most images, a real and a synthetic image."""
    from django.db.models import Count

    from webapp.catalog.models import Landmark

    big = Landmark.objects.annotate(c=Count("images")).order_by("-c", "pk").first()
    real = Image.objects.exclude(dataset="synthetic").filter(split__in=["train", "index"]).order_by("pk").first()
    syn = Image.objects.filter(dataset="synthetic").order_by("-pk").first()
    targets = {"landmark": big.external_id, "landmark_images": big.c, "image": real.external_id,
               "synthetic_image": syn.external_id if syn else None, "images": Image.objects.count()}
    print(json.dumps(targets))
    return targets
