"""Label cleaning: our cleaner vs cleanlab vs a 5-NN vote, on landmarks-mini and landmarks-dev/train with
flipped labels; its cost per 1,000 photos and at 1 M.

Each set's photos are all labelled; a known fraction of labels (10 %, 30 %) is moved to another landmark
uniformly at random (``ml.clean.flip_labels``). Reported: precision and recall POOLED over the 5 report seeds
(``REPORT_SEEDS``: flagged and flipped photos summed over the seeds), never used to choose anything.
Flagged = suspect + drop.

- ours: ``ml.clean`` defaults: kNN graph of the ``REPORT_DESCRIPTORS`` descriptors + RootSIFT/MAGSAC inliers
  (``ml.spatial`` defaults) + ``decide`` with the default ``Thresholds``. Descriptors (``bench.clean_inputs``):
  ``product`` = what the product's clean job embeds with (``webapp.search.services.cleaning_embedder``: the
  serving index's models and embedding settings, the default pipeline's lite2 at 3 scales with mirrored views;
  ImageNet weights here), ``lite0`` = ImageNet lite0 GeM at 512 px, one scale (what this bench used first).
- ours + dense: the same evidence with the same pairs also dense-matched on ImageNet lite2's block-4 feature
  maps (``ml.dense_matching`` defaults, as search matches them), a pair verified when RootSIFT inliers >=
  verify_thresh OR dense inliers >= dense_thresh (``DENSE_CHOICE``).
- cleanlab: ``cleanlab.filter.find_label_issues`` (defaults) on out-of-fold ``pred_probs`` of a logistic
  regression (5 folds) on the same descriptors and noisy labels.
- 5-NN vote: flagged when the plurality label of the 5 nearest photos is not the photo's label.

``--choose`` picks the descriptors and the settings of ``decide`` that read them (a small grid, ``GRID``;
``--choose dense``: the dense-matching grid ``DENSE_GRID``; ``--choose rules``: ``RULES_GRID``) by 2-fold
cross-validation over the tuning seeds 1-10 (folds 1-5 and 6-10) on both sets at both noise levels: the
objective is the smallest of precision and recall over the four (set, noise) cells, pooled over a fold's seeds
(for ``rules``, each minus the cell's target, ``TARGETS``); a setting is chosen on one
fold and scored on the other, then the setting best on all ten seeds is printed, for all settings and for each
descriptor's alone (nothing is written). The
report seeds are never used there.

Cost: descriptors, RootSIFT features and pair inliers are cached under ``--cache`` (``bench/clean_inputs.py``);
the seconds of the cold run that made them are kept there, and the cost per 1,000 photos is computed from
those unit costs and the pairs our cleaner verifies per photo. Then the kNN graph and ``decide`` are timed on
synthetic sets (10 k, 30 k, 100 k) and extrapolated to 1 M.

    .venv/bin/python bench/bench_clean.py [--cache /tmp/landmarks-clean] [--choose [dense|rules]] [--no-write]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.clean_inputs import (  # noqa: E402
    SETS,
    CachedPairs,
    descriptors,
    load_set,
    warm,
    warm_dense,
)
from bench.common import record, table  # noqa: E402
from ml.clean import (  # noqa: E402
    EvidenceConfig,
    Thresholds,
    build_evidence,
    cluster_suspects,
    decide,
    flagged,
    flip_labels,
    knn_graph,
    mutual_ranks,
    precision_recall,
)

REPORT_SEEDS = (1001, 1002, 1003, 1004, 1005)
TUNE_SEEDS = tuple(range(1, 11))
NOISE = (0.1, 0.3)
OURS = "ours (kNN + RootSIFT/MAGSAC + neighbour vote)"
CLEANLAB = "cleanlab find_label_issues (OOF logistic regression)"
VOTE = "5-NN label vote"
DENSE_OURS = "ours + dense-match verification (lite2 block 4)"
OURS_OTHER = "ours with lite0 descriptors (for comparison)"
# Dense matching is not adopted (ml.clean.Thresholds keeps dense_thresh 0): with lite0 descriptors and dense_thresh
# {0, 20, 30, 40, 50, 60} x dense_verifiable {True, False} added to a grid over verify_thresh {15, 20, 25},
# vote_margin {0, 1}, other_rank {0, 5}, noise_fill, the settings chosen on one fold of the tuning seeds scored
# 0.744 and 0.747 on the other (mean 0.746), against 0.741 and 0.777 (mean 0.759) with RootSIFT alone. Again with
# the product's descriptors and the other settings at their defaults (``--choose dense``, DENSE_GRID): 0.774 and
# 0.792 (mean 0.783) against 0.770 and 0.802 (mean 0.786). The report shows, for information, the dense setting
# best on all ten tuning seeds (there 0.793 vs 0.794 without dense), never chosen on the report seeds.
DENSE_CHOICE = {"dense_thresh": 40, "dense_verifiable": False}
DENSE_NOTE = ("Not adopted: in `--choose dense` (the report's descriptors and settings, dense_thresh {0, 20, 30, 40, "
              "50, 60} x dense_verifiable) the settings chosen on one fold of the tuning seeds scored 0.774 and 0.792 "
              "on the other (mean 0.783), against 0.770 and 0.802 (mean 0.786) with RootSIFT alone (with lite0 "
              "descriptors and a wider grid earlier: 0.746 vs 0.759); the row shows the dense setting best on all "
              "ten tuning seeds (0.793 there, 0.794 without dense), for information.")
# The descriptors of the kNN graph and of the descriptor rules (bench.clean_inputs.descriptors): "lite0" (ImageNet
# lite0, 512 px, one scale: what the bench used first) or "product" (what the product's clean job embeds with:
# the serving index's models and embedding settings, the default pipeline's lite2 at 3 scales with mirrored
# views); --choose picks between them together with the settings that read them.
DESCRIPTORS = ("lite0", "product")
REPORT_DESCRIPTORS = "product"  # what the product does; --choose: a tie with lite0 (see the Thresholds comment)
# The dense grid (--choose dense): the report's descriptors, the other settings at their defaults; 0 = RootSIFT alone.
DENSE_GRID = {"descriptors": (REPORT_DESCRIPTORS,), "dense_thresh": (0, 20, 30, 40, 50, 60),
              "dense_verifiable": (True, False)}
GRID = {"descriptors": DESCRIPTORS, "verify_thresh": (15, 20), "other_rank": (0, 5, 10), "vote_k": (5, 10, 20),
        "coherent_fraction": (0.5, 0.7)}
# The rules grid (--choose rules): how many verified label-mates make a label verifiable (its unverified photos
# suspect), and how few of its own label a photo's nearest neighbours may carry for the descriptors to suggest
# another; with the two settings nearest to them. Scored by the margin against the issue's targets.
RULES_GRID = {"descriptors": (REPORT_DESCRIPTORS,), "verify_thresh": (15, 20), "other_rank": (5, 10),
              "verifiable_min": (2, 3, 4), "embedding_own_vote": (1.0, 0.2, 0.1, 0.0)}
# Issue 22's targets: P and R at least this in each (set, noise) cell.
TARGETS = {("landmarks-mini", 0.1): 0.85, ("landmarks-dev/train", 0.1): 0.8,
           ("landmarks-mini", 0.3): 0.75, ("landmarks-dev/train", 0.3): 0.75}


# --------------------------------------------------------------------------------------------- methods


def run_cleanlab(vectors, ids, noisy, seed: int) -> tuple[list[str], float]:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict

    t0 = time.perf_counter()
    classes = sorted(set(noisy))
    y = np.array([classes.index(x) for x in noisy])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # folds missing a rare class: sklearn fills its column with 0
        probs = cross_val_predict(LogisticRegression(max_iter=2000), vectors, y,
                                  cv=KFold(5, shuffle=True, random_state=seed), method="predict_proba")
        issues = find_label_issues(y, probs)
    return [ids[i] for i in np.flatnonzero(issues)], time.perf_counter() - t0


def run_knn_vote(vectors, ids, noisy, k: int = 5) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    _, nbrs = knn_graph(vectors, k)
    found = []
    for i, row in enumerate(nbrs):
        votes = Counter(noisy[j] for j in row)
        best = max(votes.values())
        winner = next(noisy[j] for j in row if votes[noisy[j]] == best)  # ties: the nearest
        if winner != noisy[i]:
            found.append(ids[i])
    return found, time.perf_counter() - t0


def noisy_runs(s, pairs: CachedPairs, noise: float, seeds, dense: CachedPairs | None = None) -> list[tuple]:
    """(seed, noisy labels, truly flipped ids, evidence built with the noisy labels) per seed; with ``dense``,
    the evidence holds the dense inliers of the same pairs too (read only when ``dense_thresh`` > 0)."""
    out = []
    for seed in seeds:
        noisy, flipped = flip_labels(s.labels, noise, seed)
        ev = build_evidence(s.vectors, s.ids, noisy, EvidenceConfig(), local_features=pairs, dense_features=dense)
        out.append((seed, noisy, [s.ids[p] for p in flipped], ev))
    return out


def pooled(found_truth: list[tuple[list[str], list[str]]]) -> tuple[float, float, int]:
    """Precision and recall over the runs' flagged and flipped photos summed, and the photos flagged."""
    hits = sum(len(set(f) & set(t)) for f, t in found_truth)
    flagged_n = sum(len(f) for f, _ in found_truth)
    truth_n = sum(len(t) for _, t in found_truth)
    return hits / max(1, flagged_n), hits / max(1, truth_n), flagged_n


