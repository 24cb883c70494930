"""Landmark recognition: which landmark a photo shows, how sure we are, or "no landmark".

The answer comes from the photo's nearest labelled database images (reference A.7, lyakaap's 3rd place
recognition 2019): each of the top-k neighbours votes for its landmark with (2 cos - 1)+ plus, when spatial
verification found at least ``min_inliers`` inliers, a bonus min(70, inliers) / 70; the landmark with the
largest vote wins. Its confidence is calibrated to [0, 1] as a noisy-OR of the per-neighbour evidence
e_i = vote_i / 2 (vote_i without verification): 1 - prod(1 - e_i). One fully verified, globally identical
photo gives 1; a landmark with one database photo is not penalised for having only one; agreeing
neighbours add up.

With a ``calibration`` (``ml.calibration.ConfidenceConfig``, fitted on held-out queries by
``bench/calibrate.py``) the confidence is instead the probability that the landmark is right, from that
evidence, the runner-up's, and whether the nearest photo shows it (with its own evidence): a photo whose
three nearest photos all show the Colosseum is recognised even when none of them verifies. The presets
use one, fitted on collections with many and with few photos a landmark (docs/decisions/0007).

A photo that matches nothing (a cat, a coffee cup) gets low global similarities and no verified
neighbour, so its confidence stays below ``threshold`` and the answer is "no landmark"
(``landmark_id = None``); its best candidates are still listed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ml.calibration import ConfidenceConfig
from ml.rerank import LabelVoteConfig, predict_labels


@dataclass
class RecognitionConfig:
    vote: LabelVoteConfig = field(default_factory=LabelVoteConfig)
    top_n: int = 5  # candidates listed
    # Below this the answer is "no landmark": with the default model an answer needs spatial verification
    # or a nearest image at cos >= 0.75 (evidence (2 cos - 1) / 2). Calibrated on landmarks-mini against
    # scikit-image's non-landmark photos (docs/benchmarks.md); another model needs its own calibration.
    threshold: float = 0.25
    calibration: ConfidenceConfig | None = None  # None: the noisy-OR evidence is the confidence


@dataclass
class Recognition:
    landmark_id: Hashable | None  # None = no landmark
    confidence: float  # of the best candidate, in [0, 1]
    candidates: list[tuple[Hashable, float]]  # best first, confidences on the same scale
    # Per candidate, the evidence a calibration weighs: (its vote evidence, the best other candidate's,
    # the nearest photo's evidence if it shows the candidate else 0, whether it does).
    evidence: dict[Hashable, tuple[float, float, float, bool]] = field(default_factory=dict)

    @property
    def is_landmark(self) -> bool:
        return self.landmark_id is not None


def recognize(
    neighbour_labels: Sequence[Hashable | None],
    sims: np.ndarray,
    inliers: np.ndarray | None,
    cfg: RecognitionConfig | None = None,
) -> Recognition:
    """Recognise from the ranked neighbours: their labels, global similarities and inliers (or None)."""
    cfg = cfg or RecognitionConfig()
    vote = predict_labels(neighbour_labels, sims, inliers, cfg.vote)
    # Candidates in vote order (A.7), each with its confidence (noisy-OR evidence, or calibrated from it).
    voted = [(lab, vote.confidence_of(lab)) for lab, _ in vote.ranked[: cfg.top_n]]
    nearest = neighbour_labels[0] if len(neighbour_labels) else None
    evidence = {lab: (conf, max((c for other, c in voted if other != lab), default=0.0),
                      vote.evidence[lab][0] if nearest == lab else 0.0, nearest == lab)
                for lab, conf in voted}
    if cfg.calibration is None:
        candidates = voted
    else:
        candidates = sorted(((lab, cfg.calibration.probability(*evidence[lab])) for lab, _ in voted),
                            key=lambda kv: -kv[1])
    best = candidates[0] if candidates else (None, 0.0)
    landmark = best[0] if best[1] >= cfg.threshold else None
    return Recognition(landmark, best[1], candidates, evidence)


def gap_predictions(results: dict[Hashable, Recognition]) -> dict[Hashable, tuple[Hashable, float] | None]:
    """Recognitions as ``ml.metrics.global_average_precision`` predictions ("no landmark" = None)."""
    return {
        qid: ((r.landmark_id, r.confidence) if r.landmark_id is not None else None) for qid, r in results.items()
    }
