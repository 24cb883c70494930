"""The image limits from settings, as the ml layer's ImageLimits."""

from django.conf import settings

from ml.images import ImageLimits


def image_limits() -> ImageLimits:
    return ImageLimits(settings.IMAGE_MAX_BYTES, settings.IMAGE_MAX_PIXELS, settings.IMAGE_MIN_SIDE)