def compare(cache: Path, desc_key: str = REPORT_DESCRIPTORS) -> tuple[str, dict]:
    """The table of every method on the report seeds with the ``desc_key`` descriptors, plus ours with the
    lite0 descriptors for comparison when those are others; and the cost inputs."""
    rows, cost = [], {}
    desc, product = descriptors(desc_key), descriptors("product")
    column = desc.short() + (" (the clean job's)" if desc == product else "")
    other = descriptors("lite0") if desc != descriptors("lite0") else None
    for name in SETS:
        s = load_set(name, cache, desc)
        pairs = warm(s, EvidenceConfig().k)  # cold: times the features and pairs not cached yet
        dense = warm_dense(s, EvidenceConfig().k)
        with_dense = replace(Thresholds(), **DENSE_CHOICE)
        s_other = load_set(name, cache, other) if other is not None else None
        pairs_other = warm(s_other, EvidenceConfig().k) if other is not None else None
        for noise in NOISE:
            methods = [OURS] + ([OURS_OTHER] if other is not None else []) + [DENSE_OURS, CLEANLAB, VOTE]
            results: dict[str, list] = {m: [] for m in methods}
            seconds: dict[str, float] = Counter()
            pairs_n = []
            runs = noisy_runs(s, pairs, noise, REPORT_SEEDS, dense)
            runs_other = noisy_runs(s_other, pairs_other, noise, REPORT_SEEDS) if other is not None else None
            for n_run, (seed, noisy, truth, ev) in enumerate(runs):
                ours = [(OURS, ev, Thresholds()), (DENSE_OURS, ev, with_dense)]
                if other is not None:
                    ours.append((OURS_OTHER, runs_other[n_run][3], Thresholds()))
                for method, e, t in ours:
                    t0 = time.perf_counter()
                    found = flagged(decide(e, noisy, t))
                    seconds[method] += time.perf_counter() - t0 + e.meta["graph_seconds"]
                    results[method].append((found, truth))
                pairs_n.append(ev.meta["pairs_verified"])
                for method, (flag, secs) in ((CLEANLAB, run_cleanlab(s.vectors, s.ids, noisy, seed)),
                                             (VOTE, run_knn_vote(s.vectors, s.ids, noisy))):
                    results[method].append((flag, truth))
                    seconds[method] += secs
                print(f"{name} noise {noise} seed {seed}: " + ", ".join(
                    f"{m.split()[0]} P {precision_recall(*results[m][-1])[0]:.2f} "
                    f"R {precision_recall(*results[m][-1])[1]:.2f}" for m in results), flush=True)
            for method, runs in results.items():
                p, r, n = pooled(runs)
                rows.append([name, f"{noise:.0%}", method, other.short() if method == OURS_OTHER else column,
                             f"{p:.2f}", f"{r:.2f}",
                             f"{n / len(runs):.1f} / {sum(len(t) for _, t in runs) / len(runs):.0f}",
                             f"{seconds[method] / len(runs):.2f}"])
            embed = {"embed_seconds": s.timings[f"embed_seconds{desc.timing_suffix}"],
                     "embed_photos": s.timings[f"embed_photos{desc.timing_suffix}"]}
            cost.setdefault(name, {"photos": len(s.ids), **s.timings, **embed, "pairs": []})["pairs"] += pairs_n
    body = table(["set", "noise", "method", "descriptors (kNN graph)", "precision (pooled)", "recall (pooled)",
                  "flagged / flipped per seed", "decide s per run"], rows)
    return body, cost


