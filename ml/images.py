"""Reading image files safely: size limits, decompression bombs, truncated or fake files."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class BadImage(ValueError):
    """The file is not an image we accept; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000
    min_side: int = 16


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    checksum: str  # SHA-256 of the bytes
    file_size: int


def inspect_image_bytes(data: bytes, limits: ImageLimits = ImageLimits()) -> ImageInfo:
    """Check that ``data`` is a whole, decodable image within ``limits``; raise BadImage if not.

    The pixel limit is checked from the header before any decoding, so a small file that claims
    20000x20000 pixels is refused without allocating them.
    """
    if len(data) == 0:
        raise BadImage("empty file")
    if len(data) > limits.max_bytes:
        raise BadImage(f"file too large: {len(data):,} bytes (limit {limits.max_bytes:,})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too many pixels (decompression bomb?): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise BadImage("not an image (unrecognised content)") from exc
    except Exception as exc:  # PIL raises many kinds on malformed headers
        raise BadImage(f"unreadable image header: {exc}") from exc
    with img:
        width, height = img.size
        if width * height > limits.max_pixels:
            raise BadImage(f"too many pixels: {width}x{height} (limit {limits.max_pixels / 1e6:.0f} MP)")
        if min(width, height) < limits.min_side:
            raise BadImage(f"too small: {width}x{height} (each side at least {limits.min_side} px)")
        fmt = img.format or "unknown"
        _decode_fully(img)
        # EXIF rotation swaps width and height for portrait photos taken sideways.
        orientation = img.getexif().get(0x0112, 1)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    return ImageInfo(width, height, fmt, hashlib.sha256(data).hexdigest(), len(data))


def inspect_image_file(path: Path, limits: ImageLimits = ImageLimits()) -> ImageInfo:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from exc
    if size > limits.max_bytes:
        raise BadImage(f"file too large: {size:,} bytes (limit {limits.max_bytes:,})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"cannot read file: {exc.strerror or exc}") from exc
    return inspect_image_bytes(data, limits)


def _decode_fully(img: Image.Image) -> None:
    """Decode every byte so truncation shows; JPEGs decode at 1/8 scale, which still reads them whole."""
    if img.format == "JPEG":
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
    try:
        img.load()
    except Exception as exc:
        raise BadImage(f"corrupt or truncated image data: {exc}") from exc


def load_rgb(path_or_file, max_side: int | None = None) -> Image.Image:
    """Open an image as RGB with its EXIF rotation applied, optionally shrunk to ``max_side``."""
    img = Image.open(path_or_file)
    if max_side and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))
    img = ImageOps.exif_transpose(img)
    img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def decode_upload(data: bytes, limits: ImageLimits = ImageLimits(), max_side: int | None = None) -> Image.Image:
    """An uploaded file as an RGB image ready to embed, or BadImage saying why not.

    The content decides, never the file name: SVG, HTML or text posing as a JPEG is refused because
    Pillow does not recognise it. Accepted oddities are normalised: EXIF rotation applied, CMYK and 16-bit
    converted, transparency composited onto white, animations reduced to their first frame.

    ``max_side``: the largest size the caller looks at. A JPEG at least twice that on its short side is
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, as ``load_rgb`` does for database images),
    still at least ``max_side`` on both sides: a 12 MP phone photo decodes ~4x faster and every later
    step (resizing, SIFT's grey image, storing the query) handles a quarter or less of the pixels.
    """
    inspect_image_bytes(data, limits)  # limits, bombs, truncation: refused before any full decode
    img = Image.open(io.BytesIO(data))
    if max_side and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))
    if getattr(img, "is_animated", False):
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB with transparency on white; 16-bit and CMYK handled (Pillow's plain convert gets them wrong)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / max(peak, 255.0))).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
