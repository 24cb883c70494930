"""Kaggle Google Landmark submission and solution CSVs: write, read, score.

Formats (as DELF's ``dataset_file_io.py`` reads them):

- retrieval submission ``id,images``: the test id, then up to 100 index image ids separated by spaces;
- recognition submission ``id,landmarks``: the test id, then ``<landmark_id> <confidence>``, or nothing
  for no prediction;
- solution: the same columns plus ``Usage`` (``Public``, ``Private`` or ``Ignored``); in a recognition
  solution ``landmarks`` lists the image's ground-truth landmark ids (empty: not a landmark), in a
  retrieval solution ``images`` lists the relevant index images. Ignored rows are left out of scoring.

Cells go through ``ml.csv_cells`` (text that a spreadsheet would run as a formula gets a leading quote;
numbers and catalogue ids, which start with a letter or digit, are written unchanged, as Kaggle reads them).
Files ending in ``.gz`` are read and written gzip-compressed. Bad input raises ``SubmissionError``
naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml import csv_cells
from ml.metrics import (
    LandmarkPrediction,
    global_average_precision,
    mean_average_precision_at_k,
    top1_accuracy,
)

RETRIEVAL, RECOGNITION = "retrieval", "recognition"
TASK_COLUMN = {RETRIEVAL: "images", RECOGNITION: "landmarks"}
MAX_RETRIEVED = 100
USAGES = ("Public", "Private", "Ignored")


class SubmissionError(ValueError):
    """A submission or solution file is malformed; the message names the file and the line."""


@dataclass
class Solution:
    """Ground truth of one task, split by Kaggle's ``Usage``."""

    task: str
    public: dict[str, list[str]] = field(default_factory=dict)
    private: dict[str, list[str]] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)

    @property
    def scored(self) -> dict[str, list[str]]:
        return {**self.public, **self.private}


# --- writing ---------------------------------------------------------------------------------------

def write_retrieval_submission(
    path: Path | str, predictions: Mapping[str, Sequence[str]], max_images: int = MAX_RETRIEVED
) -> Path:
    """Write ``id,images``; each row keeps the first ``max_images`` ids (the metric reads no more)."""
    rows = ((test_id, " ".join(_check_token(i, path, test_id) for i in list(ids)[:max_images]))
            for test_id, ids in predictions.items())
    return _write_csv(path, ("id", "images"), rows)


def write_recognition_submission(
    path: Path | str, predictions: Mapping[str, tuple[str | int, float] | None]
) -> Path:
    """Write ``id,landmarks``: ``<landmark_id> <confidence>`` per test image, empty for no prediction."""
    def cell(test_id: str, pred: tuple[str | int, float] | None) -> str:
        if pred is None:
            return ""
        landmark_id, confidence = pred
        if not math.isfinite(float(confidence)):
            raise SubmissionError(f"{path}: test image {test_id}: confidence {confidence!r} is not finite")
        return f"{_check_token(str(landmark_id), path, test_id)} {float(confidence):.6g}"

    return _write_csv(path, ("id", "landmarks"), ((t, cell(t, p)) for t, p in predictions.items()))


def _check_token(value: str, path: Path | str, test_id: str) -> str:
    value = str(value)
    if not value or any(c.isspace() or c == "," for c in value):
        raise SubmissionError(f"{path}: test image {test_id}: id {value!r} is empty or contains a space/comma")
    return value


