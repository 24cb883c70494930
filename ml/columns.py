"""The ids and labels of an index by position, held compactly.

A web process keeps the id and the label of every indexed image: ids to name results, labels for
label-aware re-ranking and recognition. As Python lists of strings they cost about 70 and 60 bytes an
image (each a string object of its own): 520 MB at 4 M images, in every web process, plus a dict from id
to position for "more like this". Here:

- ``IdColumn``: the ids as one fixed-width bytes array (16 bytes an id for GLDv2's 16-hex ids), with a
  sorted copy for looking positions up by id (made on first use): 64 + 96 MB at 4 M.
- ``LabelColumn``: a 4-byte code per image into the table of distinct labels (203 k landmarks in GLDv2):
  16 MB plus the table.

Both read like the lists they replace (indexing, slicing, ``len``, iteration, ``==`` with a list).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

NO_LABEL = -1


class _Column(Sequence):
    """Equal to any sequence with the same items, like the list it stands for."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # compared by content, like a list


class LabelColumn(_Column):
    """Read-only sequence of labels (None: unlabelled) backed by int32 codes."""

    def __init__(self, codes: np.ndarray, table: Sequence[Hashable]) -> None:
        self.codes = np.asarray(codes, dtype=np.int32)
        self.table = list(table)

    @classmethod
    def from_labels(cls, labels: Iterable[Hashable | None]) -> LabelColumn:
        return LabelColumnBuilder().extend(labels).build()

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LabelColumn(self.codes[i], self.table)
        code = self.codes[i]
        return None if code == NO_LABEL else self.table[code]

    def __repr__(self) -> str:
        return f"LabelColumn({len(self)} positions, {len(self.table)} distinct labels)"


class LabelColumnBuilder:
    """Codes appended position by position (the labels read from the database in chunks)."""

    def __init__(self) -> None:
        self._codes: list[np.ndarray] = []
        self._index: dict[Hashable, int] = {}

    def extend(self, labels: Iterable[Hashable | None]) -> LabelColumnBuilder:
        index = self._index
        codes = [NO_LABEL if label is None else index.setdefault(label, len(index)) for label in labels]
        self._codes.append(np.asarray(codes, dtype=np.int32))
        return self

    def build(self) -> LabelColumn:
        codes = np.concatenate(self._codes) if self._codes else np.zeros(0, np.int32)
        return LabelColumn(codes, list(self._index))


class IdColumn(_Column):
    """Read-only sequence of string ids backed by a fixed-width UTF-8 bytes array."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = np.asarray(raw)
        if self.raw.dtype.kind != "S":
            raise TypeError(f"IdColumn holds a bytes array, got {self.raw.dtype}")
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> IdColumn:
        if isinstance(ids, IdColumn):
            return ids
        encoded = [i.encode() for i in ids]
        return cls(np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}"))

    @classmethod
    def from_lines(cls, text: bytes) -> IdColumn:
        """The ids of a file with one id per line (``ids.txt``)."""
        lines = text.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return cls(np.array(lines, dtype=f"S{max(map(len, lines), default=1)}"))

    @classmethod
    def concat(cls, parts: Sequence[Sequence[str]]) -> IdColumn:
        raws = [cls.from_ids(p).raw for p in parts]
        width = max((r.dtype.itemsize for r in raws), default=1)
        return cls(np.concatenate([r.astype(f"S{width}") for r in raws]) if raws else np.zeros(0, "S1"))

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return IdColumn(self.raw[i])
        return self.raw[i].decode()

    def __repr__(self) -> str:
        return f"IdColumn({len(self)} ids)"

    def positions(self, ids: Iterable[str]) -> Mapping[str, int]:
        """Position of each of ``ids`` that the column holds (binary search in a sorted copy)."""
        if self._sorted is None:
            order = np.argsort(self.raw, kind="stable")
            self._sorted = (self.raw[order], order)
        keys, order = self._sorted
        wanted = [i for i in dict.fromkeys(ids) if len(i.encode()) <= self.raw.dtype.itemsize]
        if not wanted or not len(keys):
            return {}
        probe = np.array([i.encode() for i in wanted], dtype=self.raw.dtype)
        at = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
        return {i: int(order[a]) for i, a, hit in zip(wanted, at, keys[at] == probe, strict=True) if hit}
