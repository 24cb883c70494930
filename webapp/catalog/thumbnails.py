"""Thumbnails through easy-thumbnails: made once, stored in media storage, remembered on the Image row."""

from django.conf import settings
from django.core.files.storage import default_storage
from easy_thumbnails.files import get_thumbnailer

from webapp.catalog.models import Image


def thumbnail_options(alias: str = "thumb") -> dict:
    return settings.THUMBNAIL_ALIASES[""][alias]


def make_thumbnail(image: Image, alias: str = "thumb") -> str:
    """Generate (or find) the thumbnail of ``image``; return its storage name."""
    with image.open() as f:
        thumbnailer = get_thumbnailer(f, relative_name=image.thumbnail_name)
        thumb = thumbnailer.get_thumbnail(thumbnail_options(alias))
    if alias == "thumb":
        Image.objects.filter(pk=image.pk).update(thumbnail=thumb.name)
        image.thumbnail = thumb.name
    return thumb.name


def thumbnail_name(image: Image, alias: str = "thumb") -> str:
    """The stored thumbnail, generated now if it is missing (the worker normally made it already)."""
    if alias == "thumb" and image.thumbnail and default_storage.exists(image.thumbnail):
        return image.thumbnail
    return make_thumbnail(image, alias)
