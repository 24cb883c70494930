"""Re-ranking steps after the global-descriptor search; each is a small function with a config dataclass.

- ``alpha_query_expansion`` / ``database_augmentation``: alpha-weighted QE and DBA (reference A.6
  ``qe_dba``, with its row-slicing bug fixed: the top-n of *each* row is used, ``sims[:, :n]``).
- ``fuse_inliers`` / ``verified_first``: combine the global score with spatial-verification inliers.
- ``verified_query_expansion``: QE over verified images only (a false neighbour never pollutes it).
- ``predict_labels``: kNN soft voting against the labelled database with the verified-inlier bonus
  (A.6 step 1, A.7).
- ``discriminative_rerank``: lyakaap's 2019 winning sort + insert steps (A.6) with the intended threshold
  rule conf(query) + conf(image) > threshold.
- ``label_distance_boost``: the Keras solution's rule (F): distance / 1.5 when predicted landmarks agree.
- ``bridged_scores``: the 2021 5th place's bridged confidence (B.3): bridged^3 + direct^3.

Scores are cosine similarities of L2-normalised vectors unless a docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ml.index import exact_search, topk_rows


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# -------------------------------------------------------------------------------------------- QE and DBA


@dataclass
class ExpansionConfig:
    """alpha-QE / DBA (Radenovic et al. 2018): x' = L2(sum over the top-k of sim^alpha * x_nn), self included."""

    k: int = 0  # neighbours used, the vector itself included; 0 or 1 = off. Keep small on small databases.
    alpha: float = 3.0


def alpha_weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    """sim^alpha, with negative similarities weighing nothing (they would flip sign for odd alpha)."""
    return np.power(np.clip(sims, 0.0, None), alpha)


