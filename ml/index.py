"""Nearest-neighbour indexes over L2-normalised descriptors (inner product = cosine), versioned on disk.

- ``exact``: brute force, the ``IndexFlatIP`` computation. On CPU it runs over the memory-mapped
  ``vectors.npy`` in row chunks (one BLAS matrix product per chunk, top-k kept per chunk), so a loaded
  index costs no RAM of its own and a single query is bound by memory bandwidth; on a GPU the vectors
  are copied into a faiss ``GpuIndexFlatIP``.
- ``ivfpq``: faiss ``IndexIVFPQ`` (inner product), trained on a sample; the short list it returns is
  re-scored exactly against the memory-mapped vectors (``refine_factor`` x k candidates), which restores
  most of the recall PQ loses at the cost of reading refine_factor*k rows per query.
- ``hnsw``: faiss ``IndexHNSWFlat`` (inner product); stores its own copy of the vectors.

``IndexConfig.kind = "auto"`` picks exact up to ``approximate_above`` vectors, then ``approximate``.

On disk, one folder per index version (``build_index`` refuses to overwrite one)::

    meta.json     format version, kind, count, dim, config, faiss version   (written last)
    ids.txt       one external string id per line, in vector order
    vectors.npy   float32 (count, dim): what exact search and refinement read, memory-mapped
    index.faiss   the approximate structure (ivfpq, hnsw only)

Everything is written into a hidden temporary sibling folder that is renamed into place at the end, so a
crash mid-build leaves no folder that ``load_index`` would accept. Indexes built in shards (one folder
each) are searched with ``search_sharded``, whose per-shard answers are combined by ``merge_topk``.

A sharded index is one folder of shard folders (each a complete index as above) plus a manifest::

    meta.json         format, kind "sharded", count, dim, the shards (name, count, kind), recall   (last)
    shard-00000/      an index folder over rows [0, shard_size)
    shard-00001/      ...

``build_shards`` writes shard folders one by one (a shard already there is kept, so a resumed build only
builds what is missing; shards may be built by different processes), ``publish_sharded`` measures the
recall of approximate shards against exact search, writes the manifest and renames the folder into
place. ``load_index`` opens either kind of folder; a sharded one comes back as a ``ShardedIndex``, which
searches every shard and k-way merges (the same answer one index over all the vectors gives) and reads
vector rows from the shards' memory-mapped files by global position.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ml.atomic_files import write_rows
from ml.columns import IdColumn

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
FORMAT_VERSION = 1
KINDS = ("auto", "exact", "ivfpq", "hnsw")
META, IDS, VECTORS, FAISS_FILE = "meta.json", "ids.txt", "vectors.npy", "index.faiss"
SHARDED = "sharded"  # meta.json "kind" of a folder of shard folders
RECALL_QUERIES, RECALL_K = 200, 100  # approximate indexes: recall@100 measured on 200 database vectors


class IndexFolderError(ValueError):
    """A folder that is not a complete index, or inputs an index cannot be built from."""


@dataclass
class IndexConfig:
    """How to index; the approximate parameters are the usual faiss starting points for ~1M vectors."""

    kind: str = "auto"  # one of KINDS
    approximate_above: int = 200_000  # "auto": exact up to this many vectors (exact 1M x 512 ~ 0.1-0.3 s/query)
    approximate: str = "ivfpq"  # what "auto" uses above the threshold
    nlist: int = 0  # IVF cells; 0 = 4 * sqrt(N), capped so every cell has >= 39 training points
    pq_m: int = 64  # PQ sub-quantisers (must divide dim); 64 x 8 bits = 64 bytes per vector
    pq_nbits: int = 8
    # 128 probes + exact re-scoring of 10 x k PQ candidates: recall@100 0.94 at ~18 ms per query on 1 M
    # vectors, 2 cores (docs/benchmarks.md, "Index at 1 M vectors"); nprobe 32 / 4x gave 0.70 at 2 ms.
    nprobe: int = 128
    refine_factor: int = 10  # exact re-scoring of refine_factor * k PQ candidates; 0 = off
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    train_size: int = 200_000  # vectors sampled to train the IVF quantiser and PQ
    add_batch: int = 65_536  # vectors added per step (progress granularity)
    use_gpu: str = "auto"  # "auto" = when faiss has GPU support and a GPU is present; "yes" / "no"
    chunk_rows: int = 131_072  # exact CPU search: rows per BLAS product
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.approximate not in ("ivfpq", "hnsw"):
            raise ValueError(f"approximate must be 'ivfpq' or 'hnsw', got {self.approximate!r}")
        if self.use_gpu not in ("auto", "yes", "no"):
            raise ValueError(f"use_gpu must be 'auto', 'yes' or 'no', got {self.use_gpu!r}")

    def resolved_kind(self, count: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "exact" if count <= self.approximate_above else self.approximate


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _want_gpu(config: IndexConfig) -> bool:
    if config.use_gpu == "no":
        return False
    available = gpu_available()
    if config.use_gpu == "yes" and not available:
        raise RuntimeError("use_gpu='yes' but faiss has no GPU support or no GPU is visible")
    return available


@dataclass
class LoadedIndex:
    """An index ready to search: external ids, the (memory-mapped) vectors and the faiss structure."""

    path: Path | None
    kind: str
    ids: Sequence[str]  # an IdColumn when loaded from a folder, a list when made in memory
    vectors: np.ndarray  # (count, dim) float32, usually a read-only memmap
    config: IndexConfig
    faiss_index: faiss.Index | None = None  # approximate structure, or the GPU copy of an exact index
    meta: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) (nq, k') with k' = min(k, count); missing results are (-inf, -1)."""
        queries = _as_queries(queries, self.dim)
        k = min(k, self.count)
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.kind == "exact":
            if self.faiss_index is not None:  # GPU copy
                return _faiss_search(self.faiss_index, queries, k)
            return exact_search(self.vectors, queries, k, self.config.chunk_rows)
        if self.kind == "ivfpq" and self.config.refine_factor > 0:
            shortlist = min(self.count, k * self.config.refine_factor)
            _, cand = _faiss_search(self.faiss_index, queries, shortlist)
            return refine(self.vectors, queries, cand, k)
        return _faiss_search(self.faiss_index, queries, k)


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
    if q.shape[1] != dim:
        raise ValueError(f"queries have dimension {q.shape[1]} but the index has {dim}")
    return q