def _write_csv(path: Path | str, header: Sequence[str], rows: Iterator[tuple[str, str]]) -> Path:
    """Write to a temporary file beside ``path`` and rename, so no half-written CSV is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw
            with io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:
                writer = csv_cells.writer(text, lineterminator="\n")
                writer.writerow(header)
                for test_id, cell in rows:
                    writer.writerow((_check_token(test_id, path, test_id), cell))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- reading ---------------------------------------------------------------------------------------

def detect_task(path: Path | str) -> str:
    """``retrieval`` or ``recognition``, from the header of a submission or solution file."""
    header = _header(Path(path))
    for task, column in TASK_COLUMN.items():
        if column in header:
            return task
    raise SubmissionError(f"{path}: header {header} has neither an 'images' column (retrieval) "
                          "nor a 'landmarks' column (recognition)")


def read_retrieval_submission(path: Path | str) -> dict[str, list[str]]:
    """``{test_id: [index ids, in rank order]}``; every id is kept (scoring reads the first 100)."""
    return {test_id: cell.split() for _, test_id, cell in _submission_rows(Path(path), RETRIEVAL)}


def read_recognition_submission(path: Path | str) -> dict[str, LandmarkPrediction | None]:
    """``{test_id: LandmarkPrediction(landmark_id, confidence) or None}``."""
    path = Path(path)
    out: dict[str, LandmarkPrediction | None] = {}
    for line, test_id, cell in _submission_rows(path, RECOGNITION):
        out[test_id] = _parse_recognition(cell, path, line, test_id)
    return out


def read_solution(path: Path | str) -> Solution:
    """Read a Kaggle solution file (``id``, ``images`` or ``landmarks``, ``Usage``)."""
    path = Path(path)
    task = detect_task(path)
    solution = Solution(task)
    seen: set[str] = set()
    for line, row in _rows(path, ("id", TASK_COLUMN[task], "Usage")):
        test_id = _test_id(row, path, line, seen)
        usage = row["Usage"].strip()
        if usage not in USAGES:
            raise SubmissionError(f"{path} line {line}: test image {test_id}: Usage {usage!r} is not one of "
                                  f"{', '.join(USAGES)}")
        if usage == "Ignored":
            solution.ignored.add(test_id)
            continue
        ids = row[TASK_COLUMN[task]].split()
        if task == RETRIEVAL and not ids:
            raise SubmissionError(f"{path} line {line}: test image {test_id} has no relevant index images; "
                                  "mAP@100 is undefined for it (mark it Ignored)")
        if task == RECOGNITION:
            ids = [_landmark_id(i) for i in ids]
        (solution.public if usage == "Public" else solution.private)[test_id] = ids
    return solution


def _submission_rows(path: Path, task: str) -> Iterator[tuple[int, str, str]]:
    seen: set[str] = set()
    for line, row in _rows(path, ("id", TASK_COLUMN[task]), exact=True):
        yield line, _test_id(row, path, line, seen), row[TASK_COLUMN[task]].strip()


def _parse_recognition(cell: str, path: Path, line: int, test_id: str) -> LandmarkPrediction | None:
    if not cell:
        return None
    tokens = cell.split()
    if len(tokens) != 2:
        raise SubmissionError(f"{path} line {line}: test image {test_id}: expected '<landmark_id> <confidence>', "
                              f"found {len(tokens)} value(s): {cell!r}")
    try:
        confidence = float(tokens[1])
    except ValueError:
        confidence = math.nan
    if not math.isfinite(confidence):
        raise SubmissionError(f"{path} line {line}: test image {test_id}: confidence {tokens[1]!r} "
                              "is not a finite number")
    return LandmarkPrediction(_landmark_id(tokens[0]), confidence)


def _landmark_id(token: str) -> str:
    # Kaggle's ids are integers (DELF parses them with int()): "007" and "7" are the same landmark.
    return str(int(token)) if token.isdigit() else token


def _test_id(row: dict[str, str], path: Path, line: int, seen: set[str]) -> str:
    test_id = row["id"].strip()
    if not test_id:
        raise SubmissionError(f"{path} line {line}: empty id")
    if test_id in seen:
        raise SubmissionError(f"{path} line {line}: test image {test_id} is repeated")
    seen.add(test_id)
    return test_id


def _open_text(path: Path):
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _header(path: Path) -> list[str]:
    try:
        with _open_text(path) as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise SubmissionError(f"{path}: unreadable CSV: {exc}") from exc


def _rows(path: Path, columns: Sequence[str], exact: bool = False) -> Iterator[tuple[int, dict[str, str]]]:
    """Data rows as dicts with the header checked; ``line`` is the file's line number (header = 1)."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in columns if c not in header]
            extra = [h for h in header if h not in columns]
            if missing or (exact and extra):
                raise SubmissionError(f"{path}: header {header}: expected columns {','.join(columns)}"
                                      + (f"; missing {missing}" if missing else f"; unexpected {extra}"))
            for values in reader:
                if not values or values == [""]:
                    continue  # blank lines, as DELF skips them
                if len(values) != len(header):
                    raise SubmissionError(f"{path} line {reader.line_num}: {len(values)} field(s), "
                                          f"expected {len(header)} ({','.join(header)})")
                yield reader.line_num, dict(zip(header, values, strict=True))
    except (UnicodeDecodeError, OSError, csv.Error) as exc:
        raise SubmissionError(f"{path}: unreadable CSV: {exc}") from exc


# --- scoring ---------------------------------------------------------------------------------------

def score_submission(submission_path: Path | str, solution_path: Path | str) -> dict[str, Any]:
    """Score a submission against a solution, per Usage (``public``, ``private``) and ``all`` together.

    Recognition reports ``gap`` and ``accuracy``; retrieval reports ``map@100``. A metric that is
    undefined on a subset (no query, or no landmark image in it) is None. Predictions for Ignored test
    images are dropped; a prediction for an id the solution does not know is an error.
    """
    submission_path, solution_path = Path(submission_path), Path(solution_path)
    task = detect_task(submission_path)
    solution = read_solution(solution_path)
    if solution.task != task:
        raise SubmissionError(f"{submission_path} is a {task} submission but {solution_path} is a "
                              f"{solution.task} solution")
    if task == RETRIEVAL:
        predictions: Mapping[str, Any] = read_retrieval_submission(submission_path)
    else:
        predictions = read_recognition_submission(submission_path)
    unknown = [t for t in predictions if t not in solution.ignored and t not in solution.scored]
    if unknown:
        raise SubmissionError(f"{submission_path}: {len(unknown)} test id(s) not in the solution "
                              f"{solution_path}, e.g. {unknown[0]}")
    result: dict[str, Any] = {"task": task, "predicted": len(predictions)}
    for name, subset in (("public", solution.public), ("private", solution.private), ("all", solution.scored)):
        result[name] = _score_subset(task, predictions, subset)
    return result


def _score_subset(task: str, predictions: Mapping[str, Any], subset: dict[str, list[str]]) -> dict[str, Any]:
    preds = {t: p for t, p in predictions.items() if t in subset}
    if task == RETRIEVAL:
        return {"queries": len(subset),
                "map@100": mean_average_precision_at_k(preds, subset, MAX_RETRIEVED) if subset else None}
    with_truth = sum(1 for labels in subset.values() if labels)
    return {
        "queries": len(subset),
        "landmark_images": with_truth,
        "gap": global_average_precision(preds, subset) if with_truth else None,
        "accuracy": top1_accuracy(preds, subset) if with_truth else None,
    }
