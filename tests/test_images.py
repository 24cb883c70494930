"""ml.images: what counts as a good image, and the message for each bad one."""

import io

import pytest
from PIL import Image

from ml.images import BadImage, ImageLimits, inspect_image_bytes, inspect_image_file, load_rgb
from tests.badimages import png_header_bomb, text_as_jpeg, truncated_jpeg
from tests.conftest import MINI

PHOTO = MINI / "images" / "233e2de188985424.jpg"  # London Bridge, 767x1024


def test_real_photo_is_accepted_with_its_size_and_checksum():
    info = inspect_image_file(PHOTO)
    assert (info.width, info.height) == (767, 1024)
    assert info.format == "JPEG"
    assert len(info.checksum) == 64
    assert info.file_size == PHOTO.stat().st_size


def test_truncated_jpeg_is_refused(tmp_path):
    with pytest.raises(BadImage, match="truncated|corrupt"):
        inspect_image_file(truncated_jpeg(PHOTO, tmp_path / "cut.jpg"))


def test_text_file_named_jpg_is_refused(tmp_path):
    with pytest.raises(BadImage, match="not an image"):
        inspect_image_file(text_as_jpeg(tmp_path / "fake.jpg"))


def test_png_header_bomb_is_refused_without_decoding(tmp_path):
    path = png_header_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 1000
    with pytest.raises(BadImage, match="too many pixels"):
        inspect_image_file(path)


def test_limits_are_configurable(tmp_path):
    with pytest.raises(BadImage, match="file too large"):
        inspect_image_file(PHOTO, ImageLimits(max_bytes=1000))
    with pytest.raises(BadImage, match="too many pixels: 767x1024"):
        inspect_image_file(PHOTO, ImageLimits(max_pixels=500_000))


def test_empty_and_tiny_images_are_refused():
    with pytest.raises(BadImage, match="empty"):
        inspect_image_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    with pytest.raises(BadImage, match="too small"):
        inspect_image_bytes(buf.getvalue())


def test_exif_rotation_is_honoured():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    info = inspect_image_bytes(buf.getvalue())
    assert (info.width, info.height) == (100, 200)
    buf.seek(0)
    assert load_rgb(buf).size == (100, 200)