def cost_table(cost: dict, decide_10k: float, graph_1m: float) -> tuple[str, str]:
    rows, per_photo = [], []
    for name, c in cost.items():
        extract = c["extract_seconds"] / c["extract_photos"]
        pair = c["verify_seconds"] / c["verify_pairs"]
        pairs_per_photo = float(np.mean(c["pairs"])) / c["photos"]
        embed = c["embed_seconds"] / c["embed_photos"]
        per_1000 = 1000 * (extract + pairs_per_photo * pair) + decide_10k / 10
        per_photo.append(extract + pairs_per_photo * pair)
        dense_extract = c["dense_extract_seconds"] / c["dense_extract_photos"]
        dense_pair = c["dense_verify_seconds"] / c["dense_verify_pairs"]
        dense_match = 1000 * pairs_per_photo * dense_pair
        rows.append([name, c["photos"], f"{1000 * embed:.0f}", f"{1000 * extract:.0f}",
                     f"{pairs_per_photo:.1f}", f"{1000 * pair:.1f}", f"{per_1000:.0f}", f"{1000 * dense_extract:.0f}",
                     f"{1000 * dense_pair:.1f}", f"{per_1000 + dense_match:.0f} ({per_1000 + dense_match + 1000 * dense_extract:.0f})"])
    worst = max(per_photo)
    lines = [f"| {n} | {(1e6 * worst) / n / 3600 + (graph_1m + 100 * decide_10k) / 3600:.1f} |" for n in (1, 10, 100)]
    extra = ("1 M photos, chunks on N one-core workers (hours): T(N) = 1e6 x (features + pairs per photo x s per "
             f"pair) / N + kNN graph(1 M) + decide(1 M), with the costlier set's {worst:.3f} s per photo, the "
             f"graph {graph_1m:.0f} s (extrapolated below) and decide 100 x the 10 k time ({decide_10k:.1f} s), "
             "both on one machine; descriptors come from the index build and are not counted.\n\n"
             "| workers N | hours |\n|---|---|\n" + "\n".join(lines))
    return table(["set", "photos", "embed ms / photo (not counted)", "RootSIFT ms / photo", "pairs / photo",
                  "ms / pair", "our cleaner s / 1,000 photos", "dense features ms / photo", "dense ms / pair",
                  "with dense s / 1,000 photos: features cached by the index build (extracted here)"], rows), extra


