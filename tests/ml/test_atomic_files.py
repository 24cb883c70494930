"""Files published by rename: whole or absent, never half-written."""

import numpy as np
import pytest

from ml.atomic_files import copy_rows, npy_bytes, replacing, write_bytes, write_npy, write_rows


def test_write_npy_fills_a_memory_mapped_file_and_renames_it(tmp_path):
    parts = [np.ones((2, 3)), np.full((1, 2), 2.0)]  # the second is narrower: padded with zeros
    path = write_npy(tmp_path / "sub" / "a.npy", (3, 3), np.float16, lambda out: copy_rows(out, parts))
    got = np.load(path)
    assert got.dtype == np.float16
    assert got.tolist() == [[1, 1, 1], [1, 1, 1], [2, 2, 0]]
    assert [p.name for p in path.parent.iterdir()] == ["a.npy"]  # no temp file left


def test_a_failed_fill_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = write_npy(tmp_path / "a.npy", (2,), np.float32, lambda out: out.__setitem__(slice(None), 7))

    def fail(out):
        out[0] = 1
        raise OSError("image 12: cannot be read")

    with pytest.raises(OSError, match="image 12"):
        write_npy(path, (2,), np.float32, fail)
    assert np.load(path).tolist() == [7, 7]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_copy_rows_needs_exactly_the_rows_of_the_output(tmp_path):
    with pytest.raises(ValueError, match="2 rows for an array of 3"):
        write_npy(tmp_path / "b.npy", (3, 2), np.float32, lambda out: copy_rows(out, [np.ones((2, 2))]))
    assert not (tmp_path / "b.npy").exists()
    vectors = np.arange(10.0).reshape(5, 2)
    path = write_rows(tmp_path / "c.npy", vectors.astype(np.float16), np.float32, 2)  # in blocks of 2 rows
    assert np.load(path).dtype == np.float32 and np.array_equal(np.load(path), vectors)


def test_write_bytes_replaces_a_file_whole(tmp_path):
    path = write_bytes(tmp_path / "x" / "v.npy", npy_bytes(np.arange(4)))
    write_bytes(path, npy_bytes(np.arange(2)))
    assert np.load(path).tolist() == [0, 1]
    assert [p.name for p in path.parent.iterdir()] == ["v.npy"]


def test_replacing_publishes_what_the_block_wrote_or_nothing(tmp_path):
    path = tmp_path / "labels.csv"
    with replacing(path) as tmp, tmp.open("w") as f:
        f.write("id,landmark_id\n")
        assert not path.exists()  # not visible before the block ends
    assert path.read_text() == "id,landmark_id\n"

    with pytest.raises(ValueError, match="row 3"), replacing(path) as tmp, tmp.open("w") as f:
        f.write("half of a new file")
        raise ValueError("row 3: unknown landmark")
    assert path.read_text() == "id,landmark_id\n"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]
