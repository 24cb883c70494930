"""Index versions built before they recorded their whole configuration held only their preset's name (and
their embedding settings): fill the record from the presets as they were when this migration was written
(frozen in presets_20261207.json, so later edits of the presets change nothing here), with the embedding
settings each version recorded, as the search engine then read them."""

import json
import logging
from pathlib import Path

from django.db import migrations

PRESETS = Path(__file__).with_name("presets_20261207.json")
log = logging.getLogger(__name__)


def recorded_config(preset: dict, params: dict) -> dict:
    """The preset with the models and embedding settings the version recorded (``embedded_as`` as it was:
    a version that records no flip was made before flip TTA, its photos were not mirrored)."""
    config = dict(preset)
    if params.get("models"):
        config["models"] = list(params["models"])
        config["model_weights"] = None
    config["image_size"] = int(params.get("image_size") or config["image_size"])
    config["scales"] = list(params.get("scales") or config["scales"])
    config["flip"] = bool(params.get("flip", False))
    return config


def fill_records(apps, schema_editor):
    IndexVersion = apps.get_model("search", "IndexVersion")
    rows = [iv for iv in IndexVersion.objects.all() if not iv.params.get("config")]
    if not rows:
        return
    from ml.pipeline import PipelineConfig, feature_cache_keys  # only where there are rows to fill

    presets = json.loads(PRESETS.read_text())
    for iv in rows:
        name = iv.params.get("pipeline") or "default"
        if name not in presets:
            log.warning("index version %s: unknown preset %r; left without a record", iv.pk, name)
            continue
        config = recorded_config(presets[name], iv.params)
        pipeline = PipelineConfig.from_dict(config)
        dense = bool(iv.params.get("dense"))
        iv.params = {
            **iv.params, "config": config,
            "feature_caches": sorted(feature_cache_keys(pipeline, dense=dense)),
            "regions": {"levels": pipeline.regional.levels, "overlap": pipeline.regional.overlap}
            if pipeline.regional.enabled else None,
            "models": [{"spec": m, "digest": None} for m in config["models"]],
        }
        iv.save(update_fields=["params"])


class Migration(migrations.Migration):

    dependencies = [
        ("search", "0005_searchresult_dense_inliers"),
    ]

    operations = [
        migrations.RunPython(fill_records, migrations.RunPython.noop),
    ]
