"""bench.common.record keeps docs/benchmarks.md a reference: one section per title, the latest run, rewritten
in place, and the run it replaces moved to docs/benchmarks-archive.md. Then the real file: no title twice,
and every title a benchmark records at most once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import common

ROOT = Path(common.__file__).resolve().parent.parent

START = """# Benchmarks

The header: one line about the file.

## First

2026-01-01 10:00 UTC · a machine · `python bench/first.py`

| a | b |
|---|---|
| 1 | 2 |

## Second

2026-01-02 11:00 UTC · a machine · `python bench/second.py --old`

| old second | 1 |
|---|---|

Notes written by hand under the table.

## Third

2026-01-03 12:00 UTC · a machine · `python bench/third.py`

third's table
"""


@pytest.fixture
def files(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """record()'s two files, pointed at a temporary folder."""
    results, archive = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "benchmarks-archive.md"
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(common, "ARCHIVE", archive)
    results.parent.mkdir()
    return results, archive


def stamp(command: str) -> str:
    """The stamp line record() writes under a heading, as a regular expression."""
    return r"\d{4}-\d\d-\d\d \d\d:\d\d UTC · .+ · `" + re.escape(command) + "`"


def titles(path: Path) -> list[str]:
    return re.findall(r"^## (.*)$", path.read_text(), flags=re.MULTILINE)


def test_a_new_title_is_added_at_the_end(files):
    results, archive = files
    results.write_text(START)
    common.record("Fourth", "| x |\n|---|\n| 4 |", "python bench/fourth.py")
    text = results.read_text()
    assert titles(results) == ["First", "Second", "Third", "Fourth"]
    assert text.startswith(START)  # the header and every other section as they were
    table = r"\n\n\| x \|\n\|---\|\n\| 4 \|\n$"
    assert re.search(r"\n\n## Fourth\n\n" + stamp("python bench/fourth.py") + table, text)
    assert not archive.exists()  # nothing was replaced


def test_recording_a_title_again_replaces_its_section_in_place_and_archives_the_old_one(files):
    results, archive = files
    results.write_text(START)
    head, before = common.sections(START)
    common.record("Second", "| new second | 2 |\n|---|---|", "python bench/second.py --new")

    text = results.read_text()
    assert titles(results) == ["First", "Second", "Third"]
    after_head, after = common.sections(text)
    assert after_head == head
    assert after[0] == before[0] and after[2] == before[2]
    table = r"\n\n\| new second \| 2 \|\n\|---\|---\|\n\n"
    assert re.fullmatch(r"## Second\n\n" + stamp("python bench/second.py --new") + table, after[1])
    assert "old second" not in text and "Notes written by hand" not in text

    # The old section, unchanged with its own date, under the archive's header.
    old = archive.read_text()
    assert old.startswith(common.ARCHIVE_HEADER)
    assert titles(archive) == ["Second"]
    assert common.sections(old)[1][0].rstrip("\n") == before[1].rstrip("\n")

    # Once more: the first new run joins the archive after the original one (newest last).
    common.record("Second", "third run", "python bench/second.py")
    assert titles(results) == ["First", "Second", "Third"]
    assert "third run" in results.read_text()
    archived = common.sections(archive.read_text())[1]
    assert [common.section_title(s) for s in archived] == ["Second", "Second"]
    assert "--old" in archived[0] and "new second" in archived[1]
    assert common.sections(archive.read_text())[0] == common.sections(old)[0]  # the header stays


def test_a_title_held_twice_fails_and_writes_nothing(files):
    results, archive = files
    twice = START + "\n## Second\n\n2026-01-04 09:00 UTC · a machine · `python bench/second.py`\n\nagain\n"
    results.write_text(twice)
    with pytest.raises(ValueError, match=r"2 sections titled 'Second'.*must name one section"):
        common.record("Second", "new", "python bench/second.py")
    assert results.read_text() == twice
    assert not archive.exists()


def test_the_file_is_created_with_its_header_and_never_holds_a_title_twice(files):
    results, archive = files
    for i, title in enumerate(["A", "B", "A", "C", "B", "A"]):
        common.record(title, f"run {i}", f"python bench/{title}.py")
        found = titles(results)
        assert len(found) == len(set(found))
    assert results.read_text().startswith(common.RESULTS_HEADER)
    assert titles(results) == ["A", "B", "C"]
    assert [common.section_title(s) for s in common.sections(results.read_text())[1]] == ["A", "B", "C"]
    assert "run 5" in results.read_text() and "run 4" in results.read_text()
    assert titles(archive) == ["A", "B", "A"]  # runs 0, 1 and 2, in the order they were replaced
    assert not list(results.parent.glob(".*.tmp"))  # no temporary file left behind


def test_the_real_file_holds_each_benchmark_title_at_most_once():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    found = re.findall(r"^## (.*)$", text, flags=re.MULTILINE)
    assert found
    assert sorted({t for t in found if found.count(t) > 1}) == []

    # Titles written as plain string literals (not f-strings, not variables) in record("...", ...).
    recorded = {}
    for path in sorted((ROOT / "bench").glob("*.py")):
        for title in re.findall(r"\brecord\(\s*\"([^\"\\{}]+)\"\s*,", path.read_text()):
            assert title not in recorded, f"{path.name} and {recorded[title]} both record {title!r}"
            recorded[title] = path.name
    assert len(recorded) >= 10  # the regex still finds the calls
    for title in recorded:
        assert found.count(title) <= 1, title

    # Every section starts with its stamp line: a date and, in backticks, what measured it.
    for section in common.sections(text)[1]:
        stamp = section.split("\n\n", 2)[1]
        assert re.search(r"\d{4}-\d\d-\d\d", stamp) and "`" in stamp, common.section_title(section)