def _faiss_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, pos = index.search(queries, k)
    scores = np.where(pos < 0, -np.inf, scores).astype(np.float32)
    return scores, pos.astype(np.int64)


# ------------------------------------------------------------------------------------------ exact / merge


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest scores (descending) and their column positions; ties keep column order."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    part.sort(axis=1)  # column order first, so the stable sort below breaks ties by position
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(part, order, axis=1)


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 131_072
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner product (the IndexFlatIP result) over row chunks of a possibly memory-mapped array."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    parts_s, parts_p = [], []
    for start in range(0, len(vectors), chunk_rows):
        chunk = np.asarray(vectors[start : start + chunk_rows], dtype=np.float32)
        s, p = topk_rows(queries @ chunk.T, k)
        parts_s.append(s)
        parts_p.append(p + start)
    return merge_topk(parts_s, parts_p, k)


def merge_topk(
    scores: Sequence[np.ndarray], ids: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k answers (each (nq, k_i), best first) into one (nq, k) answer, best first.

    ``ids`` may be positions or external ids (any dtype); entries with score -inf (missing results) sort
    last. Ties are broken by shard order, then rank within the shard, so merging is deterministic.
    """
    if len(scores) != len(ids) or not scores:
        raise ValueError("merge_topk needs one ids array per scores array, and at least one")
    all_s = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores], axis=1)
    all_i = np.concatenate([np.asarray(i) for i in ids], axis=1)
    top, cols = topk_rows(all_s, k)
    return top, np.take_along_axis(all_i, cols, axis=1)


def refine(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate positions (nq, c) exactly against ``vectors``; keep the best k per query."""
    nq = len(queries)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_p = np.full((nq, k), -1, np.int64)
    for qi in range(nq):
        cand = candidates[qi][candidates[qi] >= 0]
        if cand.size == 0:
            continue
        order = np.argsort(cand)  # sorted reads are kinder to a memory-mapped file
        rows = np.asarray(vectors[cand[order]], dtype=np.float32)
        s = rows @ queries[qi]
        top_s, top_c = topk_rows(s[None, :], k)
        n = top_s.shape[1]
        out_s[qi, :n] = top_s[0]
        out_p[qi, :n] = cand[order][top_c[0]]
    return out_s, out_p


# -------------------------------------------------------------------------------------------------- build


def build_index(
    vectors: np.ndarray,
    ids: Sequence[str],
    out_dir: str | os.PathLike,
    config: IndexConfig | None = None,
    progress: Progress | None = None,
) -> LoadedIndex:
    """Build an index of ``vectors`` (N, D) named by ``ids`` and publish it atomically as ``out_dir``.

    ``out_dir`` must not exist (index versions are immutable). Returns the published index, loaded.
    """
    config = config or IndexConfig()
    out_dir = Path(out_dir)
    _check_inputs(vectors, ids)
    if out_dir.exists():
        raise FileExistsError(f"index folder already exists (versions are immutable): {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        kind = config.resolved_kind(len(ids))
        started = time.perf_counter()
        write_rows(tmp / VECTORS, vectors, np.float32, config.add_batch)
        (tmp / IDS).write_text("".join(f"{i}\n" for i in ids))
        if kind != "exact":
            index = _build_faiss(np.load(tmp / VECTORS, mmap_mode="r"), kind, config, progress)
            faiss.write_index(index, str(tmp / FAISS_FILE))
        elif progress is not None:
            progress(len(ids), len(ids))
        meta = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "count": len(ids),
            "dim": int(np.shape(vectors)[1]),
            "config": asdict(config),
            "faiss_version": faiss.__version__,
            "build_seconds": round(time.perf_counter() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # meta.json last: a folder without it is never a complete index, whatever happened before.
        (tmp / META).write_text(json.dumps(meta, indent=1))
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_index(out_dir)


def _check_inputs(vectors: np.ndarray, ids: Sequence[str]) -> None:
    shape = np.shape(vectors)
    if len(shape) != 2 or shape[0] != len(ids):
        raise IndexFolderError(f"need one vector per id: {len(ids)} ids, vectors of shape {shape}")
    bad = [i for i in ids if not isinstance(i, str) or not i or "\n" in i or "\r" in i]
    if bad:
        raise IndexFolderError(f"ids must be non-empty one-line strings; bad: {bad[:3]!r}")
    if len(set(ids)) != len(ids):
        raise IndexFolderError("ids must be unique")


def default_nlist(count: int, train_size: int) -> int:
    """4 sqrt(N) cells (faiss guidelines), with at least 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(count)), min(count, train_size) // 39))


def _build_faiss(vectors: np.ndarray, kind: str, config: IndexConfig, progress: Progress | None) -> faiss.Index:
    count, dim = vectors.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    elif kind == "ivfpq":
        if dim % config.pq_m:
            raise IndexFolderError(f"pq_m={config.pq_m} must divide the dimension {dim}")
        nlist = config.nlist or default_nlist(count, config.train_size)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(config.seed)
        sample = np.sort(rng.choice(count, size=min(count, config.train_size), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    else:
        raise IndexFolderError(f"not an approximate kind: {kind}")
    for start in range(0, count, config.add_batch):
        index.add(np.ascontiguousarray(vectors[start : start + config.add_batch], dtype=np.float32))
        if progress is not None:
            progress(min(start + config.add_batch, count), count)
    return index


# --------------------------------------------------------------------------------------------------- load


def load_index(
    directory: str | os.PathLike, config: IndexConfig | None = None, mmap: bool = True
) -> LoadedIndex | ShardedIndex:
    """Open a published index folder, single or sharded; ``config`` overrides search-time settings
    (nprobe, GPU, ...)."""
    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.is_file():
        raise IndexFolderError(f"not a complete index folder (no {META}): {directory}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise IndexFolderError(f"{directory}: index format {meta.get('format')} is not {FORMAT_VERSION}")
    if meta.get("kind") == SHARDED:
        return _load_sharded(directory, meta, config, mmap)
    ids = IdColumn.from_lines((directory / IDS).read_bytes())  # compact: 16 bytes an id, not a string object
    vectors = np.load(directory / VECTORS, mmap_mode="r" if mmap else None)
    if len(ids) != meta["count"] or vectors.shape != (meta["count"], meta["dim"]):
        raise IndexFolderError(f"{directory}: {len(ids)} ids and vectors {vectors.shape} but meta says {meta['count']}")
    config = config or IndexConfig(**meta["config"])
    kind = meta["kind"]
    index = None
    if kind != "exact":
        index = faiss.read_index(str(directory / FAISS_FILE))
        _set_search_params(index, kind, config)
    gpu = _want_gpu(config)
    if gpu:
        if kind == "exact":
            index = faiss.IndexFlatIP(meta["dim"])
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        index = faiss.index_cpu_to_all_gpus(index)
    return LoadedIndex(directory, kind, ids, vectors, config, index, meta)


def _set_search_params(index: faiss.Index, kind: str, config: IndexConfig) -> None:
    if kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = config.nprobe
    elif kind == "hnsw":
        index.hnsw.efSearch = config.ef_search


def in_memory_index(vectors: np.ndarray, ids: Sequence[str], config: IndexConfig | None = None) -> LoadedIndex:
    """An exact index over vectors already in memory (evaluation, tests); nothing is written."""
    _check_inputs(vectors, ids)
    config = config or IndexConfig(kind="exact")
    return LoadedIndex(None, "exact", list(ids), np.asarray(vectors, dtype=np.float32), config)


# ------------------------------------------------------------------------------------------------- search


def search(index: LoadedIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 (nq, k'), ids object array (nq, k')) best first; k' = min(k, count).

    Missing results of an approximate index (fewer than k found) have score -inf and id None.
    """
    scores, pos = index.search_positions(queries, k)
    return scores, _ids_of(index.ids, pos)


def _ids_of(ids: Sequence[str], pos: np.ndarray) -> np.ndarray:
    """The ids at ``pos`` as an object array of its shape; position -1 -> None."""
    out = np.full(pos.shape, None, dtype=object)
    hit = pos >= 0
    if isinstance(ids, IdColumn):
        out[hit] = np.char.decode(ids.raw[pos[hit]]).astype(object)
    else:
        out[hit] = np.asarray(ids, dtype=object)[pos[hit]]
    return out


def search_sharded(
    shards: Sequence[LoadedIndex], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard for the top k, then k-way merge: the answer one index over all shards gives."""
    if not shards:
        raise ValueError("search_sharded needs at least one shard")
    answers = [search(shard, queries, k) for shard in shards]
    return merge_topk([a[0] for a in answers], [a[1] for a in answers], k)


# ------------------------------------------------------------------------------------------------ shards


class RowConcat:
    """The rows of several (memory-mapped) (n_i, D) arrays read as one (N, D) float32 array.

    Supports what search code does with ``LoadedIndex.vectors``: ``len``, ``shape``, and reading rows by an
    integer, a slice, or a list / array of positions (any order, repeats allowed). Nothing is copied up
    front; each read touches only the rows asked for.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, parts: Sequence[np.ndarray]):
        if not parts:
            raise ValueError("RowConcat needs at least one array")
        dims = {int(np.shape(p)[1]) for p in parts}
        if len(dims) != 1:
            raise ValueError(f"arrays of different widths: {sorted(dims)}")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), dims.pop())

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("RowConcat reads whole rows: index it with positions or a slice only")
        if isinstance(key, slice):
            return self.rows(np.arange(*key.indices(len(self))))
        if np.isscalar(key):
            return self.rows(np.asarray([key]))[0]
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.rows(key)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        n = len(self)
        positions = np.where(positions < 0, positions + n, positions)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise IndexError(f"row positions out of range for {n} rows")
        out = np.empty((len(positions), self.shape[1]), np.float32)
        part = np.searchsorted(self.offsets, positions, side="right") - 1
        for p in np.unique(part):
            mask = part == p
            out[mask] = self.parts[p][positions[mask] - self.offsets[p]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate([np.asarray(p, dtype=np.float32) for p in self.parts])
        return whole if dtype is None else whole.astype(dtype)


@dataclass
class ShardedIndex:
    """Several indexes searched as one: global position = shard offset + position in the shard.

    Quacks like ``LoadedIndex`` (``ids``, ``vectors``, ``count``, ``dim``, ``kind``, ``search_positions``),
    so the retrieval pipeline and the web app use it without knowing. Exact shards give exactly the answer
    of one exact index over all the vectors (ties broken by position either way).
    """

    path: Path | None
    shards: list[LoadedIndex]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("a sharded index needs at least one shard")
        counts = [s.count for s in self.shards]
        self.ids = IdColumn.concat([shard.ids for shard in self.shards])
        self.offsets = np.cumsum([0] + counts[:-1]).astype(np.int64)
        for shard, lo, n in zip(self.shards, self.offsets, counts, strict=True):
            shard.ids = self.ids[lo:lo + n]  # views of the one array: the ids are held once
        # One shard: its memmap as is; several: rows read across the shards' memmaps.
        self.vectors = self.shards[0].vectors if len(self.shards) == 1 else RowConcat([s.vectors for s in self.shards])
        kinds = {s.kind for s in self.shards}
        self.kind = kinds.pop() if len(kinds) == 1 else "mixed"
        self.config = self.shards[0].config

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def exact(self) -> bool:
        return all(s.kind == "exact" for s in self.shards)

    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global positions) (nq, k') with k' = min(k, count): every shard's top k, k-way merged."""
        queries = _as_queries(queries, self.dim)
        k = min(k, self.count)
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, positions = [], []
        for offset, shard in zip(self.offsets, self.shards, strict=True):
            s, p = shard.search_positions(queries, k)
            scores.append(s)
            positions.append(np.where(p >= 0, p + offset, -1))
        return merge_topk(scores, positions, k)

    def exact_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every shard's vectors, merged: the reference approximate shards are measured by."""
        queries = _as_queries(queries, self.dim)
        k = min(k, self.count)
        scores, positions = [], []
        for offset, shard in zip(self.offsets, self.shards, strict=True):
            s, p = exact_search(shard.vectors, queries, k, shard.config.chunk_rows)
            scores.append(s)
            positions.append(p + offset)
        return merge_topk(scores, positions, k)


def shard_bounds(count: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of the shards of ``count`` vectors; at least one shard (count 0 gives none)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [(lo, min(lo + shard_size, count)) for lo in range(0, count, shard_size)]


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def shard_complete(folder: str | os.PathLike) -> bool:
    """A shard folder is complete when it exists: ``build_index`` publishes it by rename, meta.json last."""
    return (Path(folder) / META).is_file()


def build_shard(
    vectors: np.ndarray,
    ids: Sequence[str],
    folder: str | os.PathLike,
    config: IndexConfig,
    progress: Progress | None = None,
) -> bool:
    """Build one shard folder unless it is already complete; True when this call built it.

    Safe to run twice at once (a task delivered again): one rename wins, the other build is dropped.
    """
    folder = Path(folder)
    if shard_complete(folder):
        return False
    try:
        build_index(vectors, ids, folder, config, progress)
    except OSError:
        if shard_complete(folder):  # another process published the same shard first
            return False
        raise
    return True


def build_shards(
    vectors: np.ndarray,
    ids: Sequence[str],
    building: str | os.PathLike,
    config: IndexConfig,
    shard_size: int,
    progress: Progress | None = None,
) -> list[int]:
    """Build, in turn, every shard of ``vectors`` missing from the folder ``building``; the shards built.

    ``config.kind`` should be resolved on the whole count first (``resolved_kind``), so all shards share
    one kind whatever their sizes.
    """
    _check_inputs(vectors, ids)
    building = Path(building)
    building.mkdir(parents=True, exist_ok=True)
    built = []
    for i, (lo, hi) in enumerate(shard_bounds(len(ids), shard_size)):
        if build_shard(vectors[lo:hi], ids[lo:hi], building / shard_name(i), config):
            built.append(i)
        if progress is not None:
            progress(hi, len(ids))
    return built


def measure_recall(
    index: ShardedIndex | LoadedIndex, queries: int = RECALL_QUERIES, k: int = RECALL_K, seed: int = 1234
) -> dict:
    """recall@k of the index's own search against exact search over the same vectors, with a sample of the
    database vectors as queries: ``{"recall", "k", "queries"}`` (recall 1.0 for an exact index)."""
    k = min(k, index.count)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(index.count, size=min(queries, index.count), replace=False))
    q = np.asarray(index.vectors[rows], dtype=np.float32)
    _, approx = index.search_positions(q, k)
    if isinstance(index, ShardedIndex):
        _, exact = index.exact_positions(q, k)
    else:
        _, exact = exact_search(index.vectors, q, k, index.config.chunk_rows)
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True)]
    return {"recall": round(float(np.mean(hits)) / k, 4) if k else 1.0, "k": int(k), "queries": int(len(rows))}