# -------------------------------------------------------------------------------------------- choosing


def choose(cache: Path, grid: dict, pools: dict, margin: bool = False) -> None:
    """2-fold cross-validation of ``grid`` (``"descriptors"``: keys of ``bench.clean_inputs.descriptors``, the
    rest ``Thresholds`` fields) over the tuning seeds; for each pool of settings (``pools``: label -> predicate
    on a setting), the setting chosen on one fold and its score on the other. The score of a setting is the
    smallest of P and R over the (set, noise) cells, or with ``margin`` the smallest of P and R minus the cell's
    target (``TARGETS``), so a cell far above its target does not hide one below it."""
    descs = grid.get("descriptors", ("lite0",))
    with_dense = "dense_thresh" in grid
    runs = {}
    for d in descs:
        for name in SETS:
            s = load_set(name, cache, d)
            pairs = warm(s, EvidenceConfig().k)  # the pairs of this graph not verified yet are verified once
            dense = warm_dense(s, EvidenceConfig().k) if with_dense else None
            for noise in NOISE:
                runs[(d, name, noise)] = noisy_runs(s, pairs, noise, TUNE_SEEDS, dense)

    def thresholds(setting: dict) -> Thresholds:
        return replace(Thresholds(), **{k: v for k, v in setting.items() if k != "descriptors"})

    def objective(setting: dict, seeds) -> tuple[tuple[float, float], dict]:
        """((score, tie-break), cells): with ``margin`` ties go to the larger mean margin of all P and R."""
        t, d = thresholds(setting), setting.get("descriptors", "lite0")
        cells = {}
        for (desc, name, noise), rs in runs.items():
            if desc == d:
                cells[(name, noise)] = pooled([(flagged(decide(ev, noisy, t)), truth)
                                               for seed, noisy, truth, ev in rs if seed in seeds])[:2]
        if not margin:
            return (min(min(c) for c in cells.values()), 0.0), cells
        margins = [x - TARGETS[k] for k, c in cells.items() for x in c]
        return (min(min(c) - TARGETS[k] for k, c in cells.items()), float(np.mean(margins))), cells

    settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if with_dense:
        settings = [c for c in settings if c["dense_thresh"] > 0 or c["dense_verifiable"]]  # no dense: one setting
    folds = (TUNE_SEEDS[:5], TUNE_SEEDS[5:])
    scores = {}
    for n, c in enumerate(settings):
        scores[n] = [objective(c, f)[0] for f in folds]
        print(f"{n}: " + ", ".join(f"{k}={v}" for k, v in c.items()) + ": fold scores " +
              " ".join(f"{v:.3f}" + (f" (mean margin {tie:+.3f})" if margin else "") for v, tie in scores[n]),
              flush=True)
    for label, keep in pools.items():
        pool = [n for n in scores if keep(settings[n])]
        held_out = []
        for a, b in ((0, 1), (1, 0)):
            best = max(pool, key=lambda n: scores[n][a])
            held_out.append(scores[best][b][0])
            print(f"{label}: chosen on fold {a + 1}: setting {best} {settings[best]}, {scores[best][a][0]:.3f} "
                  f"there, {scores[best][b][0]:.3f} on fold {b + 1}")
        print(f"{label}: mean held-out objective {np.mean(held_out):.3f}")
        best = max(pool, key=lambda n: (scores[n][0][0] + scores[n][1][0], scores[n][0][1] + scores[n][1][1]))
        (value, _), cells = objective(settings[best], TUNE_SEEDS)
        print(f"{label}: best on seeds 1-10: setting {best} ({value:.3f}): {settings[best]}",
              {f"{k[0]} {k[1]:.0%}": f"P {p:.2f} R {r:.2f}" for k, (p, r) in cells.items()}, flush=True)


