"""Kaggle CSV round trips, malformed input, and scoring per Usage."""

from pathlib import Path

import pytest

from ml.metrics import LandmarkPrediction
from ml.submission import (
    SubmissionError,
    detect_task,
    read_recognition_submission,
    read_retrieval_submission,
    read_solution,
    score_submission,
    write_recognition_submission,
    write_retrieval_submission,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_retrieval_round_trip_truncates_to_100(tmp_path):
    ids = [f"{i:016x}" for i in range(150)]
    path = write_retrieval_submission(tmp_path / "sub.csv", {"q1": ids, "q2": []})
    assert path.read_text().splitlines()[0] == "id,images"
    back = read_retrieval_submission(path)
    assert back == {"q1": ids[:100], "q2": []}
    assert detect_task(path) == "retrieval"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temporary file left behind


def test_recognition_round_trip_with_empty_prediction(tmp_path):
    preds = {"a": LandmarkPrediction("8815", 0.03), "b": None, "c": (7, 12.5)}
    path = write_recognition_submission(tmp_path / "sub.csv.gz", preds)
    back = read_recognition_submission(path)
    assert back == {"a": ("8815", 0.03), "b": None, "c": ("7", 12.5)}
    assert detect_task(path) == "recognition"


def test_writer_refuses_bad_values(tmp_path):
    with pytest.raises(SubmissionError, match="not finite"):
        write_recognition_submission(tmp_path / "s.csv", {"a": ("1", float("nan"))})
    with pytest.raises(SubmissionError, match="space"):
        write_retrieval_submission(tmp_path / "s.csv", {"a": ["x y"]})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,landmarks\na,12 0.5\nb,12\n", r"line 3: test image b: expected '<landmark_id> <confidence>'"),
        ("id,landmarks\na,12 high\n", r"line 2: test image a: confidence 'high' is not a finite number"),
        ("id,landmarks\na,12 nan\n", r"line 2: .*not a finite number"),
        ("id,landmarks\na,1 0.5\na,2 0.5\n", r"line 3: test image a is repeated"),
        ("id,landmarks,extra\na,1 0.5,x\n", r"unexpected \['extra'\]"),
        ("id,landmarks\na,1 0.5,oops\n", r"line 2: 3 field\(s\), expected 2"),
        ("id\na\n", r"neither an 'images' column"),
    ],
)
def test_malformed_submissions_name_file_and_line(tmp_path, text, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(SubmissionError, match=message) as info:
        if detect_task(path) == "retrieval":
            read_retrieval_submission(path)
        else:
            read_recognition_submission(path)
    assert str(path) in str(info.value)


def test_read_solution_usage(tmp_path):
    path = _write(tmp_path / "solution.csv",
                  "id,landmarks,Usage\na,1 2,Public\nb,,Public\nc,3,Private\nd,4,Ignored\n")
    sol = read_solution(path)
    assert sol.task == "recognition"
    assert sol.public == {"a": ["1", "2"], "b": []}
    assert sol.private == {"c": ["3"]}
    assert sol.ignored == {"d"}
    bad = _write(tmp_path / "bad.csv", "id,landmarks,Usage\na,1,Secret\n")
    with pytest.raises(SubmissionError, match="line 2: test image a: Usage 'Secret'"):
        read_solution(bad)
    empty = _write(tmp_path / "empty.csv", "id,images,Usage\nq,,Public\n")
    with pytest.raises(SubmissionError, match="mark it Ignored"):
        read_solution(empty)


def test_score_recognition_per_usage(tmp_path):
    solution = _write(tmp_path / "solution.csv", "\n".join([
        "id,landmarks,Usage",
        "a,1,Public",
        "b,2,Public",
        "c,,Public",      # not a landmark
        "d,4,Private",
        "e,5,Ignored",
    ]) + "\n")
    submission = write_recognition_submission(tmp_path / "sub.csv", {
        "a": ("1", 0.9),   # right, rank 1
        "c": ("9", 0.8),   # guess on a non-landmark, rank 2
        "b": ("2", 0.7),   # right, rank 3
        "d": ("0004", 0.6),  # right: "0004" is landmark 4
        "e": ("5", 99.0),  # ignored: must not take rank 1
    })
    scores = score_submission(submission, solution)
    assert scores["task"] == "recognition"
    assert scores["public"]["gap"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["public"]["accuracy"] == pytest.approx(1.0)
    assert scores["private"]["gap"] == pytest.approx(1.0)
    # All together: ranks a, c, b, d -> (1 + 2/3 + 3/4) / 3.
    assert scores["all"]["gap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert scores["all"]["landmark_images"] == 3


def test_score_retrieval_per_usage(tmp_path):
    solution = _write(tmp_path / "solution.csv",
                      "id,images,Usage\nq1,x y,Public\nq2,z,Private\nq3,w,Private\nq4,v,Ignored\n")
    submission = write_retrieval_submission(tmp_path / "sub.csv", {
        "q1": ["x", "n", "y"],  # (1 + 2/3) / 2
        "q2": ["n", "z"],       # 1/2
        "q4": ["v"],            # ignored
    })                          # q3 missing: 0
    scores = score_submission(submission, solution)
    assert scores["public"]["map@100"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["private"]["map@100"] == pytest.approx((0.5 + 0) / 2)
    assert scores["all"]["map@100"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 3)
    assert scores["all"]["queries"] == 3


def test_score_rejects_unknown_ids_and_task_mismatch(tmp_path):
    solution = _write(tmp_path / "solution.csv", "id,images,Usage\nq1,x,Public\n")
    unknown = write_retrieval_submission(tmp_path / "sub.csv", {"q9": ["x"]})
    with pytest.raises(SubmissionError, match="not in the solution"):
        score_submission(unknown, solution)
    recognition = write_recognition_submission(tmp_path / "rec.csv", {"q1": ("1", 1.0)})
    with pytest.raises(SubmissionError, match="recognition submission but"):
        score_submission(recognition, solution)
    with pytest.raises(SubmissionError, match="no such file"):
        score_submission(tmp_path / "missing.csv", solution)


def test_submission_cells_cannot_run_as_formulas(tmp_path):
    # Ids from outside the catalogue may be anything the writer accepts; numbers stay exact.
    rec = write_recognition_submission(tmp_path / "rec.csv", {"=1+1": ("@x", -3.0), "q2": ("8815", -0.5)})
    assert rec.read_text().splitlines() == ["id,landmarks", "'=1+1,'@x -3", "q2,8815 -0.5"]
    ret = write_retrieval_submission(tmp_path / "ret.csv", {"q1": ["+a", "b"], "q2": ["0a1", "-c"]})
    assert ret.read_text().splitlines() == ["id,images", "q1,'+a b", "q2,0a1 -c"]
