"""Bad image files made on the fly, for import and upload tests."""

import struct
import zlib
from pathlib import Path


def truncated_jpeg(src: Path, dst: Path) -> Path:
    """A real JPEG cut off at 40% of its bytes."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.4)])
    return dst


def text_as_jpeg(dst: Path) -> Path:
    dst.write_text("this is not an image, whatever its name says\n")
    return dst


def png_header_bomb(dst: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb if decoded)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    dst.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return dst
