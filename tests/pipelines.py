"""Pipelines the tests build with besides the presets, made from the product's config objects (a build
takes them whole, as `build_index --config FILE` does)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ml.pipeline import LITE2_MS, REGIONS_TOP400, PipelineConfig

# lite2 at 3 scales, re-scored by regions, nothing else (no verification, no labels).
REGIONAL = replace(PipelineConfig(name="lite2-ms-regional"), regional=REGIONS_TOP400, **LITE2_MS)


def config_file(folder: Path, pipeline: PipelineConfig) -> str:
    """``pipeline`` written as the JSON `build_index --config` reads; its path."""
    path = folder / f"{pipeline.name}.json"
    path.write_text(json.dumps(pipeline.as_dict()))
    return str(path)
