"""Calibrate a preset's scores on held-out queries of landmarks-dev/train, and report on sets never used.

Folds (seeds of our own) over landmarks-dev/train: in each, a few landmarks are left out of the database
entirely (their photos become queries whose right answer is "no landmark"), and a few photos of every
other landmark become queries against the rest. Each fold's database is built and searched exactly as
the product does (``ml.evaluate``, the preset with its calibrations switched off); from every query we
keep each result's evidence (fused ranking score, label agreement) and each landmark candidate's
(``Recognition.evidence``), with whether it was right. Then:

- recognition: P(candidate right | evidence) by logistic regression (``ml.calibration``);
- result scores: P(result shows the query's place | fused, agreement with the calibrated recognition);
- leave-one-fold-out: mAP of ranking by that score against the preset's own order, and the calibration
  error of both models on the fold left out, to choose whether the score should order the results.

The presets use the result scores; the recognition model is fitted and printed but no preset uses it:
it named far fewer right landmarks on landmarks-mini (docs/decisions/0007).

``--fit`` prints the fitted weights for ``ml/pipeline.py``. ``--report`` runs the preset as it is now (with
its calibrations) on landmarks-dev/eval and landmarks-mini (plus scikit-image's 4 non-landmark photos as
queries), and the reliability tables are recorded in docs/benchmarks.md.

    .venv/bin/python bench/calibrate.py --pipeline default --fit [--folds 3] [--cache DIR]
    .venv/bin/python bench/calibrate.py --pipeline default --report [--no-write]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_retrieval import non_landmark_photos  # noqa: E402
from bench.common import SHARED_DATA, record, table  # noqa: E402
from ml.calibration import (  # noqa: E402
    ConfidenceConfig,
    ScoreConfig,
    calibration_error,
    fit_logistic,
    reliability,
)
from ml.evaluate import EvalCache, run_evaluation  # noqa: E402
from ml.pipeline import PipelineConfig, get_pipeline, search_one  # noqa: E402

TRAIN = SHARED_DATA / "landmarks-dev" / "train"
REPORT_SETS = {"landmarks-dev/eval": SHARED_DATA / "landmarks-dev" / "eval", "landmarks-mini": SHARED_DATA / "landmarks-mini"}
TOP = 1000  # results per query whose evidence is kept (the whole ranking of these databases)


def uncalibrated(p: PipelineConfig) -> PipelineConfig:
    """The preset with its calibrations off: noisy-OR recognition evidence, its own order."""
    return replace(p, recognition=replace(p.recognition, calibration=None), scores=replace(p.scores, rank=False))


def fold_layout(folder: Path, seed: int, absent: int, per_landmark: int) -> Path:
    """An evaluation layout over landmarks-dev/train: ``absent`` landmarks only as queries, ``per_landmark``
    photos of every other landmark as queries, the rest as the labelled database."""
    rows = list(csv.DictReader((TRAIN / "images.csv").open()))
    by_landmark: dict[str, list[str]] = {}
    for r in rows:
        by_landmark.setdefault(r["landmark_id"], []).append(r["id"])
    rng = random.Random(seed)
    landmarks = sorted(by_landmark)
    gone = set(rng.sample(landmarks, absent))
    queries, database, labels = {}, [], {}
    for lm in landmarks:
        ids = sorted(by_landmark[lm])
        rng.shuffle(ids)
        if lm in gone:
            queries.update({i: lm for i in ids[:per_landmark]})
            continue
        queries.update({i: lm for i in ids[:per_landmark]})
        database += ids[per_landmark:]
        labels.update({i: lm for i in ids[per_landmark:]})
    (folder / "images").mkdir(parents=True)
    for i in list(queries) + database:
        (folder / "images" / f"{i}.jpg").symlink_to(TRAIN / "images" / f"{i}.jpg")
    gnd = {"images": database, "labels": labels,
           "queries": {q: {"easy": [i for i in database if labels[i] == lm], "hard": [], "junk": []}
                       for q, lm in queries.items()}}
    (folder / "gnd.json").write_text(json.dumps(gnd))
    (folder / "truth.json").write_text(json.dumps(queries))
    return folder


def collect(run, truth: dict[str, str]) -> dict:
    """Per query: candidates' evidence with whether each is right, and the top results' evidence."""
    labels = run.layout.labels or {}
    out = {}
    for qid, result in run.results.items():
        rec = result.recognition
        candidates = [(str(lab), list(rec.evidence[lab]), str(lab) == str(truth.get(qid))) for lab, _ in rec.candidates]
        hits = [(h.image_id, h.fused, str(labels.get(h.image_id)), str(labels.get(h.image_id)) == str(truth.get(qid)))
                for h in result.hits[:TOP]]
        out[qid] = {"candidates": candidates, "hits": hits}
    return out


def recognition_rows(queries: dict) -> tuple[np.ndarray, np.ndarray]:
    x = [[e, r, s, float(n)] for q in queries.values() for _, (e, r, s, n), _ in q["candidates"]]
    y = [right for q in queries.values() for _, _, right in q["candidates"]]
    return np.asarray(x, float), np.asarray(y, bool)


def best_candidate(q: dict, cc: ConfidenceConfig) -> tuple[str | None, float, bool]:
    """The landmark the calibrated recognition names for a query, its confidence, and whether it is right."""
    scored = [(cc.probability(*ev), label, right) for label, ev, right in q["candidates"]]
    if not scored:
        return None, 0.0, False
    p, label, right = max(scored, key=lambda t: t[0])
    return label, p, right


def score_rows(queries: dict, cc: ConfidenceConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """Per kept result: (fused, the recognition's confidence if it shows its landmark, else 0): the
    calibrated recognition's with ``cc``, else the noisy-OR evidence of the vote's first candidate."""
    x, y = [], []
    for q in queries.values():
        if cc is not None:
            best, p, _ = best_candidate(q, cc)
        else:
            best, evidence, _ = q["candidates"][0] if q["candidates"] else (None, [0.0], False)
            p = evidence[0]
        for _, fused, label, right in q["hits"]:
            x.append([fused, p if label == best else 0.0])
            y.append(right)
    return np.asarray(x, float), np.asarray(y, bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="default")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--absent", type=int, default=5, help="landmarks left out of each fold's database")
    parser.add_argument("--per-landmark", type=int, default=4, help="query photos per landmark")
    parser.add_argument("--cache", type=Path, help="keep each fold's collected evidence here (JSON)")
    parser.add_argument("--fit", action="store_true", help="fit on the folds and print the weights")
    parser.add_argument("--report", action="store_true", help="the preset as configured, on the report sets")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not (args.fit or args.report):
        parser.error("give --fit, --report or both")
    preset = get_pipeline(args.pipeline)
    started = time.perf_counter()
    if args.fit:
        folds = [gather(preset, seed, args) for seed in range(1, args.folds + 1)]
        fitted = fit_and_compare(folds, preset)
        print(json.dumps({k: asdict(v) for k, v in fitted.items()}, indent=1))
    if args.report:
        report(preset, args, started)


def gather(preset: PipelineConfig, seed: int, args) -> dict:
    path = args.cache / f"{preset.name}-fold{seed}.json" if args.cache else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        layout = fold_layout(Path(tmp) / "layout", seed, args.absent, args.per_landmark)
        truth = json.loads((layout / "truth.json").read_text())
        run = run_evaluation(layout, uncalibrated(preset), use_labels=True, cache=EvalCache(Path(tmp) / "cache"))
        own = {q: [h.image_id for h in r.hits] for q, r in run.results.items()}
        data = {"queries": collect(run, truth), "truth": truth, "own_order": own,
                "gnd": json.loads((layout / "gnd.json").read_text())}
    print(f"fold {seed}: {len(data['queries'])} queries", flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    return data


def fit_and_compare(folds: list[dict], preset: PipelineConfig) -> dict:
    """Leave-one-fold-out comparison, then the weights fitted on every fold."""
    rows = []
    uses_labels, calibrated = preset.label_rerank.method != "none", preset.recognition.calibration is not None
    for k, held in enumerate(folds):
        train = [f for j, f in enumerate(folds) if j != k]
        cc, sc = fit(train, uses_labels, calibrated)
        rows.append(compare(held, cc, sc, calibrated))
    print(table(["fold", "queries", "mAP own order", "mAP by score", "recognition ECE", "score ECE"],
                [[k + 1, *r] for k, r in enumerate(rows)]))
    cc, sc = fit(folds, uses_labels, calibrated)
    return {"recognition": cc, "scores": sc}


def fit(folds: list[dict], uses_labels: bool, calibrated: bool) -> tuple[ConfidenceConfig, ScoreConfig]:
    """The recognition's and the scores' weights; the scores' label term weighs the confidence the preset's
    recognition gives (``calibrated`` or noisy-OR). A preset without label steps keeps its own order (the
    label term would make it a label re-ranking), so its score weighs the fused evidence only."""
    queries = {f"{k}:{q}": v for k, f in enumerate(folds) for q, v in f["queries"].items()}
    w, b = fit_logistic(*recognition_rows(queries))
    cc = ConfidenceConfig(*[round(float(v), 3) for v in w], round(b, 3))
    x, y = score_rows(queries, cc if calibrated else None)
    if not uses_labels:
        w, b = fit_logistic(x[:, :1], y)
        return cc, ScoreConfig(round(float(w[0]), 3), 0.0, round(b, 3), rank=False)
    w, b = fit_logistic(x, y)
    return cc, ScoreConfig(round(float(w[0]), 3), round(float(w[1]), 3), round(b, 3), rank=True)


def compare(fold: dict, cc: ConfidenceConfig, sc: ScoreConfig, calibrated: bool) -> list:
    """mAP of the preset's own order and of ordering by the calibrated score, and both calibration errors."""
    queries = fold["queries"]
    picked = [best_candidate(q, cc) for q in queries.values()]
    rec_p = [p for label, p, _ in picked if label is not None]
    rec_y = [right for label, _, right in picked if label is not None]
    x, y = score_rows(queries, cc if calibrated else None)
    p = sc.probability(x[:, 0], x[:, 1])
    by_score, start = {}, 0
    for qid, q in queries.items():
        n = len(q["hits"])
        order = np.argsort(-p[start:start + n], kind="stable")
        by_score[qid] = [q["hits"][j][0] for j in order]
        start += n
    return [len(queries), f"{_map(fold, fold['own_order']):.2f}", f"{_map(fold, by_score):.2f}",
            f"{calibration_error(rec_p, rec_y):.3f}", f"{calibration_error(p, y):.3f}"]


def _map(fold: dict, rankings: dict) -> float:
    """mAP@100 of rankings over the queries whose landmark is in the database."""
    from ml.metrics import mean_average_precision_at_k

    gnd = fold["gnd"]["queries"]
    solution = {q: set(g["easy"]) for q, g in gnd.items() if g["easy"]}
    return 100.0 * mean_average_precision_at_k({q: rankings[q] for q in solution}, solution, 100)


def report(preset: PipelineConfig, args, started: float) -> None:
    """The preset as configured now on the report sets: mAP, GAP and the reliability of its confidences."""
    rows, rec_p, rec_y, hit_p, hit_y = [], [], [], [], []
    for name, folder in REPORT_SETS.items():
        with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
            rows += _report_set(name, folder, preset, EvalCache(Path(tmp)), rec_p, rec_y, hit_p, hit_y)
    body = table(["data set", "labels", "mAP medium", "s/query"], rows)
    rule = (f"calibrated, \"no landmark\" below {preset.recognition.threshold}" if preset.recognition.calibration
            else f"noisy-OR evidence, not calibrated, \"no landmark\" below {preset.recognition.threshold}")
    body += (f"\n\nRecognition confidence ({rule}; right = its best landmark is right), the labelled report "
             "queries and scikit-image's 4 non-landmark photos with each set:\n\n")
    body += _reliability_table(rec_p, rec_y)
    body += "\n\nResult scores (the result shows the query's landmark), every result of each query:\n\n"
    body += _reliability_table(hit_p, hit_y)
    body += (f"\n\nCalibrated on {args.folds} folds of landmarks-dev/train (seeds 1-{args.folds}; {args.absent} landmarks "
             f"absent from each fold's database, {args.per_landmark} query photos a landmark); reported on sets never "
             f"used to fit. Whole run: {time.perf_counter() - started:.0f} s.")
    if args.no_write:
        print(body)
    else:
        record(f"Calibrated result scores and the recognition confidence ({preset.name})", body,
               "python bench/calibrate.py " + " ".join(sys.argv[1:]))


def _report_set(name, folder, preset, cache, rec_p, rec_y, hit_p, hit_y) -> list:
    """Both regimes on one set (one embedding, shared); the labelled run adds to the reliability lists."""
    rows = []
    for labels in (False, True):
        run = run_evaluation(folder, preset, use_labels=labels, cache=cache)
        m = run.metrics
        rows.append([name, "yes" if labels else "no", f"{m['medium']:.2f}", f"{m['seconds_per_query']:.2f}"])
        if not labels:
            continue
        truth = {q.query_id: {run.layout.labels[i] for i in q.easy + q.hard} for q in run.layout.queries}
        for qid, r in run.results.items():
            best = r.recognition.candidates[0][0] if r.recognition.candidates else None  # named or not
            rec_p.append(r.recognition.confidence)
            rec_y.append(best is not None and best in truth[qid])
            for h in r.hits[:TOP]:
                hit_p.append(h.score)
                hit_y.append(run.layout.labels.get(h.image_id) in truth[qid])
        for photo in non_landmark_photos():
            rec = search_one(run.database, run.models, photo).recognition
            rec_p.append(rec.confidence)
            rec_y.append(False)
    return rows


def _reliability_table(p, y) -> str:
    rows = [[f"{r['low']:.1f}-{r['high']:.1f}", r["count"], f"{r['predicted']:.2f}", f"{r['observed']:.2f}"]
            for r in reliability(p, y)]
    return table(["predicted", "answers", "mean predicted", "observed right"], rows) + \
        f"\n\nExpected calibration error: {calibration_error(p, y):.3f}"


if __name__ == "__main__":
    main()
