"""Evaluation metrics: Kaggle GAP and mAP@100, revisited Oxford/Paris mAP, recall@k.

- ``global_average_precision`` and ``mean_average_precision_at_k`` follow DELF's
  ``google_landmarks_dataset/metrics.py`` (``GlobalAveragePrecision``, ``MeanAveragePrecision``), the
  official Kaggle scorers of the Google Landmark Recognition / Retrieval challenges.
- ``compute_ap``, ``compute_map`` and ``revisited_map`` follow revisitop's ``python/evaluate.py`` and
  ``example_evaluate.py`` (identical to cirtorch's ``utils/evaluate.py``): a trapezoidal AP over the full
  ranking with junk images removed. Use them for ROxford/RParis-style benchmarks only, so the numbers stay
  comparable with the literature; use mAP@100 for GLDv2.

Ids may be any hashable values (strings, ints); nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np


class LandmarkPrediction(NamedTuple):
    """One recognition answer for a test image: a landmark and how confident we are in it."""

    landmark_id: Hashable
    confidence: float


def _natural_key(value: Hashable) -> tuple[int, Any]:
    """Sort ints (and digit strings) numerically, other ids as strings, as DELF sorts int class ids."""
    if isinstance(value, (int, np.integer)):
        return (0, int(value))
    text = str(value)
    return (0, int(text)) if text.isdigit() else (1, text)


# --- Kaggle recognition: GAP -----------------------------------------------------------------------

def global_average_precision(
    predictions: Mapping[Hashable, tuple[Hashable, float] | None],
    solution: Mapping[Hashable, Collection[Hashable]],
    ignore_non_gt_test_images: bool = False,
) -> float:
    """Kaggle's Global Average Precision (micro-AP) of one prediction per test image.

    ``predictions`` maps a test id to ``(landmark_id, confidence)`` (or None: no prediction);
    ``solution`` maps every scored test id to its ground-truth landmark ids (empty: not a landmark).
    Predictions are ranked by confidence, descending; ties by test id, then landmark id, ascending.
    Predictions on non-landmark images take rank positions (lowering the precision of everything after
    them) unless ``ignore_non_gt_test_images``; the sum is divided by the number of test images that
    have at least one ground-truth landmark.
    """
    num_positives = sum(1 for labels in solution.values() if labels)
    if num_positives == 0:
        raise ValueError("GAP is undefined: no test image in the solution has a ground-truth landmark")
    ranked = []
    for test_id, pred in predictions.items():
        if test_id not in solution:
            raise ValueError(f"test image {test_id!r} has a prediction but is not in the solution")
        if pred is not None:
            ranked.append((test_id, pred[0], float(pred[1])))
    # Two stable sorts reproduce DELF exactly: first by (id, class), then by score descending.
    ranked.sort(key=lambda r: (r[0], _natural_key(r[1])))
    ranked.sort(key=lambda r: r[2], reverse=True)
    gap, seen, correct = 0.0, 0, 0
    for test_id, landmark_id, _ in ranked:
        truth = solution[test_id]
        if ignore_non_gt_test_images and not truth:
            continue
        seen += 1
        if landmark_id in truth:
            correct += 1
            gap += correct / seen
    return gap / num_positives


def top1_accuracy(
    predictions: Mapping[Hashable, tuple[Hashable, float] | None],
    solution: Mapping[Hashable, Collection[Hashable]],
) -> float:
    """Fraction of test images with ground truth whose prediction is right (non-landmarks ignored)."""
    with_truth = [test_id for test_id, labels in solution.items() if labels]
    if not with_truth:
        raise ValueError("accuracy is undefined: no test image in the solution has a ground-truth landmark")
    right = sum(
        1 for test_id in with_truth
        if predictions.get(test_id) is not None and predictions[test_id][0] in solution[test_id]
    )
    return right / len(with_truth)


# --- Kaggle retrieval: mAP@100 ---------------------------------------------------------------------

def mean_average_precision_at_k(
    predictions: Mapping[Hashable, Sequence[Hashable]],
    solution: Mapping[Hashable, Collection[Hashable]],
    k: int = 100,
) -> float:
    """Kaggle's retrieval mAP@k (k=100 in the challenges).

    AP_q = 1/min(m_q, k) * sum over the first k predictions of P_q(i) * rel_q(i), where m_q is the number
    of ground-truth index images of q. A repeated prediction scores nothing but still takes its rank;
    a query of the solution with no predictions scores 0; the mean is over all queries of the solution.
    """
    if not solution:
        raise ValueError("mAP is undefined: the solution has no queries")
    total = 0.0
    for query_id, ranked in predictions.items():
        if query_id not in solution:
            raise ValueError(f"query {query_id!r} has predictions but is not in the solution")
        total += average_precision_at_k(ranked, solution[query_id], k, query_id=query_id)
    return total / len(solution)


def average_precision_at_k(
    ranked: Sequence[Hashable], positives: Collection[Hashable], k: int = 100, query_id: Hashable = None
) -> float:
    """One query's term of Kaggle mAP@k (see ``mean_average_precision_at_k``)."""
    positives = set(positives)
    if not positives:
        raise ValueError(f"query {query_id!r}: AP@{k} is undefined without ground-truth images")
    ap, correct, already = 0.0, 0, set()
    for i, image_id in enumerate(list(ranked)[:k]):
        if image_id in already:
            continue  # duplicates use up a rank but score nothing
        already.add(image_id)
        if image_id in positives:
            correct += 1
            ap += correct / (i + 1)
    return ap / min(len(positives), k)


