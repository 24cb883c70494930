"""Scores that mean a probability: logistic models of a result's or a recognition's evidence, fitted on held-out
queries (``bench/calibrate.py``), and how well calibrated they are (a reliability table).

A calibrated score p means: of the answers given p, a fraction p is right. Each model is a handful of
weights kept in the pipeline's config, so an index records the calibration it was built with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -60, 60)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of P(y = 1 | x) = sigmoid(x @ w + b), by Newton's method on the log-loss with an L2
    penalty ``l2`` on the weights (not the bias)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need one row of features per label: {np.shape(x)} and {np.shape(y)}")
    if y.min() == y.max():
        raise ValueError("need both right and wrong answers to fit a calibration")
    a = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(a.shape[1])
    penalty = np.full(a.shape[1], l2 * len(y))
    penalty[-1] = 0.0
    for _ in range(steps):
        p = sigmoid(a @ theta)
        gradient = a.T @ (p - y) + penalty * theta
        hessian = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def reliability(p: Sequence[float], y: Sequence[bool], bins: int = 10) -> list[dict]:
    """Per bin of predicted probability: its range, count, mean prediction and the fraction right."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                         "predicted": float(p[inside].mean()), "observed": float(y[inside].mean())})
    return rows


def calibration_error(p: Sequence[float], y: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean gap between predicted and observed per bin."""
    rows = reliability(p, y, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / max(total, 1)


# ------------------------------------------------------------------------------------- result scores


@dataclass
class ScoreConfig:
    """The score of a search result: the probability that it shows the query's place,
    sigmoid(fused_weight * fused + label_weight * agrees + bias), where ``fused`` is its ranking evidence
    (global or region similarity plus the verification bonuses) and ``agrees`` whether its label is the
    landmark recognised for the query (databases with labels). With ``rank`` the results are ordered by it
    (the label's weight then decides how far an agreeing photo moves up); otherwise the pipeline's own order
    stands and a score never exceeds the one above it (shown monotone, a lower bound where capped)."""

    fused_weight: float = 4.0
    label_weight: float = 0.0
    bias: float = -3.0
    rank: bool = False

    def probability(self, fused: np.ndarray, agrees: np.ndarray | None = None) -> np.ndarray:
        z = self.fused_weight * np.asarray(fused, dtype=np.float64) + self.bias
        if agrees is not None:
            z = z + self.label_weight * np.asarray(agrees, dtype=np.float64)
        return sigmoid(z)


def monotone(scores: np.ndarray) -> np.ndarray:
    """Each score capped at the one ranked above it, so scores never rise down a ranking."""
    return np.minimum.accumulate(np.asarray(scores, dtype=np.float64)) if len(scores) else np.asarray(scores)


# ------------------------------------------------------------------------------------ recognition


@dataclass
class ConfidenceConfig:
    """The confidence of a recognition: the probability that the landmark is right, a logistic of its
    evidence: the landmark's vote evidence (noisy-OR of its photos among the voting neighbours, in [0, 1]),
    the runner-up landmark's, and whether the nearest photo shows it, with that photo's own evidence.
    None of them grows with how many photos a landmark has beyond the voting neighbours, so a landmark with
    a few photos is judged like one with a hundred (docs/decisions/0007)."""

    evidence_weight: float = 3.0
    runner_up_weight: float = -2.0
    nearest_evidence_weight: float = 2.5
    nearest_weight: float = 0.5
    bias: float = -1.5

    def probability(self, evidence: float, runner_up: float, nearest_evidence: float, nearest: bool) -> float:
        z = (self.evidence_weight * evidence + self.runner_up_weight * runner_up
             + self.nearest_evidence_weight * nearest_evidence + self.nearest_weight * float(nearest) + self.bias)
        return float(sigmoid(z))
