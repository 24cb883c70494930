"""Uploaded photos: accepted oddities are normalised, anything else is refused with a clear reason, and
fuzzed bytes and CSVs never raise anything but our own errors."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ml.datasets import DatasetError, read_dataset
from ml.images import BadImage, decode_upload
from tests.badimages import png_header_bomb
from tests.conftest import MINI

PHOTO_BYTES = (MINI / "images" / "233e2de188985424.jpg").read_bytes()


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_real_photo_decodes_to_rgb():
    img = decode_upload(PHOTO_BYTES)
    assert img.mode == "RGB" and img.size == (767, 1024)


def test_large_jpeg_decodes_no_larger_than_needed():
    big = encode(Image.new("RGB", (4000, 3000), (90, 120, 150)), "JPEG")
    assert decode_upload(big).size == (4000, 3000)
    img = decode_upload(big, max_side=512)  # 1/4 scale: the largest that keeps both sides >= 512
    assert img.mode == "RGB" and img.size == (1000, 750)
    assert decode_upload(big, max_side=1024).size == (2000, 1500)
    assert decode_upload(PHOTO_BYTES, max_side=512).size == (767, 1024)  # not twice as large: whole
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the decoded size is the upright one
    assert decode_upload(encode(Image.new("RGB", (4000, 3000)), "JPEG", exif=exif), max_side=512).size == (750, 1000)
    png = encode(Image.new("RGB", (2000, 1500)), "PNG")
    assert decode_upload(png, max_side=512).size == (2000, 1500)  # only JPEG has cheap reduced decoding


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    img = decode_upload(encode(cmyk, "JPEG"))
    r, g, b = img.getpixel((32, 24))
    assert img.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16_bit_png_keeps_its_tones():
    arr = np.full((40, 40), 30000, dtype=np.uint16)
    arr[:, 20:] = 60000
    img = decode_upload(encode(Image.fromarray(arr), "PNG"))
    left, right = img.getpixel((5, 5))[0], img.getpixel((35, 5))[0]
    assert img.mode == "RGB" and 100 < left < right and right > 240


def test_transparency_goes_on_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert decode_upload(encode(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 8
    img = decode_upload(encode(Image.new("RGB", (120, 60)), "JPEG", exif=exif))
    assert img.size == (60, 120)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = decode_upload(data).getpixel((10, 10))
    assert r > 200 and b < 60


@pytest.mark.parametrize("data, reason", [
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
    (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "not an image"),
    (PHOTO_BYTES[: len(PHOTO_BYTES) // 3], "truncated"),
    (b"", "empty"),
])
def test_fakes_and_broken_files_are_refused(data, reason):
    with pytest.raises(BadImage, match=reason):
        decode_upload(data)


def test_decompression_bomb_is_refused(tmp_path):
    with pytest.raises(BadImage, match="too many pixels"):
        decode_upload(png_header_bomb(tmp_path / "bomb.png").read_bytes())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_only_raise_bad_image(data):
    try:
        img = decode_upload(data)
    except BadImage:
        return
    assert img.mode == "RGB"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(PHOTO_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=20),
       st.integers(100, len(PHOTO_BYTES)))
def test_fuzz_corrupted_jpeg_only_raises_bad_image(flips, cut):
    data = bytearray(PHOTO_BYTES[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    try:
        img = decode_upload(bytes(data))
    except BadImage:
        return
    assert img.mode == "RGB"


csv_text = st.lists(st.sampled_from(list('abc019,"\n\r ;./_-\x00é') + ["id", "landmark_id", "name", "split", "../"]),
                    max_size=120).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images_csv=csv_text, landmarks_csv=csv_text)
def test_fuzz_dataset_csvs_only_raise_dataset_error(tmp_path_factory, images_csv, landmarks_csv):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images.csv").write_text("id,landmark_id,split\n" + images_csv)
    (root / "landmarks.csv").write_text(landmarks_csv)
    try:
        listing = read_dataset(root)
    except DatasetError:
        return
    for im in listing.images:
        assert im.path.is_relative_to(root.resolve())