def recall_at_k(
    predictions: Mapping[Hashable, Sequence[Hashable]],
    solution: Mapping[Hashable, Collection[Hashable]],
    k: int = 1,
) -> float:
    """Fraction of queries with at least one positive among their first ``k`` predictions.

    Queries of the solution without positives are skipped; a query missing from ``predictions`` counts
    as a miss.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scored = [q for q, positives in solution.items() if positives]
    if not scored:
        raise ValueError("recall is undefined: no query in the solution has a positive")
    for query_id in predictions:
        if query_id not in solution:
            raise ValueError(f"query {query_id!r} has predictions but is not in the solution")
    hits = 0
    for query_id in scored:
        positives = set(solution[query_id])
        if any(image_id in positives for image_id in list(predictions.get(query_id, ()))[:k]):
            hits += 1
    return hits / len(scored)


# --- revisited Oxford / Paris (revisitop) ----------------------------------------------------------

def compute_ap(ranks: Sequence[int] | np.ndarray, nres: int) -> float:
    """revisitop's trapezoidal AP: ``ranks`` are the sorted 0-based positions of the positives found
    (junk already removed), ``nres`` the number of positives."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else j / rank
        precision_1 = (j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(
    ranks: np.ndarray, gnd: Sequence[Mapping[str, Collection]], kappas: Sequence[int] = ()
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop's ``compute_map``: (mAP, per-query AP, mean precision@kappas, per-query precision@kappas).

    ``ranks`` has one column per query, (database size or fewer) x nq, best first: ``argsort(-scores, 0)``.
    Its entries are whatever ``gnd`` lists use (database indices, or ids). ``gnd[i]`` has ``ok`` (positives)
    and optionally ``junk``. Queries without positives get NaN and are left out of the means; junk is
    removed from the ranking before AP; positives that are not in the ranking simply score nothing.
    mAP is NaN when no query has a positive.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        hint = " (transposed? columns are queries)" if ranks.ndim == 2 and ranks.shape[0] == len(gnd) else ""
        raise ValueError(f"ranks must have shape (database, {len(gnd)} queries), got {ranks.shape}{hint}")
    nq = len(gnd)
    aps = np.zeros(nq)
    prs = np.zeros((nq, len(kappas)))
    total_ap, pr, nempty = 0.0, np.zeros(len(kappas)), 0
    for i in range(nq):
        ok = np.asarray(list(gnd[i]["ok"]))
        if ok.size == 0:
            aps[i] = np.nan
            prs[i, :] = np.nan
            nempty += 1
            continue
        junk = np.asarray(list(gnd[i].get("junk", ())))
        column = ranks[:, i]
        pos = np.flatnonzero(np.isin(column, ok))
        junk_pos = np.flatnonzero(np.isin(column, junk)) if junk.size else np.zeros(0, dtype=np.int64)
        # Each positive moves up by the number of junk images ranked before it.
        pos = pos - np.searchsorted(junk_pos, pos)
        ap = compute_ap(pos, len(ok))
        total_ap += ap
        aps[i] = ap
        pos = pos + 1
        for j, kappa in enumerate(kappas):
            # revisitop: precision at min(last positive's rank, kappa); no positive found scores 0.
            kq = min(int(pos.max()), kappa) if pos.size else kappa
            prs[i, j] = (pos <= kq).sum() / kq
        pr = pr + prs[i, :]
    scored = nq - nempty
    if scored == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return total_ap / scored, aps, pr / scored, prs


def revisited_map(
    ranks: np.ndarray, gnd: Sequence[Mapping[str, Collection]], kappas: Sequence[int] = (1, 5, 10)
) -> dict[str, Any]:
    """Easy / Medium / Hard mAP (percent) of the revisited Oxford/Paris protocol.

    ``gnd[i]`` has ``easy``, ``hard`` and ``junk`` lists. Easy: positives = easy, junk = junk + hard;
    Medium: positives = easy + hard, junk = junk; Hard: positives = hard, junk = junk + easy. A protocol in
    which no query has a positive (e.g. no hard lists at all) is None. ``<protocol>_mp`` holds the mean
    precision at ``kappas`` in percent, also None when undefined.
    """
    protocols = {
        "easy": lambda g: (g.get("easy", []), [*g.get("junk", []), *g.get("hard", [])]),
        "medium": lambda g: ([*g.get("easy", []), *g.get("hard", [])], g.get("junk", [])),
        "hard": lambda g: (g.get("hard", []), [*g.get("junk", []), *g.get("easy", [])]),
    }
    result: dict[str, Any] = {"kappas": list(kappas)}
    for name, split in protocols.items():
        proto_gnd = [dict(zip(("ok", "junk"), split(g), strict=True)) for g in gnd]
        mean_ap, _, mean_pr, _ = compute_map(ranks, proto_gnd, kappas)
        defined = not np.isnan(mean_ap)
        result[name] = 100.0 * mean_ap if defined else None
        result[f"{name}_mp"] = [100.0 * float(p) for p in mean_pr] if defined else None
    return result
