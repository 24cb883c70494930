"""Reading a job's parameters: config dataclasses and the image set they name."""

from __future__ import annotations

from dataclasses import fields

from webapp.catalog.models import Image


def config_from(cls, params: dict):
    """A config dataclass from the job's params, taking only the fields it has."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names and v is not None})


def images_in(params: dict):
    """The job's images in a fixed order: every image, or those of ``params['splits']``."""
    images = Image.objects.order_by("pk")
    if params.get("splits"):
        images = images.filter(split__in=params["splits"])
    return images
