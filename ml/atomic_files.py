"""Files published atomically: written under a temp name beside the target, then renamed into place, so a
reader (or a resumed job) sees no file or the whole file, never half of one.

Large .npy files are written piece by piece: embedding sets, region descriptors and index vectors can be far larger than memory (4 M images x 21
regions x 1280 float16 values is 200 GB), so they are never built whole in RAM: the file is created at its
final shape as a memory-mapped temp file, filled part by part, and renamed into place.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def temp_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` for the block to write the whole file to (close it inside the block);
    renamed onto ``path`` when the block ends without error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` as the whole content of ``path``, synced to disk before the rename."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of an .npy file (for ``write_bytes``: small arrays only)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype, fill: Callable[[np.ndarray], None]) -> Path:
    """Create ``path`` as an .npy of ``shape`` and ``dtype``, zero-filled, let ``fill(out)`` write into the
    memory-mapped array, then rename it into place. On any error the temp file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(int(s) for s in shape))
        fill(out)
        out.flush()
        del out  # closes the map before the rename
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_rows(path: str | os.PathLike, array, dtype, batch: int) -> Path:
    """``array`` (in memory, memory-mapped, or ``ml.embed.StackedRows``) as an .npy of ``dtype``, read and
    converted ``batch`` rows at a time, so a float16 or memory-mapped input is never copied whole."""
    return write_npy(path, np.shape(array), dtype, lambda out: copy_rows(out, _batches(array, batch)))


def copy_rows(out: np.ndarray, parts: Iterable[np.ndarray]) -> None:
    """Copy ``parts`` one after another into the rows of ``out`` (each part's trailing dimensions may be
    smaller than ``out``'s: the rest stays zero, which is how region lists are padded)."""
    start = 0
    for part in parts:
        part = np.asarray(part, dtype=out.dtype)
        out[(slice(start, start + len(part)), *(slice(0, s) for s in part.shape[1:]))] = part
        start += len(part)
    if start != len(out):
        raise ValueError(f"{start} rows for an array of {len(out)}")


def _batches(array: np.ndarray, size: int) -> Iterable[np.ndarray]:
    """Consecutive row blocks of ``array`` (a memory-mapped one is read one block at a time)."""
    for start in range(0, len(array), size):
        yield array[start:start + size]
