"""CSV formula injection: text a spreadsheet would run is neutralised, numbers and ids are not."""

import csv
import io

import pytest

from ml.csv_cells import safe_cell, writer


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3+cmd|'x'!A0",
                                  "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "-A1"])
def test_formula_like_text_gets_a_leading_quote(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["-3", "-0.25", "+1e-5", "12", "8815 0.03", "a=b", "", "london_bridge",
                                   -3, -0.5, 7, None])
def test_numbers_ids_and_plain_text_are_unchanged(value):
    assert safe_cell(value) == value


def test_writer_neutralises_every_cell_of_every_row():
    out = io.StringIO()
    w = writer(out, lineterminator="\n")
    w.writerow(["id", "reason"])
    w.writerows([["a1", "=1+1"], ["b2", "-0.5"], ["c3", "@me"]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["id", "reason"], ["a1", "'=1+1"], ["b2", "-0.5"], ["c3", "'@me"]]
