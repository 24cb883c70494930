"""ml.index: exact search equals brute force, approximate recall, atomic publishing, sharded merge."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ml.index import (
    IndexConfig,
    IndexFolderError,
    RowConcat,
    ShardedIndex,
    build_index,
    build_shards,
    exact_search,
    load_index,
    measure_recall,
    merge_topk,
    publish_sharded,
    search,
    search_sharded,
)

ROOT = Path(__file__).resolve().parents[2]


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 centres: the neighbourhood structure real descriptors have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.7 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ids(n: int) -> list[str]:
    return [f"img{i:05d}" for i in range(n)]


def _brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def test_exact_index_equals_numpy_brute_force(tmp_path):
    x, q = _clustered(3000, 32), _clustered(20, 32, seed=1)
    index = build_index(x, _ids(3000), tmp_path / "v1", IndexConfig(kind="exact", chunk_rows=700))
    scores, ids = search(index, q, 10)
    bf_scores, bf_pos = _brute_force(x, q, 10)
    np.testing.assert_allclose(scores, bf_scores, rtol=1e-5, atol=1e-6)
    assert (ids == np.asarray(_ids(3000), dtype=object)[bf_pos]).all()
    # Loaded back from disk, memory-mapped: the same answers.
    again = load_index(tmp_path / "v1")
    assert isinstance(again.vectors, np.memmap)
    assert (search(again, q, 10)[1] == ids).all()


def test_k_larger_than_database_returns_everything_ranked():
    x = _clustered(7, 8)
    scores, pos = exact_search(x, x[:2], 50)
    assert pos.shape == (2, 7)
    assert pos[0, 0] == 0 and pos[1, 0] == 1  # each vector finds itself first
    assert (np.diff(scores, axis=1) <= 1e-7).all()


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_recall_at_100_against_exact(tmp_path, kind):
    n, dim = 6000, 32
    x, q = _clustered(n, dim), _clustered(30, dim, seed=2)
    # Small PQ codebooks (6 bits) and few cells keep training fast at this size.
    cfg = IndexConfig(kind=kind, pq_m=8, pq_nbits=6, nprobe=16, nlist=32, hnsw_m=16, ef_construction=80)
    approx = build_index(x, _ids(n), tmp_path / kind, cfg)
    assert (tmp_path / kind / "index.faiss").is_file()
    _, exact_pos = _brute_force(x, q, 100)
    _, approx_ids = search(approx, q, 100)
    exact_ids = np.asarray(_ids(n), dtype=object)[exact_pos]
    recall = np.mean([len(set(a) & set(e)) / 100 for a, e in zip(approx_ids, exact_ids, strict=True)])
    print(f"{kind} recall@100 vs exact: {recall:.3f}")
    assert recall >= 0.9


def test_auto_picks_approximate_above_threshold(tmp_path):
    x = _clustered(2000, 16)
    small = build_index(x[:500], _ids(500), tmp_path / "a", IndexConfig(approximate_above=1000))
    big = build_index(x, _ids(2000), tmp_path / "b",
                      IndexConfig(approximate_above=1000, approximate="hnsw"))
    assert small.kind == "exact" and big.kind == "hnsw"


def test_published_folder_is_immutable(tmp_path):
    x = _clustered(10, 8)
    build_index(x, _ids(10), tmp_path / "v1", IndexConfig(kind="exact"))
    with pytest.raises(FileExistsError):
        build_index(x, _ids(10), tmp_path / "v1", IndexConfig(kind="exact"))


def test_failure_mid_build_leaves_nothing(tmp_path):
    x = _clustered(3000, 16)

    def explode(done: int, total: int) -> None:
        if done < total:
            raise RuntimeError("disk full")

    cfg = IndexConfig(kind="hnsw", add_batch=1000)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(x, _ids(3000), tmp_path / "v1", cfg, progress=explode)
    assert list(tmp_path.iterdir()) == []


def test_killed_process_leaves_no_loadable_folder(tmp_path):
    """A build killed mid-way (no cleanup runs) leaves only a hidden temp folder that cannot be loaded."""
    script = textwrap.dedent(f"""
        import os, numpy as np
        from ml.index import IndexConfig, build_index
        x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
        def die(done, total):
            if done < total:
                os._exit(3)  # like a kill: no exception handlers, no cleanup
        build_index(x, [f"i{{n}}" for n in range(3000)], {str(tmp_path / 'v1')!r},
                    IndexConfig(kind="hnsw", add_batch=1000), progress=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert not (tmp_path / "v1").exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".v1.tmp-") for p in leftovers)
    for folder in [tmp_path / "v1", *leftovers]:
        with pytest.raises(IndexFolderError):
            load_index(folder)