def database_augmentation(vectors: np.ndarray, cfg: ExpansionConfig, chunk_rows: int = 131_072) -> np.ndarray:
    """DBA: every database vector replaced by the alpha-weighted mean of its top-k database neighbours.

    Its own vector is among them (similarity 1, weight 1), as in ``qe_dba``.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if cfg.k <= 1 or len(x) < 2:
        return x.copy()
    k = min(cfg.k, len(x))
    out = np.empty_like(x)
    for start in range(0, len(x), 4096):
        block = x[start : start + 4096]
        sims, nn = exact_search(x, block, k, chunk_rows)
        w = alpha_weights(sims, cfg.alpha)
        out[start : start + len(block)] = np.einsum("bk,bkd->bd", w, x[nn])
    return _l2(out)


def alpha_query_expansion(
    query: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, cfg: ExpansionConfig
) -> np.ndarray:
    """alpha-QE of one query (D,) from its ranked neighbours (n, D) and their similarities (n,).

    The query counts as its own first neighbour (weight 1); the top k-1 database neighbours follow.
    """
    if cfg.k <= 1 or len(neighbours) == 0:
        return np.asarray(query, dtype=np.float32)
    n = min(cfg.k - 1, len(neighbours))
    w = alpha_weights(np.asarray(sims[:n], dtype=np.float32), cfg.alpha)
    return _l2(query + w @ neighbours[:n]).astype(np.float32)


# ---------------------------------------------------------------------------------- spatial verification


@dataclass
class VerificationConfig:
    """Spatial verification of the top of the ranking and how its inliers change the order."""

    top_n: int = 0  # images verified per query; 0 = off
    min_inliers: int = 15  # fewer is treated as unverified (random matches give a handful of inliers)
    inlier_cap: int = 70  # inliers beyond this add nothing (A.7: min(70, inliers) / 70)
    weight: float = 1.0  # fused = global + weight * min(cap, inliers) / cap, for verified images
    mode: str = "verified_first"  # "fused": sort by the fused score; "verified_first": verified ahead
    qe_k: int = 0  # QE over the top verified images (query included), then verify again; 0/1 = off
    qe_alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.mode not in ("fused", "verified_first"):
            raise ValueError(f"mode must be 'fused' or 'verified_first', got {self.mode!r}")


def capped_bonus(inliers: np.ndarray, min_inliers: int, cap: int) -> np.ndarray:
    """min(cap, inliers) / cap where inliers >= min_inliers, 0 otherwise (A.7's verified bonus)."""
    inl = np.asarray(inliers, dtype=np.float32)
    return np.where(inl >= min_inliers, np.minimum(inl, cap) / cap, 0.0)


def inlier_bonus(inliers: np.ndarray, cfg: VerificationConfig) -> np.ndarray:
    """min(cap, inliers) / cap for verified images (>= min_inliers), 0 otherwise."""
    return capped_bonus(inliers, cfg.min_inliers, cfg.inlier_cap)


def fuse_inliers(scores: np.ndarray, inliers: np.ndarray, cfg: VerificationConfig) -> np.ndarray:
    """Fused score of each candidate: global + weight * inlier bonus."""
    return np.asarray(scores, dtype=np.float32) + cfg.weight * inlier_bonus(inliers, cfg)


def rerank_with_inliers(scores: np.ndarray, inliers: np.ndarray, cfg: VerificationConfig) -> np.ndarray:
    """Order (indices into ``scores``) after verification, best first; stable for equal keys.

    ``fused``: by fused score. ``verified_first``: images with >= min_inliers first (by fused score), then
    the others in their global order.
    """
    fused = fuse_inliers(scores, inliers, cfg)
    if cfg.mode == "fused":
        return np.argsort(-fused, kind="stable")
    verified = np.asarray(inliers) >= cfg.min_inliers
    return np.lexsort((-fused, ~verified))


def verified_query_expansion(
    query: np.ndarray, vectors: np.ndarray, sims: np.ndarray, inliers: np.ndarray, cfg: VerificationConfig
) -> np.ndarray | None:
    """QE over verified candidates only: L2(query + sum sim^alpha x) over the top qe_k-1 verified ones.

    ``vectors``, ``sims``, ``inliers`` describe the candidates in ranked order. None when nothing is
    verified (the caller keeps its ranking).
    """
    chosen = verified_expansion(sims, inliers, cfg)
    if chosen is None:
        return None
    verified, w = chosen
    return expand_query(query, np.asarray(vectors, dtype=np.float32)[verified], w)


def expand_query(query: np.ndarray, vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """L2(query + sum w_i x_i): the query expanded by the (n, D) ``vectors`` with their (n,) weights."""
    return _l2(query + np.asarray(weights, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32)).astype(np.float32)


def verified_expansion(
    sims: np.ndarray, inliers: np.ndarray, cfg: VerificationConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions among the candidates, weights) of the images QE over verified images adds to the query:
    the top qe_k-1 verified ones, weighted sim^alpha; None when QE is off or nothing is verified."""
    if cfg.qe_k <= 1:
        return None
    verified = np.flatnonzero(np.asarray(inliers) >= cfg.min_inliers)[: cfg.qe_k - 1]
    if verified.size == 0:
        return None
    w = alpha_weights(np.asarray(sims, dtype=np.float32)[verified], cfg.qe_alpha)
    # A verified image is a true match even when its global similarity is low: give it a floor weight.
    return verified, np.maximum(w, 0.5**cfg.qe_alpha)


# ----------------------------------------------------------------------------------- label prediction


@dataclass
class LabelVoteConfig:
    """kNN soft voting against the labelled database (A.6 step 1, A.7)."""

    k: int = 5  # neighbours that vote (LY: 3)
    inlier_cap: int = 70  # verified bonus min(cap, inliers) / cap per neighbour (A.7)
    min_inliers: int = 15  # a neighbour with fewer inliers gets no bonus
    use_inliers: bool = True


@dataclass
class LabelVote:
    """Landmarks voted for, best first: [(landmark, summed vote)], and each one's per-neighbour evidence."""

    ranked: list[tuple[Hashable, float]]
    evidence: dict[Hashable, list[float]]  # per voting neighbour, in [0, 1]

    @property
    def label(self) -> Hashable | None:
        return self.ranked[0][0] if self.ranked else None

    @property
    def score(self) -> float:
        return self.ranked[0][1] if self.ranked else 0.0

    def confidence_of(self, label: Hashable) -> float:
        """Noisy-OR of the neighbours' evidence for ``label``: 1 - prod(1 - e_i), in [0, 1].

        Unlike the summed vote it does not penalise a landmark with a single photo in the database, and
        independent agreeing neighbours raise it.
        """
        return float(1.0 - np.prod([1.0 - e for e in self.evidence.get(label, [])]))

    @property
    def confidence(self) -> float:
        return self.confidence_of(self.label) if self.ranked else 0.0


def predict_labels(
    neighbour_labels: Sequence[Hashable | None],
    sims: np.ndarray,
    inliers: np.ndarray | None,
    cfg: LabelVoteConfig,
) -> LabelVote:
    """Soft vote of the top-k ranked neighbours: score[l] += (2 cos - 1)+ [+ min(cap, inl)/cap if verified].

    2cos - 1 is lyakaap's 1 - d^2 for unit vectors (A.7, G), floored at 0 so a dissimilar neighbour never
    votes against its landmark. Neighbours without a label (None) do not vote. Each vote, halved when
    verification ran (so it lies in [0, 1]), is also kept as that neighbour's evidence for the confidence.
    """
    scores: dict[Hashable, float] = {}
    evidence: dict[Hashable, list[float]] = {}
    verified = cfg.use_inliers and inliers is not None
    for i in range(min(cfg.k, len(neighbour_labels))):
        label = neighbour_labels[i]
        if label is None:
            continue
        vote = max(0.0, 2.0 * float(sims[i]) - 1.0)
        if verified and inliers[i] >= cfg.min_inliers:
            vote += min(cfg.inlier_cap, float(inliers[i])) / cfg.inlier_cap
        scores[label] = scores.get(label, 0.0) + vote
        evidence.setdefault(label, []).append(min(1.0, vote / 2.0 if verified else vote))
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return LabelVote(ranked, evidence)


# ------------------------------------------------------------------------------- label-aware re-ranking


@dataclass
class LabelRerankConfig:
    """Which label-aware re-ranking to apply when the database has labels."""

    method: str = "none"  # "none", "discriminative" (LY 2019), "boost" (MK /1.5), "bridged" (K5 2021)
    threshold: float = 0.0  # discriminative: act only when the query's confidence exceeds this
    top_m: int = 100  # discriminative: the sort step works inside the top-m; the rest are inserted
    boost: float = 1.5  # MK: distance divided by this when labels agree

    def __post_init__(self) -> None:
        if self.method not in ("none", "discriminative", "boost", "bridged"):
            raise ValueError(f"unknown label re-ranking {self.method!r}")


def discriminative_rerank(
    ranked: np.ndarray,
    db_labels: Sequence[Hashable | None],
    query_label: Hashable | None,
    query_conf: float,
    db_conf: np.ndarray | None,
    cfg: LabelRerankConfig,
) -> np.ndarray:
    """lyakaap's sort + insert steps (A.6) on a ranking of database positions.

    Sort: inside the top-m, images whose label equals the query's predicted label move to the front, in
    their original order (stable). Insert: the other images with that label, anywhere in the database,
    follow right after them (by ``db_conf`` descending, then their original order), before the retrieved
    negatives. The rule applies only when query_conf + db_conf > threshold (the intended HEAD rule, G);
    with known database labels ``db_conf`` is None and counts as 1.
    """
    ranked = np.asarray(ranked)
    if query_label is None:
        return ranked
    conf = np.ones(len(db_labels), np.float32) if db_conf is None else np.asarray(db_conf, np.float32)
    same = np.fromiter((lab == query_label for lab in db_labels), bool, len(db_labels))
    same &= query_conf + conf > cfg.threshold
    top, rest = ranked[: cfg.top_m], ranked[cfg.top_m :]
    top_same = top[same[top]]
    inserted = rest[same[rest]]
    inserted = inserted[np.argsort(-conf[inserted], kind="stable")]
    return np.concatenate([top_same, inserted, top[~same[top]], rest[~same[rest]]])


def label_distance_boost(
    scores: np.ndarray, db_labels: Sequence[Hashable | None], query_label: Hashable | None, boost: float = 1.5
) -> np.ndarray:
    """MK's rule (F): the distance 1 - cos is divided by ``boost`` where the labels agree; returns scores."""
    scores = np.asarray(scores, dtype=np.float32)
    if query_label is None:
        return scores.copy()
    same = np.fromiter((lab == query_label for lab in db_labels), bool, len(db_labels))
    return np.where(same, 1.0 - (1.0 - scores) / boost, scores).astype(np.float32)


@dataclass
class BridgedConfig:
    """K5's bridged confidence (B.3); the nlr penalty is left out (its formula is not public)."""

    neighbours: int = 15  # kNN into the labelled set per image (K5: 15 per shard)
    per_landmark: int = 2  # smallest distances kept per (image, landmark), summed
    nearest_bonus: float = 0.5
    top_landmarks: int = 5
    divisor: float = 3.0
    power: float = 3.0


def landmark_confidences(
    sims: np.ndarray, labels: Sequence[Hashable | None], cfg: BridgedConfig
) -> dict[Hashable, float]:
    """conf(image, l) = sum of (1 - d) over its <= per_landmark nearest neighbours of landmark l (d = 1 - cos),
    + nearest_bonus for the best landmark; top ``top_landmarks`` kept. ``sims`` ranked best first."""
    kept: dict[Hashable, list[float]] = {}
    for s, lab in zip(sims[: cfg.neighbours], labels[: cfg.neighbours], strict=False):
        if lab is None:
            continue
        bucket = kept.setdefault(lab, [])
        if len(bucket) < cfg.per_landmark:
            bucket.append(float(s))  # 1 - d = cos
    conf = {lab: sum(v) for lab, v in kept.items()}
    if conf:
        best = max(conf, key=conf.get)
        conf[best] += cfg.nearest_bonus
    top = sorted(conf.items(), key=lambda kv: -kv[1])[: cfg.top_landmarks]
    return dict(top)


def bridged_scores(
    direct: np.ndarray,
    query_conf: Mapping[Hashable, float],
    db_confs: Sequence[Mapping[Hashable, float]],
    cfg: BridgedConfig,
) -> np.ndarray:
    """score(q, x) = bridged^p + direct^p with bridged = max over shared landmarks of min(conf_q, conf_x) / 3
    and direct = clip(cos, 0, 1) (B.3 steps 4-5)."""
    direct = np.clip(np.asarray(direct, dtype=np.float64), 0.0, 1.0)
    bridged = np.zeros_like(direct)
    for j, conf_x in enumerate(db_confs):
        shared = [min(c, conf_x[lab]) for lab, c in query_conf.items() if lab in conf_x]
        if shared:
            bridged[j] = max(shared) / cfg.divisor
    return (bridged**cfg.power + direct**cfg.power).astype(np.float32)


def known_label_confidences(labels: Sequence[Hashable | None], cfg: BridgedConfig) -> list[dict[Hashable, float]]:
    """conf(x, l) of labelled database images: their own label at the most a prediction could give."""
    full = cfg.per_landmark + cfg.nearest_bonus
    return [({lab: full} if lab is not None else {}) for lab in labels]


def rank_by(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Positions sorted by score descending (stable), optionally only the first k."""
    scores = np.asarray(scores, dtype=np.float32)[None, :]
    _, order = topk_rows(scores, scores.shape[1] if k is None else k)
    return order[0]
