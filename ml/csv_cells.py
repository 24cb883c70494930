"""CSV cells that a spreadsheet cannot run (CSV formula injection, OWASP).

Spreadsheet programs read a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
as a formula, so text a person typed (a takedown reason, a landmark name, a user name) could run when an
exported CSV is opened. Every CSV the product writes goes through ``writer``, which prefixes such a text
cell with a single quote, as OWASP advises.

The rule: text is neutralised, numbers are not. A Python number (int, float) is written as is, and so is a
string that is a plain number literal (``-3``, ``-0.25``, ``+1e-5``): a spreadsheet reads it as that
number, never as a formula, and the numbers the product computes (scores, confidences) stay exact.
Catalogue ids always start with a letter or digit (``ml.datasets``), so ids are never changed either.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """``value`` as a cell no spreadsheet runs: text starting like a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(v) for v in row]


class SafeWriter:
    """``csv.writer`` whose every cell goes through ``safe_cell``."""

    def __init__(self, f, **kwargs):
        self._writer = csv.writer(f, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(f, **kwargs) -> SafeWriter:
    """Like ``csv.writer(f, **kwargs)``, with formula-like text cells neutralised."""
    return SafeWriter(f, **kwargs)
