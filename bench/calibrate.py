"""Calibrate a preset's scores on held-out queries of landmarks-dev/train, and report on sets never used.

Folds (seeds of our own) over landmarks-dev/train: in each, a few landmarks are left out of the database
entirely (their photos become queries whose right answer is "no landmark"), and a few photos of every
other landmark become queries against the rest. Each fold's database is built and searched exactly as
the product does (``ml.evaluate``, the preset with its calibrations switched off); from every query we
keep each result's evidence (fused ranking score, label, global similarity, inliers), from which any
recognition is replayed (``recognitions``). Each fold is used three times (``views``): as built (about
20 photos a landmark), with each landmark cut to 1-4 database photos, and long-tailed, so that what is
fitted holds on collections of each kind. Then:

- recognition: P(candidate right | its vote evidence, the runner-up's, the nearest photo's) by logistic
  regression (``ml.calibration``);
- result scores: P(result shows the query's place | fused, agreement with the calibrated recognition);
- leave-one-fold-out: named right / wrong / absent landmarks named, GAP and calibration error of the
  noisy-OR rule against the calibrated recognition, a sweep of its "no landmark" threshold, and the mAP of
  ranking by the score against the preset's own order.

``--fit`` prints the fitted weights for ``ml/pipeline.py``. ``--report`` runs the preset as it is now (with
its calibrations) on landmarks-dev/eval and landmarks-mini (plus scikit-image's 4 non-landmark photos as
queries), with the answers of the noisy-OR rule replayed on the same results, and the reliability tables
are recorded in docs/benchmarks.md.

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
from ml.metrics import global_average_precision  # noqa: E402
from ml.pipeline import NOISY_OR_RECOGNITION, PipelineConfig, get_pipeline, search_one  # noqa: E402
from ml.recognize import Recognition, RecognitionConfig, recognize  # noqa: E402

TRAIN = SHARED_DATA / "landmarks-dev" / "train"
REPORT_SETS = {"landmarks-dev/eval": SHARED_DATA / "landmarks-dev" / "eval", "landmarks-mini": SHARED_DATA / "landmarks-mini"}
TOP = 1000  # results per query whose evidence is kept (the whole ranking of these databases)
NEIGHBOURS = 20  # results a replayed recognition sees (more than any preset's vote)
FEW_PHOTOS = (1, 4)  # database photos a landmark keeps in each fold's second view (landmarks-mini has 1-4)
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55)  # "no landmark" below: the calibrated recognition's choices


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
    """Per query, each result's evidence: what the score weighs (fused, and its label for the label term)
    and what the recognition weighs (the global similarity to the query and the RootSIFT inliers). Ordered
    by fused, the results are in the order the recognition saw them, before the label steps, so any
    recognition can be replayed from them (``recognitions``)."""
    labels = run.layout.labels or {}
    return {qid: {"hits": [(h.image_id, h.fused, str(labels.get(h.image_id)),
                            str(labels.get(h.image_id)) == str(truth.get(qid)), h.global_score, h.inliers)
                           for h in result.hits[:TOP]]}
            for qid, result in run.results.items()}


def views(fold: dict, seed: int) -> list[tuple[str, dict]]:
    """The fold as built (about 20 database photos a landmark), with each landmark's database photos cut to
    1-4 at random (``FEW_PHOTOS``, like landmarks-mini's wonders and wide-baseline scenes), and long-tailed
    (each landmark keeps between 1 and all of its photos, log-uniformly, as in GLDv2 or any archive: big
    landmarks beside small ones). Removed photos leave the rankings, the others keep their evidence. A
    calibration fitted on all three holds on either kind of collection; one fitted on the first alone
    learned that agreeing neighbours are plentiful."""
    rng = random.Random(seed)
    by_landmark: dict[str, list[str]] = {}
    for image, landmark in sorted(fold["gnd"]["labels"].items()):
        by_landmark.setdefault(landmark, []).append(image)
    few, tail = set(), set()
    for _, images in sorted(by_landmark.items()):
        rng.shuffle(images)
        few.update(images[: rng.randint(*FEW_PHOTOS)])
        tail.update(images[: max(1, round(len(images) ** rng.random()))])
    return [("as built", fold["queries"]),
            (f"{FEW_PHOTOS[0]}-{FEW_PHOTOS[1]} photos a landmark", _keep(fold["queries"], few)),
            ("long-tailed", _keep(fold["queries"], tail))]


def _keep(queries: dict, kept: set) -> dict:
    return {qid: {"hits": [h for h in q["hits"] if h[0] in kept]} for qid, q in queries.items()}


def recognitions(queries: dict, rec: RecognitionConfig, verified: bool) -> dict[str, Recognition]:
    """The recognition ``rec`` of every query, replayed from its results' evidence as the pipeline runs it."""
    out = {}
    for qid, q in queries.items():
        ordered = sorted(q["hits"], key=lambda h: -h[1])[:NEIGHBOURS]
        inliers = np.array([h[5] for h in ordered], float) if verified else None
        out[qid] = recognize([h[2] for h in ordered], np.array([h[4] for h in ordered], float), inliers, rec)
    return out


def recognition_rows(recs: dict[str, Recognition], truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate landmark of every query: its evidence, and whether it is the query's landmark."""
    x = [[float(v) for v in r.evidence[lab]] for r in recs.values() for lab, _ in r.candidates]
    y = [str(lab) == str(truth[q]) for q, r in recs.items() for lab, _ in r.candidates]
    return np.asarray(x, float).reshape(len(y), -1), np.asarray(y, bool)


def score_rows(queries: dict, recs: dict[str, Recognition]) -> tuple[np.ndarray, np.ndarray]:
    """Per kept result: (fused, the recognition's confidence if it shows its best landmark, else 0)."""
    x, y = [], []
    for qid, q in queries.items():
        best, p = recs[qid].candidates[0] if recs[qid].candidates else (None, 0.0)
        for _, fused, label, right, *_ in q["hits"]:
            x.append([fused, p if label == str(best) else 0.0])
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
    rec_rows, score_rows_, sweep = [], [], {}
    for k in range(len(folds)):
        cc, sc = fit([f for j, f in enumerate(folds) if j != k], preset)
        rec_rows += compare_recognition(folds[k], k, cc, preset, sweep)
        score_rows_.append([k + 1, *compare_scores(folds[k], k, cc, sc, preset)])
    print(table(["fold", "database", "recognition", "right", "wrong landmark", "absent named", "GAP", "ECE"], rec_rows))
    print("\nThreshold of the calibrated recognition, folds left out pooled (right; wrong landmark + absent named):\n")
    print(table(["database", *[f"{t:.2f}" for t in THRESHOLDS], "noisy-OR"],
                [[view, *[f"{r}; {w}" for r, w in row]] for view, row in sweep.items()]))
    print()
    print(table(["fold", "queries", "mAP own order", "mAP by score", "score ECE"], score_rows_))
    cc, sc = fit(folds, preset)
    return {"recognition": cc, "scores": sc}


def fit(folds: list[dict], preset: PipelineConfig) -> tuple[ConfidenceConfig, ScoreConfig]:
    """The recognition's weights (every candidate of every query, both views of each fold), then the
    scores': their label term weighs the confidence of the recognition the preset ships. A preset without
    label steps keeps its own order (the label term would make it a label re-ranking), so its score weighs
    the fused evidence only."""
    verified = preset.uses_local_features
    plain = replace(preset.recognition, calibration=None)
    w, b = fit_logistic(*_over_views(folds, lambda fold, queries: recognition_rows(
        recognitions(queries, plain, verified), fold["truth"])))
    cc = ConfidenceConfig(*[round(float(v), 3) for v in w], round(b, 3))
    shipped = replace(plain, calibration=cc) if preset.recognition.calibration is not None else plain
    x, y = _over_views(folds, lambda fold, queries: score_rows(queries, recognitions(queries, shipped, verified)))
    if preset.label_rerank.method == "none":
        w, b = fit_logistic(x[:, :1], y)
        return cc, ScoreConfig(round(float(w[0]), 3), 0.0, round(b, 3), rank=False)
    w, b = fit_logistic(x, y)
    return cc, ScoreConfig(round(float(w[0]), 3), round(float(w[1]), 3), round(b, 3), rank=True)


def _over_views(folds: list[dict], rows_of) -> tuple[np.ndarray, np.ndarray]:
    """``rows_of(fold, queries)`` -> (x, y) over every view of every fold, stacked."""
    xs, ys = zip(*(rows_of(fold, queries) for k, fold in enumerate(folds) for _, queries in views(fold, k + 1)),
                 strict=True)
    return np.vstack(xs), np.concatenate(ys)


def compare_recognition(fold: dict, k: int, cc: ConfidenceConfig, preset: PipelineConfig, sweep: dict) -> list:
    """On a fold left out, both views: the noisy-OR rule the presets had (nearest photo's evidence, "no
    landmark" below 0.25) against the calibrated recognition at the preset's threshold; ``sweep`` adds up,
    per threshold, the right answers and the false ones (a wrong landmark, or one named for a photo whose
    landmark is absent)."""
    verified, rows = preset.uses_local_features, []
    calibrated = replace(preset.recognition, calibration=cc)
    truth = fold["truth"]
    known = set(fold["gnd"]["labels"].values())
    solution = {q: [lm] if lm in known else [] for q, lm in truth.items()}
    for view, queries in views(fold, k + 1):
        for name, rec in (("noisy-OR, 0.25", NOISY_OR_RECOGNITION), (f"calibrated, {calibrated.threshold}", calibrated)):
            recs = recognitions(queries, rec, verified)
            best = {q: r.candidates[0] if r.candidates else (None, 0.0) for q, r in recs.items()}
            counts = _answers(best, truth, known, rec.threshold)
            predictions = {q: (lab, p) if lab is not None and p >= rec.threshold else None for q, (lab, p) in best.items()}
            p = [conf for lab, conf in best.values() if lab is not None]
            y = [str(lab) == str(truth[q]) for q, (lab, _) in best.items() if lab is not None]
            rows.append([k + 1, view, name, *counts, f"{100 * global_average_precision(predictions, solution):.1f}",
                         f"{calibration_error(p, y):.3f}"])
            row = sweep.setdefault(view, [[0, 0] for _ in range(len(THRESHOLDS) + 1)])
            for i, t in enumerate(THRESHOLDS if rec is calibrated else []):
                right, wrong, absent = _answers(best, truth, known, t)
                row[i][0] += right
                row[i][1] += wrong + absent
            if rec is NOISY_OR_RECOGNITION:
                right, wrong, absent = counts
                row[-1][0] += right
                row[-1][1] += wrong + absent
    return rows


def _answers(best: dict, truth: dict, known: set, threshold: float) -> tuple[int, int, int]:
    """Landmarks named right, named wrong, and named for photos whose landmark is not in the database."""
    named = {q: lab for q, (lab, p) in best.items() if lab is not None and p >= threshold}
    right = sum(str(lab) == str(truth[q]) for q, lab in named.items())
    absent = sum(truth[q] not in known for q in named)
    return right, len(named) - right - absent, absent


def compare_scores(fold: dict, k: int, cc: ConfidenceConfig, sc: ScoreConfig, preset: PipelineConfig) -> list:
    """mAP of the preset's own order and of ordering by the calibrated score, and the score's calibration
    error, on the fold as built."""
    queries = fold["queries"]
    rec = replace(preset.recognition, calibration=cc if preset.recognition.calibration is not None else None)
    x, y = score_rows(queries, recognitions(queries, rec, preset.uses_local_features))
    p = sc.probability(x[:, 0], x[:, 1])
    by_score, start = {}, 0
    for qid, q in queries.items():
        n = len(q["hits"])
        order = np.argsort(-p[start:start + n], kind="stable")
        by_score[qid] = [q["hits"][j][0] for j in order]
        start += n
    return [len(queries), f"{_map(fold, fold['own_order']):.2f}", f"{_map(fold, by_score):.2f}",
            f"{calibration_error(p, y):.3f}"]


def _map(fold: dict, rankings: dict) -> float:
    """mAP@100 of rankings over the queries whose landmark is in the database."""
    from ml.metrics import mean_average_precision_at_k

    gnd = fold["gnd"]["queries"]
    solution = {q: set(g["easy"]) for q, g in gnd.items() if g["easy"]}
    return 100.0 * mean_average_precision_at_k({q: rankings[q] for q in solution}, solution, 100)


def report(preset: PipelineConfig, args, started: float) -> None:
    """The preset as configured now on the report sets: mAP, GAP and the reliability of its confidences."""
    rows, rec_p, rec_y, hit_p, hit_y, answers = [], [], [], [], [], []
    for name, folder in REPORT_SETS.items():
        with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
            rows += _report_set(name, folder, preset, EvalCache(Path(tmp)), rec_p, rec_y, hit_p, hit_y, answers)
    body = table(["data set", "labels", "mAP medium", "s/query"], rows)
    body += ("\n\nRecognition with labels, each set's queries and scikit-image's 4 non-landmark photos; the "
             "noisy-OR rule replayed on the same results:\n\n")
    body += table(["data set", "recognition", "named right", "named wrong", "non-landmarks named", "GAP"], answers)
    body += (f"\n\nRecognition confidence ({_rule(preset)}; right = its best landmark is right), the same "
             "answers:\n\n")
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


def _report_set(name, folder, preset, cache, rec_p, rec_y, hit_p, hit_y, answers) -> list:
    """Both regimes on one set (one embedding, shared); the labelled run adds to the reliability lists and
    to ``answers`` (the recognition the preset ships against the noisy-OR rule, replayed on the same
    results)."""
    rows = []
    for labels in (False, True):
        run = run_evaluation(folder, preset, use_labels=labels, cache=cache)
        m = run.metrics
        rows.append([name, "yes" if labels else "no", f"{m['medium']:.2f}", f"{m['seconds_per_query']:.2f}"])
        if not labels:
            continue
        truth = {q.query_id: {str(run.layout.labels[i]) for i in q.easy + q.hard} for q in run.layout.queries}
        results = dict(run.results)
        for n, photo in enumerate(non_landmark_photos()):
            results[f"non-landmark-{n}"] = search_one(run.database, run.models, photo)
            truth[f"non-landmark-{n}"] = set()
        for qid, r in results.items():
            best = r.recognition.candidates[0][0] if r.recognition.candidates else None  # named or not
            rec_p.append(r.recognition.confidence)
            rec_y.append(best is not None and str(best) in truth[qid])
            if qid.startswith("non-landmark-"):
                continue
            for h in r.hits[:TOP]:
                hit_p.append(h.score)
                hit_y.append(str(run.layout.labels.get(h.image_id)) in truth[qid])
        shipped = {q: r.recognition for q, r in results.items()}
        replay = {q: {"hits": [(h.image_id, h.fused, str(run.layout.labels.get(h.image_id)), False, h.global_score,
                                h.inliers) for h in r.hits[:TOP]]} for q, r in results.items()}
        noisy_or = recognitions(replay, NOISY_OR_RECOGNITION, preset.uses_local_features)
        for rule, recs, threshold in ((_rule(preset), shipped, preset.recognition.threshold),
                                      ("noisy-OR, \"no landmark\" below 0.25", noisy_or, 0.25)):
            answers.append([name, rule, *_named(recs, truth, threshold)])
    return rows


def _rule(preset: PipelineConfig) -> str:
    kind = "calibrated" if preset.recognition.calibration else "noisy-OR evidence, not calibrated"
    return f"{kind}, \"no landmark\" below {preset.recognition.threshold}"


def _named(recs: dict[str, Recognition], truth: dict[str, set], threshold: float) -> list:
    """Landmark queries named right and wrong, non-landmark photos named, and GAP (non-landmarks included)."""
    best = {q: r.candidates[0] if r.candidates else (None, 0.0) for q, r in recs.items()}
    named = {q: (str(lab), p) for q, (lab, p) in best.items() if lab is not None and p >= threshold}
    right = sum(lab in truth[q] for q, (lab, _) in named.items())
    non_landmarks = sum(not truth[q] for q in named)
    gap = global_average_precision({q: named.get(q) for q in recs}, {q: truth[q] for q in recs})
    landmark_queries = sum(bool(t) for t in truth.values())
    return [f"{right} / {landmark_queries}", len(named) - right - non_landmarks,
            f"{non_landmarks} / {len(truth) - landmark_queries}", f"{100 * gap:.1f}"]


def _reliability_table(p, y) -> str:
    rows = [[f"{r['low']:.1f}-{r['high']:.1f}", r["count"], f"{r['predicted']:.2f}", f"{r['observed']:.2f}"]
            for r in reliability(p, y)]
    return table(["predicted", "answers", "mean predicted", "observed right"], rows) + \
        f"\n\nExpected calibration error: {calibration_error(p, y):.3f}"


if __name__ == "__main__":
    main()
