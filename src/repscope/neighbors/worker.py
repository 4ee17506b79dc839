"""What one worker of :func:`repscope.neighbors.distributed.knn_distributed` holds and does.

A :class:`ShardWorker` reads its own contiguous row range of the input once (an array slice
handed to it, or the rows of an ActivationStore layer that it opens itself: no activation
row passes through the driver), then answers the driver's calls:

* :meth:`~ShardWorker.stats`: per-block sums for the centre and radius, and row hashes for the
  duplicates policy;
* :meth:`~ShardWorker.rows` / :meth:`~ShardWorker.same_rows`: rows by position, and bitwise
  comparisons with given rows (verifying hash groups);
* :meth:`~ShardWorker.queries`: a block of its kept rows, sent to every worker as queries;
* :meth:`~ShardWorker.search`: its exact ``k`` nearest kept rows for a query block
  (:func:`repscope.neighbors.shard.search_shard`), or its approximate ones from a faiss index
  over its rows (IVF or HNSW), re-ranked exactly.

Every call carries the *setup* (which of its rows are kept, their global positions, the
centre) so a worker restarted by Ray rebuilds its state from the call itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope.neighbors.duplicates import _row_hashes
from repscope.neighbors.prepare import _block_moments, _reference_rows
from repscope.neighbors.shard import (
    SENTINEL,
    Shard,
    make_shard,
    merge_tables,
    search_shard,
    sqdist,
)


@dataclass(frozen=True)
class RowsSpec:
    """Where a worker's rows come from: rows ``[lo, hi)`` of an array it was handed, or of
    ``layer`` of the store at ``path`` (opened with ``opener(path)``)."""

    lo: int
    hi: int
    array: np.ndarray | None = None
    opener: Any = None
    path: str | None = None
    layer: str | None = None

    def read(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        store = self.opener(self.path)
        return np.ascontiguousarray(store.read(self.layer, slice(self.lo, self.hi)))


@dataclass(frozen=True)
class Setup:
    """The search state the driver sends with every call."""

    token: int
    "Changes whenever the kept rows change (a second pass after merging near duplicates)."
    kept: np.ndarray
    "(m,) int64 sorted local positions of the worker's kept rows."
    offset: int
    "Global position (among all kept rows) of the worker's first kept row."
    center: np.ndarray
    "(d,) float64 global centre."
    metric: str
    dtype: str
    "Search dtype name ('float32' or 'float64')."
    index: str = "exact"
    "'exact', 'ivf' or 'hnsw'."
    index_params: tuple[tuple[str, Any], ...] = ()
    "faiss parameters (nlist, nprobe, M, ef_search, seed)."


class ShardWorker:
    """One worker's rows and search state (a Ray actor, or a plain object in process)."""

    def __init__(self, rows: RowsSpec, metric: str, budget: int, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.spec = rows
        self.X = rows.read()  # (m0, d) input rows [lo, hi)
        self.ref = _reference_rows(torch.from_numpy(self.X), metric).numpy()  # (m0, d)
        self.metric = metric
        self.budget = budget
        self._token: int | None = None
        self._shard: Shard | None = None
        self._index: Any = None

    def ready(self) -> int:
        """Rows held (the driver waits on this once: worker start-up is timed apart)."""
        return int(self.X.shape[0])

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block sums (nb, d), block sums of squares (nb,), row hashes (m0,))."""
        sums, sqs = _block_moments(self.ref)
        return sums, sqs, _row_hashes(self.X)

    def rows(self, local: np.ndarray) -> np.ndarray:
        """Input rows at local positions ``local``."""
        return self.X[np.asarray(local, dtype=np.int64)]

    def same_rows(self, local: np.ndarray, others: np.ndarray) -> np.ndarray:
        """(len(local),) bool: whether row ``local[i]`` is bitwise equal to ``others[i]``."""
        mine = np.ascontiguousarray(self.X[np.asarray(local, dtype=np.int64)])
        others = np.ascontiguousarray(others, dtype=mine.dtype)
        n = mine.shape[0]
        return (mine.view(np.uint8).reshape(n, -1) == others.view(np.uint8).reshape(n, -1)).all(1)

    def queries(self, setup: Setup, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Input rows of kept rows ``a..b`` (positions in this worker's kept list) and their
        global positions."""
        return self.X[setup.kept[a:b]], np.arange(setup.offset + a, setup.offset + b)

    def queries_at(self, setup: Setup, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`queries`, for the kept-list positions ``pos``."""
        pos = np.asarray(pos, dtype=np.int64)
        return self.X[setup.kept[pos]], setup.offset + pos

    def search(self, setup: Setup, query: tuple[np.ndarray, np.ndarray], k: int,
               exact: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """This worker's ``k`` nearest kept rows of each query row, by (squared distance,
        index): exact, or from the approximate index of ``setup`` when ``exact`` is False."""
        shard = self._prepare(setup)
        rows, qids = query
        Q = _reference_rows(torch.from_numpy(np.ascontiguousarray(rows)), setup.metric).numpy()
        if exact or setup.index == "exact":
            return search_shard(shard, Q, qids, k, setup.metric, self.budget)
        return self._approximate(shard, setup, Q, qids, k)

    @staticmethod
    def merge(a: Any, b: Any, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """The ``k`` best of two workers' tables (:func:`~repscope.neighbors.shard.merge_tables`),
        their certificate counts added: one node of the merge tree."""
        ids, d2 = merge_tables((a[0], a[1]), (b[0], b[1]), k)
        counts = {key: a[2].get(key, 0) + b[2].get(key, 0) for key in set(a[2]) | set(b[2])}
        return ids, d2, counts

    # -- state -------------------------------------------------------------------------

    def _prepare(self, setup: Setup) -> Shard:
        if self._token != setup.token or self._shard is None:
            dtype = torch.float64 if setup.dtype == "float64" else torch.float32
            ids = setup.offset + np.arange(setup.kept.size)
            self._shard = make_shard(self.ref[setup.kept], ids, setup.center, dtype)
            self._index = None
            self._token = setup.token
        return self._shard

    def _approximate(self, shard: Shard, setup: Setup, Q: np.ndarray, qids: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Candidates from a faiss index over the centred rows, re-ranked by exact squared
        distances (the query itself and missing slots dropped)."""
        b, m = Q.shape[0], shard.m
        out_idx = np.full((b, k), SENTINEL, dtype=np.int64)
        out_d2 = np.full((b, k), np.inf)
        if m == 0 or b == 0:
            return out_idx, out_d2, {}
        if self._index is None:
            self._index = _build_index(shard, setup)
        c = min(m, k + 5)
        Qs = np.ascontiguousarray(Q - shard.center, dtype=np.float32)  # (b, d)
        _, cand = self._index.search(Qs, c)  # (b, c) local positions, -1 when missing
        local_self = np.searchsorted(shard.ids, qids)
        is_self = (local_self < m) & (shard.ids[np.minimum(local_self, m - 1)] == qids)
        bad = (cand < 0) | (is_self[:, None] & (cand == local_self[:, None]))
        C = np.sort(np.where(bad, m, cand), axis=1)  # by index; missing and self (m) last
        valid = C < m
        valid[:, 1:] &= C[:, 1:] != C[:, :-1]  # a repeated candidate counts once
        d2 = sqdist(Q, shard.ref, np.where(valid, C, 0))  # (b, c)
        d2[~valid] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        d2 = np.take_along_axis(d2, order, 1)
        ids = shard.ids[np.minimum(np.take_along_axis(C, order, 1), m - 1)]
        ids[~np.take_along_axis(valid, order, 1)] = SENTINEL
        w = ids.shape[1]
        out_idx[:, :w], out_d2[:, :w] = ids, d2
        return out_idx, out_d2, {}