CHOICES = {
    "descriptors": (GRID, {"all settings": lambda c: True,
                           **{f"descriptors {d}": (lambda c, d=d: c["descriptors"] == d) for d in DESCRIPTORS}}),
    "dense": (DENSE_GRID, {"all settings": lambda c: True,
                           "RootSIFT alone (dense_thresh 0)": lambda c: c["dense_thresh"] == 0}),
    "rules": (RULES_GRID, {"all settings": lambda c: True,
                           "as before (verifiable_min 2, no own-vote limit)":
                               lambda c: c["verifiable_min"] == 2 and c["embedding_own_vote"] == 1.0}, True),
}


# -------------------------------------------------------------------------------------------- scaling


def synthetic(n: int, dim: int = 512, per_class: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = max(2, n // per_class)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    true = rng.integers(0, classes, n)
    vectors = centres[true]
    vectors += 1.2 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors, true


def clean_10k() -> tuple[list, float]:
    vectors, true = synthetic(10_000)
    ids = [f"s{i}" for i in range(len(true))]
    noisy, flipped = flip_labels(true.tolist(), 0.1, 0)
    position = {x: i for i, x in enumerate(ids)}

    def oracle(a: str, b: str) -> int:  # stands in for local features: same place -> many inliers
        return 60 if true[position[a]] == true[position[b]] else 3

    t0 = time.perf_counter()
    ev = build_evidence(vectors, ids, noisy, EvidenceConfig(), local_features=oracle)
    t1 = time.perf_counter()
    verdicts = decide(ev, noisy)
    t2 = time.perf_counter()
    clusters = cluster_suspects(verdicts, ev)
    t3 = time.perf_counter()
    p, r = precision_recall(flagged(verdicts), [ids[i] for i in flipped])
    row = ["10 k synthetic, 512-d", f"{ev.meta['graph_seconds']:.1f}", f"{t1 - t0 - ev.meta['graph_seconds']:.1f}",
           f"{t2 - t1:.1f}", f"{t3 - t2:.1f}", f"{t3 - t0:.1f}", ev.meta["pairs_verified"], f"{p:.2f} / {r:.2f}",
           len(clusters)]
    return row, t3 - t0


def graph_time(n: int, exact_below: int) -> tuple[float, float]:
    vectors, _ = synthetic(n)
    t0 = time.perf_counter()
    _, nbrs = knn_graph(vectors, 30, EvidenceConfig(exact_below=exact_below))
    t1 = time.perf_counter()
    mutual_ranks(nbrs)
    return t1 - t0, time.perf_counter() - t1


def scaling(million: bool) -> str:
    rows = []
    sizes = [(10_000, "exact (IndexFlatIP)", 50_000), (30_000, "IVF-Flat", 0), (100_000, "IVF-Flat", 0)]
    if million:
        sizes.append((1_000_000, "IVF-Flat", 0))
    measured = {}
    for n, kind, exact_below in sizes:
        g, m = graph_time(n, exact_below)
        measured[(n, kind)] = g
        rows.append([f"{n:,}", kind, f"{g:.1f}", f"{m:.1f}", "measured"])
        print(rows[-1], flush=True)
    if not million:
        # IVF with 4 sqrt(N) cells and fixed nprobe: per query ~ sqrt(N) work, so the graph ~ N^1.5;
        # the exponent is fitted on the two measured IVF sizes rather than assumed.
        a, b = measured[(30_000, "IVF-Flat")], measured[(100_000, "IVF-Flat")]
        exponent = math.log(b / a) / math.log(100_000 / 30_000)
        graph_1m = b * 10 ** exponent
        rows.append(["1,000,000", "IVF-Flat", f"{graph_1m:.0f}", "",
                     f"extrapolated (N^{exponent:.2f} from 30 k and 100 k)"])
    else:
        graph_1m = measured[(1_000_000, "IVF-Flat")]
    return table(["images", "kNN graph (k=30)", "graph s", "mutual ranks s", "how"], rows), graph_1m


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/landmarks-clean"))
    parser.add_argument("--choose", nargs="?", const="descriptors", choices=sorted(CHOICES),
                        help="choose the descriptors and decide's settings (or, 'dense', the dense-matching grid; "
                             "'rules', the verifiable-label and own-vote rules) on the tuning seeds")
    parser.add_argument("--million", action="store_true", help="measure the 1 M graph instead of extrapolating")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.choose:
        choose(args.cache, *CHOICES[args.choose])
        return
    compare_body, cost = compare(args.cache)
    row10k, _ = clean_10k()
    ten_k = table(["set", "graph s", "pairs s (oracle)", "decide s", "clusters s", "total s", "pairs",
                   "P / R (10 % flips)", "clusters"], [row10k])
    scale, graph_1m = scaling(args.million)
    costs, million = cost_table(cost, float(row10k[3]), graph_1m)
    t, desc, product = Thresholds(), descriptors(REPORT_DESCRIPTORS), descriptors("product")
    body = "\n\n".join([
        f"All photos of each set labelled (landmarks-mini 179 photos, 34 landmarks; landmarks-dev/train 647, 26), "
        f"labels flipped uniformly to another landmark; precision and recall pooled over the 5 report seeds "
        f"{REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]} (never used to choose anything); flagged = suspect + drop. "
        "Targets (issue 22): at 10 % P and R >= 0.85 on landmarks-mini and >= 0.8 on landmarks-dev/train; at "
        "30 % >= 0.75 on both.",
        compare_body,
        f"Descriptors (kNN graph, descriptor rules, cleanlab and the 5-NN vote): {desc.describe()}"
        + (" - what the product's clean job embeds with (`cleaning_embedder`: the serving index's models and "
           "embedding settings, here the default pipeline's, with ImageNet weights)" if desc == product else
           f"; the product's clean job embeds with {product.describe()} (`cleaning_embedder`)") + ". "
        f"Our settings (`ml.clean.Thresholds` defaults): verify_thresh {t.verify_thresh}, vote_k {t.vote_k}, "
        f"vote_margin {t.vote_margin}, other_rank {t.other_rank}, coherent_fraction {t.coherent_fraction}, "
        f"verifiable_min {t.verifiable_min}, embedding_own_vote {t.embedding_own_vote}, noise_fill {t.noise_fill}; "
        "chosen by `bench_clean.py --choose` (descriptors included) and `--choose rules` (verifiable_min, "
        "embedding_own_vote): 2-fold cross-validation over tuning seeds 1-10 on both sets and both noise levels, "
        "objective min(P, R) over the four cells, for the rules min(P, R) minus the cell's target (the comment at "
        "`Thresholds` has the scores). "
        "Ours' time per run is the kNN graph and `decide` on cached evidence; cleanlab's includes fitting.",
        "Ours + dense: the same pairs also dense-matched on ImageNet lite2's block-4 feature maps at 512 px "
        "(`ml.dense_matching` defaults, what search's default pipeline matches); a pair counts as the same place "
        "when RootSIFT inliers >= verify_thresh OR dense inliers >= dense_thresh; "
        + ", ".join(f"{k} {v}" for k, v in DENSE_CHOICE.items()) + ". " + DENSE_NOTE,
        "Cost of our cleaner, cold cache (measured when the cache was made, one thread, this machine): RootSIFT "
        "extraction per photo, pairs verified per photo (RootSIFT + MAGSAC), then kNN graph + decide:",
        costs,
        million,
        "Cleaning 10 k images (synthetic descriptors; an oracle stands in for the inlier counts):",
        ten_k,
        "kNN graph scaling (synthetic 512-d descriptors, k = 30):",
        scale,
    ])
    command = "python bench/bench_clean.py --cache CACHE" + (" --million" if args.million else "")
    if args.no_write:
        print(body)
    else:
        record("Label cleaning", body, command)


if __name__ == "__main__":
    main()