def test_ids_must_match_vectors(tmp_path):
    with pytest.raises(IndexFolderError, match="one vector per id"):
        build_index(np.zeros((3, 4), np.float32), ["a", "b"], tmp_path / "x")
    with pytest.raises(IndexFolderError, match="unique"):
        build_index(np.zeros((2, 4), np.float32), ["a", "a"], tmp_path / "x")


def test_sharded_search_equals_single_index(tmp_path):
    n = 4000
    x, q, ids = _clustered(n, 24), _clustered(15, 24, seed=3), _ids(n)
    whole = build_index(x, ids, tmp_path / "whole", IndexConfig(kind="exact"))
    shards = [
        build_index(x[s:e], ids[s:e], tmp_path / f"shard{s}", IndexConfig(kind="exact"))
        for s, e in [(0, 1500), (1500, 2600), (2600, n)]
    ]
    s_whole, i_whole = search(whole, q, 30)
    s_shard, i_shard = search_sharded(shards, q, 30)
    np.testing.assert_allclose(s_shard, s_whole, rtol=1e-6)
    assert (i_shard == i_whole).all()


def test_merge_topk_orders_and_puts_missing_last():
    s1 = np.array([[0.9, 0.5, -np.inf]], np.float32)
    i1 = np.array([["a", "b", None]], dtype=object)
    s2 = np.array([[0.7, 0.6, 0.1]], np.float32)
    i2 = np.array([["c", "d", "e"]], dtype=object)
    scores, ids = merge_topk([s1, s2], [i1, i2], 4)
    assert ids.tolist() == [["a", "c", "d", "b"]]
    np.testing.assert_allclose(scores, [[0.9, 0.7, 0.6, 0.5]])


def test_sharded_folder_loads_as_one_index_with_the_same_answers(tmp_path):
    n = 1000
    x, q, ids = _clustered(n, 16), _clustered(12, 16, seed=4), _ids(n)
    x[7] = x[400]  # a tie across shards: broken by position, as one index does
    whole = build_index(x, ids, tmp_path / "whole", IndexConfig(kind="exact"))
    assert build_shards(x, ids, tmp_path / "building", IndexConfig(kind="exact"), 300) == [0, 1, 2, 3]
    assert build_shards(x, ids, tmp_path / "building", IndexConfig(kind="exact"), 300) == []  # all on disk
    publish_sharded(tmp_path / "building", tmp_path / "sharded")
    sharded = load_index(tmp_path / "sharded")
    assert isinstance(sharded, ShardedIndex) and len(sharded.shards) == 4 and sharded.meta["recall"] is None
    assert sharded.ids == ids and sharded.count == n and isinstance(sharded.shards[2].vectors, np.memmap)
    for k in (1, 10, 100, 2000):
        s_whole, p_whole = whole.search_positions(q, k)
        s_shard, p_shard = sharded.search_positions(q, k)
        assert (p_shard == p_whole).all()
        np.testing.assert_allclose(s_shard, s_whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sharded.vectors[[999, 0, 301, 301]], x[[999, 0, 301, 301]])
    assert measure_recall(sharded, 50)["recall"] == 1.0


def test_row_concat_reads_rows_like_one_array():
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    rc = RowConcat([x[:3], x[3:4], x[4:]])
    assert rc.shape == (10, 4) and len(rc) == 10
    np.testing.assert_array_equal(rc[[9, 0, 3, 3, -1]], x[[9, 0, 3, 3, -1]])
    np.testing.assert_array_equal(rc[2:8:2], x[2:8:2])
    np.testing.assert_array_equal(rc[np.int64(5)], x[5])
    np.testing.assert_array_equal(np.asarray(rc), x)
    assert rc[np.zeros(0, np.int64)].shape == (0, 4)
    with pytest.raises(IndexError):
        rc[[10]]


def test_recall_of_approximate_shards_is_measured_and_stored(tmp_path):
    n, dim = 3000, 32
    x = _clustered(n, dim)
    cfg = IndexConfig(kind="ivfpq", pq_m=8, pq_nbits=6, nlist=16, nprobe=4, refine_factor=0)
    build_shards(x, _ids(n), tmp_path / "b", cfg, 1500)
    index = publish_sharded(tmp_path / "b", tmp_path / "ivf", recall_queries=100)
    recall = index.meta["recall"]
    assert recall["k"] == 100 and recall["queries"] == 100 and 0.3 < recall["recall"] < 1.0
    assert load_index(tmp_path / "ivf").meta["recall"] == recall
    # Measured the same way from outside: the same figure.
    assert measure_recall(load_index(tmp_path / "ivf"), 100) == recall