INDEX_DEFAULTS = {"ivf": {"nlist": None, "nprobe": 16, "seed": 0},
                  "hnsw": {"M": 32, "ef_search": 128, "ef_construction": 80}}
"The faiss parameters of each approximate index (``nlist=None``: 4 sqrt(rows), at most 65536)."


def _build_index(shard: Shard, setup: Setup) -> Any:
    try:
        import faiss
    except ImportError as err:
        raise ImportError("knn_distributed(index='ivf'/'hnsw') needs faiss: pip install faiss-cpu") \
            from err
    params = {**INDEX_DEFAULTS[setup.index], **dict(setup.index_params)}
    A = np.ascontiguousarray(shard.search.numpy(), dtype=np.float32)  # (m, d) centred rows
    m, d = A.shape
    if setup.index == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(params["M"]))
        index.hnsw.efConstruction = int(params["ef_construction"])
        index.add(A)
        index.hnsw.efSearch = int(params["ef_search"])
        return index
    nlist = params["nlist"] or int(min(65536, max(1, 4 * np.sqrt(m))))
    nlist = max(1, min(int(nlist), m // 39 if m >= 39 else 1))  # faiss wants ~39 rows per list
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist)
    index.cp.seed = int(params["seed"])
    train = A
    if m > 256 * nlist:  # faiss samples 256 rows per list anyway: a seeded subsample
        rng = np.random.default_rng(int(params["seed"]))
        train = A[np.sort(rng.choice(m, 256 * nlist, replace=False))]
    index.train(train)
    index.add(A)
    index.nprobe = min(nlist, int(params["nprobe"]))
    return index
