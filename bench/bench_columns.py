"""Memory a web process holds per indexed image for naming results and label-aware search: Python lists
(and a dict from id to position, for "more like this"), as the engine kept them, against
``ml.columns`` (``IdColumn``: fixed-width bytes with a sorted copy for lookups; ``LabelColumn``: int32
codes into the distinct labels). Ids are GLDv2-like 16-hex strings read from an index's ids.txt; labels
are fresh string objects per image, as a database query returns them, over GLDv2's 203,094 landmarks.
Measured with tracemalloc (Python allocations only), in this process.

    .venv/bin/python bench/bench_columns.py [--images 1000000 4000000]
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import record, table  # noqa: E402
from ml.columns import IdColumn, LabelColumnBuilder  # noqa: E402

LANDMARKS = 203_094
MIB = 2**20


def held(make, *args) -> tuple[object, float]:
    """What ``make(*args)`` returns and the MiB it holds."""
    tracemalloc.start()
    kept = make(*args)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return kept, size / MIB


def label_list(labels: list[str]) -> list[str]:
    return [s.encode().decode() for s in labels]  # a new string object per image, as from the database


def label_column(labels: list[str]):
    column = LabelColumnBuilder()
    for start in range(0, len(labels), 5000):  # as webapp.catalog.labels.labels_of reads them
        column.extend(s.encode().decode() for s in labels[start:start + 5000])
    return column.build()


def id_list(text: bytes) -> list[str]:
    return text.decode().splitlines()  # as load_index read ids.txt


def position_dict(ids: list[str]) -> dict[str, int]:
    return {i: p for p, i in enumerate(ids)}  # as "more like this" looked positions up


def sorted_copy(column: IdColumn) -> IdColumn:
    column.positions([column[0]])  # the first lookup builds the sorted copy
    return column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in args.images:
        text = "".join(f"{i:016x}\n" for i in range(n)).encode()
        labels = [str(1_000_000 + i % LANDMARKS) for i in range(n)]
        ids, ids_list = held(id_list, text)
        _, pos_dict = held(position_dict, ids)
        _, lab_list = held(label_list, labels)
        del ids
        column, ids_col = held(IdColumn.from_lines, text)
        _, pos_col = held(sorted_copy, column)
        _, lab_col = held(label_column, labels)
        before, after = ids_list + pos_dict + lab_list, ids_col + pos_col + lab_col
        rows.append([f"{n:,}", f"{ids_list:.0f} / {ids_col:.0f}", f"{pos_dict:.0f} / {pos_col:.0f}",
                     f"{lab_list:.0f} / {lab_col:.0f}", f"{before:.0f} / {after:.0f}", f"{before / after:.1f}x"])
        print(rows[-1], flush=True)
    body = table(["images", "ids MiB (list / IdColumn)", "id -> position MiB (dict / sorted copy)",
                  "labels MiB (list / LabelColumn)", "total MiB", "smaller by"], rows)
    body += ("\n\nPer web process: each one holds its own. The sorted copy is made on the first \"more like this\" "
             "lookup, not at load.")
    if args.no_write:
        print(body)
    else:
        record("Ids and labels held by a web process", body, "python bench/bench_columns.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