def publish_sharded(
    building: str | os.PathLike,
    out_dir: str | os.PathLike,
    recall_queries: int = RECALL_QUERIES,
    extra: dict | None = None,
) -> ShardedIndex:
    """Turn a folder of complete shard folders into a published sharded index at ``out_dir``.

    Measures recall@100 against exact search when a shard is approximate, writes the manifest (last) and
    renames the folder into place, so ``out_dir`` appears complete or not at all.
    """
    building, out_dir = Path(building), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"index folder already exists (versions are immutable): {out_dir}")
    names = sorted(p.name for p in building.glob("shard-*") if p.is_dir())
    incomplete = [n for n in names if not shard_complete(building / n)]
    if not names or incomplete:
        raise IndexFolderError(f"{building}: no shards, or shards without {META}: {incomplete[:5]}")
    index = ShardedIndex(building, [load_index(building / n) for n in names])
    recall = None if index.exact else measure_recall(index, recall_queries)
    meta = {
        "format": FORMAT_VERSION,
        "kind": SHARDED,
        "shard_kind": index.kind,
        "count": index.count,
        "dim": index.dim,
        "shards": [{"name": n, "count": s.count, "kind": s.kind} for n, s in zip(names, index.shards, strict=True)],
        "recall": recall,
        "faiss_version": faiss.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    (building / META).write_text(json.dumps(meta, indent=1))  # last: the folder is complete from here on
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.rename(building, out_dir)
    return load_index(out_dir)


def _load_sharded(directory: Path, meta: dict, config: IndexConfig | None, mmap: bool) -> ShardedIndex:
    shards = [load_index(directory / s["name"], config, mmap) for s in meta["shards"]]
    for entry, shard in zip(meta["shards"], shards, strict=True):
        if shard.count != entry["count"] or shard.dim != meta["dim"]:
            raise IndexFolderError(f"{directory / entry['name']}: {shard.count} x {shard.dim} vectors but the "
                                   f"manifest says {entry['count']} x {meta['dim']}")
    return ShardedIndex(directory, shards, meta)
