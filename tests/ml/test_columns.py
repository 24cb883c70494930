"""Ids and labels by index position, held compactly: the same answers as lists, in a fraction of the memory."""

import tracemalloc

import numpy as np

from ml.columns import IdColumn, LabelColumn, LabelColumnBuilder


def test_a_label_column_reads_like_the_list_it_was_made_from():
    labels = ["12", None, "7", "12", None, "3"]
    column = LabelColumn.from_labels(labels)
    assert len(column) == 6 and list(column) == labels and column == labels
    assert column[np.int64(2)] == "7" and column[-1] == "3" and column[1] is None
    assert column[2:5] == ["7", "12", None] and column.table == ["12", "7", "3"]
    assert column != ["12", None, "7", "12", None, "4"]
    built = LabelColumnBuilder().extend(labels[:2]).extend(labels[2:]).build()  # read in chunks
    assert built == labels and built.codes.tolist() == [0, -1, 1, 0, -1, 2]


def _allocated(make):
    tracemalloc.start()
    kept = make()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size


def test_a_label_column_holds_a_fraction_of_a_list_of_strings():
    n, landmarks = 200_000, 5_000
    rows = [str(i % landmarks) for i in range(n)]  # the label strings as a query returns them

    def as_list():
        return [r.encode().decode() for r in rows]  # one string object per row, as from the database

    def as_column():
        return LabelColumnBuilder().extend(r.encode().decode() for r in rows).build()

    listed, coded = _allocated(as_list), _allocated(as_column)
    assert coded * 5 < listed, (coded, listed)


def test_an_id_column_reads_like_the_ids_file_it_was_made_from():
    ids = ["3f0a9c", "ß-unicode", "b", "3f0a9c0"]
    column = IdColumn.from_lines("".join(f"{i}\n" for i in ids).encode())
    assert column == ids and len(column) == 4 and column[1] == "ß-unicode" and column[np.int64(-1)] == "3f0a9c0"
    assert column[1:3] == ["ß-unicode", "b"] and isinstance(column[1:3], IdColumn)
    assert column.raw.dtype.itemsize == len("ß-unicode".encode())  # one fixed width: the longest id
    assert column.positions(["b", "3f0a9c", "missing", "longer-than-any-id-held", "3f0a9c0"]) == \
        {"b": 2, "3f0a9c": 0, "3f0a9c0": 3}
    assert IdColumn.from_lines(b"") == [] and IdColumn.from_lines(b"").positions(["x"]) == {}


def test_concatenated_ids_keep_their_order_across_widths():
    joined = IdColumn.concat([IdColumn.from_ids(["aa", "b"]), ["cccc"], IdColumn.from_ids([])])
    assert joined == ["aa", "b", "cccc"] and joined.positions(["cccc", "b"]) == {"cccc": 2, "b": 1}


def test_an_id_column_holds_a_fraction_of_a_list_of_strings():
    ids = [f"{i:016x}" for i in range(200_000)]  # GLDv2-like 16-hex ids
    text = "".join(f"{i}\n" for i in ids).encode()
    listed = _allocated(lambda: text.decode().splitlines())
    packed = _allocated(lambda: IdColumn.from_lines(text))
    assert packed * 4 < listed, (packed, listed)
