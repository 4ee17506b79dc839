"""Exact k-nearest neighbours over rows sharded across workers: :func:`knn_distributed`.

The reference rows are cut into one contiguous row range per worker (Ray actors placed by a
SPREAD placement group, or plain objects in this process with ``executor="local"``); each
worker reads its own range (an array slice, or the rows of an ActivationStore layer that it
opens itself) and keeps it for the whole search. The driver then streams query blocks: the
worker that owns a block's rows hands them out, every worker returns its certified ``k``
nearest rows of every query (:mod:`repscope.neighbors.shard`), and a tree of merges on the
workers keeps the ``k`` best by (squared distance, index). Only the merged table of each
block reaches the driver.

**Same table as** :func:`repscope.neighbors.knn`, bit for bit:

* the squared distances are computed by the same direct-difference arithmetic, a function of
  the two rows alone, and the certificate guarantees each shard's ``k`` best under
  (squared distance, index); the global ``k`` best are the ``k`` best of their union;
* the centre and the RMS radius (whose ``tol`` multiple is the near-duplicate threshold) are
  sums of per-block partial sums (:data:`repscope.neighbors.prepare.MOMENT_BLOCK` rows, shard
  boundaries on block boundaries), added in block order as on one machine;
* exact duplicates come from the same row hashes, verified bitwise by the workers (a hash
  collision refines its group by the rows' bytes, as the single-machine fallback does);
  the kept rows, the near-duplicate merge on the neighbour table and the second search run
  exactly as in :func:`~repscope.neighbors.knn`, so the policy composes with sharding.

With ``index="ivf"`` or ``"hnsw"`` each worker searches a faiss index over its rows instead
(re-ranked exactly, still merged by the tree): the table is approximate (``exact=False``,
``strategy="sharded-ivf"`` / ``"sharded-hnsw"``) and ``Neighbors.recall`` holds its recall@k
measured against the exact search on a seeded sample of rows. Every estimator that takes
``neighbors=`` reports ``neighbor_exact`` and ``neighbor_recall``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from repscope._validate import as_numpy, check_array, check_choice, check_float, check_int
from repscope.neighbors.blocks import DEFAULT_MEMORY_BUDGET
from repscope.neighbors.cost import shard_ranges
from repscope.neighbors.duplicates import (
    POLICIES,
    DuplicateReport,
    _byte_labels,
    _count_joined,
    _groups_of_labels,
    _hash_groups,
    _in_input_order,
    _merge_near,
    _raise_duplicates,
)
from repscope.neighbors.prepare import _combine_moments
from repscope.neighbors.search import METRICS, Neighbors
from repscope.neighbors.shard import SENTINEL
from repscope.neighbors.worker import INDEX_DEFAULTS, RowsSpec, Setup, ShardWorker

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
INDEXES = ("exact", "ivf", "hnsw")
_WINDOW = 3  # query blocks in flight
_VERIFY_CHUNK = 65536  # duplicate rows compared per call


@dataclass(frozen=True)
class DistributedRun:
    """A :func:`run_knn_distributed` result: the table and what the run cost."""

    neighbors: Neighbors
    "The neighbour table (as :func:`knn_distributed` returns it)."
    workers: int
    "Workers (shards) that held rows."
    seconds: dict[str, float] = field(default_factory=dict)
    "Wall time per phase: 'start', 'stats', 'search' (all passes), 'recall', 'total'."
    bytes_moved: int = 0
    "Bytes sent between processes: query rows to the workers that do not own them, partial "
    "tables through the merge tree, merged tables and statistics to the driver."
    bytes_read: int = 0
    "Bytes of input rows the workers read (each row once)."
    query_blocks: int = 0
    "Query blocks streamed (over all passes)."
    passes: int = 1
    "Search passes: 2 when near duplicates were merged and the kept rows searched again."


def knn_distributed(data: Any, k: int, **options: Any) -> Neighbors:
    """The ``k`` nearest neighbours of every row, searched by ``workers`` workers that each
    hold a contiguous range of the rows; the same table as :func:`repscope.neighbors.knn`.

    ``data``: an ``(n, d)`` array or tensor, or an ActivationStore with ``layer=`` (each worker
    opens the store and reads its own rows). Options (see :func:`run_knn_distributed`):
    ``metric``, ``duplicates``, ``tol`` as for :func:`~repscope.neighbors.knn`; ``workers``,
    ``executor`` (``"ray"`` or ``"local"``), ``address``; ``index`` (``"exact"``, or the
    approximate ``"ivf"`` / ``"hnsw"``) and ``index_params``; ``query_rows``,
    ``memory_budget``, ``dtype``, ``threads_per_worker``, ``recall_sample``, ``seed``.
    """
    return run_knn_distributed(data, k, **options).neighbors


def run_knn_distributed(
    data: Any,
    k: int,
    *,
    layer: str | None = None,
    metric: str = "euclidean",
    duplicates: str = "drop",
    tol: float = 1e-6,
    workers: int = 2,
    executor: str = "ray",
    address: str | None = None,
    index: str = "exact",
    index_params: dict[str, Any] | None = None,
    recall_sample: int = 1000,
    query_rows: int = 4096,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    dtype: torch.dtype = torch.float32,
    threads_per_worker: int = 1,
    seed: int = 0,
    bind: str = "loopback",
    connect_timeout: float = 60.0,
) -> DistributedRun:
    """:func:`knn_distributed` with the run's costs (:class:`DistributedRun`).

    ``executor="ray"`` places one Ray actor per worker (``threads_per_worker`` CPUs each) on a
    running Ray (``address``, or the Ray this process already runs) or on a local Ray started
    for the call (listening on loopback unless ``bind="network"``); ``"local"`` runs the same
    workers one after the other in this process. ``query_rows``: rows per streamed query block;
    ``memory_budget``: bytes of one ranking block on a worker; ``recall_sample``: rows whose
    exact neighbours measure the recall of an approximate index.
    """
    fn = "knn_distributed"
    check_choice(metric, "metric", fn, METRICS)
    check_choice(duplicates, "duplicates", fn, POLICIES)
    check_choice(executor, "executor", fn, EXECUTORS)
    check_choice(index, "index", fn, INDEXES)
    tol = check_float(tol, "tol", fn, low=0.0)
    workers = check_int(workers, "workers", fn, low=1)
    query_rows = check_int(query_rows, "query_rows", fn, low=1)
    memory_budget = check_int(memory_budget, "memory_budget", fn, low=2**16)
    threads_per_worker = check_int(threads_per_worker, "threads_per_worker", fn, low=1)
    recall_sample = check_int(recall_sample, "recall_sample", fn, low=1)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"The 'dtype' parameter of {fn} must be torch.float32 or torch.float64. "
                         f"Got {dtype!r} instead.")
    params = dict(index_params or {})
    if index != "exact":
        unknown = sorted(set(params) - set(INDEX_DEFAULTS[index]))
        if unknown:
            raise ValueError(f"The 'index_params' parameter of {fn} takes "
                             f"{sorted(INDEX_DEFAULTS[index])} for index={index!r}. Got {unknown} instead.")
    n, d, specs = _sources(data, layer, workers, fn)
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    if index == "exact" and log.isEnabledFor(logging.INFO):  # the preflight estimate
        from repscope.neighbors.cost import default_profile, estimate_knn_cost

        plan = estimate_knn_cost(n, d, k, len(specs), profile=default_profile(threads_per_worker),
                                 metric=metric, query_rows=query_rows, memory_budget=memory_budget,
                                 remote=executor == "ray")
        log.info("%s: %s", fn, plan.summary())
    t0 = time.perf_counter()
    pool = _RayPool(specs, metric, memory_budget, threads_per_worker, address, bind,
                    connect_timeout) if executor == "ray" else _LocalPool(specs, metric, memory_budget)
    try:
        run = _Driver(pool, specs, n, d, k, metric, duplicates, tol, dtype, index,
                      tuple(sorted(params.items())), query_rows, recall_sample, seed, fn)
        pool.get([pool.call(w, "ready") for w in range(len(specs))])
        run.seconds["start"] = time.perf_counter() - t0
        nb = run.run()
    finally:
        pool.close()
    run.seconds["total"] = time.perf_counter() - t0
    return DistributedRun(nb, len(specs), run.seconds, run.bytes_moved, run.bytes_read,
                          run.blocks, run.passes)


def _sources(data: Any, layer: str | None, workers: int, fn: str):
    """(n, d, one RowsSpec per shard) for an array or an ActivationStore layer."""
    if hasattr(data, "layers") and hasattr(data, "read") and hasattr(data, "path"):
        if layer is None or layer not in list(data.layers):
            raise ValueError(f"The 'layer' parameter of {fn} must name a layer of the store "
                             f"({list(data.layers)}). Got {layer!r} instead.")
        n, d = int(data.n_rows), int(data.dim(layer))
        if n < 2:
            raise ValueError(f"{fn} needs at least 2 samples (rows); the store has {n}.")
        opener, path = type(data).open, str(data.path)
        specs = [RowsSpec(lo, hi, opener=opener, path=path, layer=layer)
                 for lo, hi in shard_ranges(n, workers)]
        return n, d, specs
    if layer is not None:
        raise ValueError(f"The 'layer' parameter of {fn} is for an ActivationStore; got an "
                         f"array and layer={layer!r}.")
    X = as_numpy(check_array(data, fn, min_samples=2))
    n, d = X.shape
    return n, d, [RowsSpec(lo, hi, array=X[lo:hi]) for lo, hi in shard_ranges(n, workers)]


# --------------------------------------------------------------------------- the driver


class _Driver:
    """One call's state: the pool of workers, the plan, and the costs tallied so far."""

    def __init__(self, pool, specs, n, d, k, metric, duplicates, tol, dtype, index, params,
                 query_rows, recall_sample, seed, fn):  # type: ignore[no-untyped-def]
        self.pool, self.specs, self.n, self.d, self.k = pool, specs, n, d, k
        self.metric, self.duplicates, self.tol, self.fn = metric, duplicates, tol, fn
        self.dtype = "float64" if dtype == torch.float64 else "float32"
        self.index, self.params, self.query_rows = index, params, query_rows
        self.recall_sample, self.seed = recall_sample, seed
        self.W = len(specs)
        self.bounds = np.array([s.lo for s in specs] + [specs[-1].hi])  # (W + 1,)
        self.seconds: dict[str, float] = {}
        self.bytes_moved = self.bytes_read = self.blocks = 0
        self.passes = 0
        self.itemsize = 4  # input rows as the workers hold them (float32; float64 arrays: 8)
        self.counts = {"float64": 0, "direct": 0, "searched": 0}

    def _timed(self, phase: str, start: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def run(self) -> Neighbors:
        n, k = self.n, self.k
        t = time.perf_counter()
        stats = self.pool.get([self.pool.call(w, "stats") for w in range(self.W)])
        sums = np.concatenate([s[0] for s in stats])
        sqs = np.concatenate([s[1] for s in stats])
        hashes = np.concatenate([s[2] for s in stats])
        self.itemsize = self._row_itemsize()
        self.bytes_read = n * self.d * self.itemsize
        self.bytes_moved += sums.nbytes + sqs.nbytes + hashes.nbytes
        center, rms = _combine_moments(sums, sqs, n)
        threshold = self.tol * rms
        kept, inverse, mult = self._exact_groups(hashes)
        self._timed("stats", t)
        # the duplicates policy exactly as in neighbors.search.knn (same counts, same messages)
        n_exact = n - kept.shape[0]  # rows bitwise equal to an earlier row
        if self.duplicates == "raise" and n_exact and k >= kept.shape[0]:
            self._raise(n_exact / n, n_exact, threshold)
        exact_inverse = inverse
        if self.duplicates == "keep":
            kept, inverse, mult = np.arange(n), np.arange(n), np.ones(n, dtype=np.int64)
        exact = self.index == "exact"
        idx, dist, setups = self._search(kept, center, exact)
        n_groups = n - n_exact
        if threshold > 0:  # near duplicates: the same single linkage under every policy
            merged = _merge_near(idx, dist, threshold, kept, inverse, mult)
            if merged is not None and self.duplicates == "keep":
                n_groups = _count_joined(merged[1], exact_inverse)
            elif merged is not None:
                kept, inverse, mult = merged
                n_groups = kept.shape[0]
                if self.duplicates != "raise":
                    idx, dist, setups = self._search(kept, center, exact)
        fraction = 1.0 - n_groups / n
        if self.duplicates == "raise" and fraction > 0:
            self._raise(fraction, n_exact, threshold)
        report = DuplicateReport(self.duplicates, self.tol, threshold, n, fraction,
                                 kept.astype(np.int64), mult.astype(np.int64),
                                 inverse.astype(np.int64), n_exact)
        searched = max(1, self.counts["searched"])
        f64, direct = self.counts["float64"] / searched, self.counts["direct"] / searched
        if exact:
            return Neighbors(idx, dist, self.metric, k, True, "exact", report, self.d, "sharded",
                             0, 0.0, f64, direct, workers=self.W)
        recall = self._recall(idx, setups)
        return Neighbors(idx, dist, self.metric, k, False, "faiss", report, self.d,
                         f"sharded-{self.index}", 0, 0.0, 0.0, 0.0, workers=self.W, recall=recall)

    def _raise(self, fraction: float, n_exact: int, threshold: float) -> None:
        try:
            _raise_duplicates(fraction, self.n, n_exact, self.tol, threshold)
        except ValueError as err:
            raise ValueError(str(err).replace("knn found", f"{self.fn} found")) from None

    def _row_itemsize(self) -> int:
        """Bytes per value of the input rows as workers hold them (a store reads float32)."""
        spec = self.specs[0]
        return 4 if spec.array is None else int(spec.array.dtype.itemsize)

    # -- duplicates ------------------------------------------------------------------

    def _owner(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.bounds, rows, side="right") - 1

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Input rows at global positions ``rows`` (any order), from the workers that own them."""
        owner = self._owner(rows)
        handles = []
        for w in np.unique(owner):
            sel = np.flatnonzero(owner == w)
            handles.append((sel, self.pool.call(int(w), "rows", rows[sel] - self.bounds[w])))
        parts = [(sel, self.pool.get(h)) for sel, h in handles]
        out = np.empty((rows.size, self.d), dtype=parts[0][1].dtype if parts else np.float32)
        for sel, got in parts:
            out[sel] = got
        self.bytes_moved += out.nbytes
        return out

    def _exact_groups(self, hashes: np.ndarray):  # type: ignore[no-untyped-def]
        """The single-machine grouping of bitwise-equal rows: by hash, verified bitwise by the
        workers; hash groups with a mismatch are refined by their rows' bytes."""
        first, inverse, counts, dup = _hash_groups(hashes)
        bad = []
        for lo in range(0, dup.size, _VERIFY_CHUNK):
            rows = dup[lo:lo + _VERIFY_CHUNK]
            reps = self._gather(first[inverse[rows]])  # (c, d) each row's group representative
            owner = self._owner(rows)
            calls = []
            for w in np.unique(owner):
                sel = np.flatnonzero(owner == w)
                calls.append((sel, self.pool.call(int(w), "same_rows", rows[sel] - self.bounds[w],
                                                  reps[sel])))
                self.bytes_moved += reps[sel].nbytes
            for sel, h in calls:
                bad.append(rows[sel][~self.pool.get(h)])
        bad = np.concatenate(bad) if bad else dup[:0]
        if not bad.size:
            return _in_input_order(first, inverse, counts)
        log.info("%s: %d row hash collision(s); grouping those rows by their bytes", self.fn,
                 bad.size)
        members = np.flatnonzero(np.isin(inverse, np.unique(inverse[bad])))
        labels = inverse.astype(np.int64)
        labels[members] = inverse.max() + 1 + _byte_labels(self._gather(members))
        return _groups_of_labels(labels)

    # -- search ------------------------------------------------------------------------

    def _setups(self, kept: np.ndarray, center: np.ndarray) -> list[Any]:
        self.passes += 1
        cuts = np.searchsorted(kept, self.bounds)  # (W + 1,) kept positions of the shards
        setups = []
        for w in range(self.W):
            local = kept[cuts[w]:cuts[w + 1]] - self.bounds[w]
            s = Setup(self.passes, local.astype(np.int64), int(cuts[w]), center, self.metric,
                      self.dtype, self.index, self.params)
            self.bytes_moved += local.nbytes + center.nbytes
            setups.append(self.pool.put(s))
        self._cuts = cuts
        return setups

    def _search(self, kept: np.ndarray, center: np.ndarray, exact: bool):  # type: ignore[no-untyped-def]
        """(indices (n_kept, k) into kept, distances, setups) of one search pass."""
        t = time.perf_counter()
        m, k = kept.shape[0], self.k
        if k >= m:
            if m == 1:
                raise ValueError(f"{self.fn} got constant data: all {self.n} rows are duplicates "
                                 f"of one row.")
            raise ValueError(
                f"The 'k' parameter of {self.fn} must be an int in [1, n_unique={m}) after the "
                f"duplicates policy {self.duplicates!r} kept {m} of {self.n} rows. Got {k} instead.")
        setups = self._setups(kept, center)
        cuts = self._cuts
        ids = np.empty((m, k), dtype=np.int64)
        d2 = np.empty((m, k))
        blocks = [(w, a, min(a + self.query_rows, cuts[w + 1] - cuts[w]))
                  for w in range(self.W) for a in range(0, cuts[w + 1] - cuts[w], self.query_rows)]
        pending: deque[tuple[int, Any]] = deque()
        for w, a, b in blocks:
            query = self.pool.call(w, "queries", setups[w], a, b)
            parts = [self.pool.call(v, "search", setups[v], query, k, exact) for v in range(self.W)]
            pending.append((int(cuts[w]) + a, self._tree(parts)))
            self._tally(b - a)
            while len(pending) >= _WINDOW:
                self._collect(pending.popleft(), ids, d2)
        while pending:
            self._collect(pending.popleft(), ids, d2)
        self.blocks += len(blocks)
        self.counts["searched"] += m * self.W
        dist = 0.5 * d2 if self.metric == "cosine" else np.sqrt(d2)
        self._timed("search", t)
        return ids, dist, setups

    def _tally(self, b: int) -> None:
        """Bytes a query block moves: its rows to the W - 1 other workers, one partial table
        per merge, the merged table to the driver."""
        table = b * self.k * 16  # int64 ids + float64 squared distances
        self.bytes_moved += (self.W - 1) * b * (self.d * self.itemsize + 8)
        self.bytes_moved += (self.W - 1) * table + table

    def _tree(self, parts: list[Any]) -> Any:
        """Merge the workers' tables pairwise, each merge on the left worker: log2(W) levels."""
        level = list(enumerate(parts))
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), 2):
                if j + 1 < len(level):
                    (wa, ha), (_, hb) = level[j], level[j + 1]
                    nxt.append((wa, self.pool.call(wa, "merge", ha, hb, self.k)))
                else:
                    nxt.append(level[j])
            level = nxt
        return level[0][1]

    def _collect(self, item: tuple[int, Any], ids: np.ndarray, d2: np.ndarray) -> None:
        lo, handle = item
        got_ids, got_d2, counts = self.pool.get(handle)
        if got_ids.size and int(got_ids.max()) == SENTINEL:
            raise RuntimeError(f"{self.fn}: a query block came back with fewer than k="
                               f"{self.k} neighbours (the approximate index found too few); use "
                               f"index='exact' or a larger nprobe / ef_search.")
        ids[lo:lo + got_ids.shape[0]] = got_ids
        d2[lo:lo + got_ids.shape[0]] = got_d2
        for key in ("float64", "direct"):
            self.counts[key] += counts.get(key, 0)

    def _recall(self, approx: np.ndarray, setups: list[Any]) -> float:
        """Recall@k of the approximate table against the exact search on a seeded sample."""
        t = time.perf_counter()
        m = approx.shape[0]
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(m, min(self.recall_sample, m), replace=False))
        cuts = self._cuts
        owner = np.searchsorted(cuts, sample, side="right") - 1
        hits = 0
        for w in np.unique(owner):
            pos = sample[owner == w]
            query = self.pool.call(int(w), "queries_at", setups[w], pos - cuts[w])
            parts = [self.pool.call(v, "search", setups[v], query, self.k, True)
                     for v in range(self.W)]
            exact_ids = self.pool.get(self._tree(parts))[0]
            hits += sum(np.intersect1d(a, e).size for a, e in zip(approx[pos], exact_ids,
                                                                   strict=True))
        self._timed("recall", t)
        return hits / (sample.size * self.k)


# --------------------------------------------------------------------------- worker pools


class _LocalPool:
    """The workers as objects in this process; calls run at once, handles are the values."""

    def __init__(self, specs: list[RowsSpec], metric: str, budget: int) -> None:
        self.workers = [ShardWorker(s, metric, budget) for s in specs]

    def call(self, w: int, method: str, *args: Any) -> Any:
        return getattr(self.workers[w], method)(*args)

    def put(self, value: Any) -> Any:
        return value

    def get(self, handle: Any) -> Any:
        return handle

    def close(self) -> None:
        self.workers = []


class _RayPool:
    """One Ray actor per shard, placed by a SPREAD placement group (one bundle of
    ``threads`` CPUs each); Ray restarts a lost actor once and retries its calls."""

    def __init__(self, specs: list[RowsSpec], metric: str, budget: int, threads: int,
                 address: str | None, bind: str, connect_timeout: float) -> None:
        from repscope._ray import RayConnectionError, connect

        self.session = connect(address, bind=bind, connect_timeout=connect_timeout,
                               num_cpus=len(specs) * threads, what="knn_distributed")
        ray = self.session.ray
        self.ray = ray
        self.pg = None
        self.actors: list[Any] = []
        try:
            cpus = self.session.cpus()
            if cpus < len(specs) * threads:
                raise RayConnectionError(
                    f"knn_distributed needs {len(specs)} workers x {threads} CPU(s) on Ray; the "
                    f"cluster has {cpus} CPU(s). Use fewer workers or a larger cluster.")
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            self.pg = placement_group([{"CPU": threads}] * len(specs), strategy="SPREAD")
            ray.get(self.pg.ready(), timeout=300)
            actor = ray.remote(ShardWorker)
            # a worker that reads a store can be restarted from its arguments; one handed an
            # array slice through the object store is not restarted (Ray warns against it)
            restarts = 1 if specs[0].array is None else 0
            self.actors = [
                actor.options(num_cpus=threads, max_restarts=restarts, max_task_retries=restarts,
                              scheduling_strategy=PlacementGroupSchedulingStrategy(
                                  self.pg, placement_group_bundle_index=i)
                              ).remote(spec, metric, budget, threads)
                for i, spec in enumerate(specs)]
        except BaseException:
            self.close()
            raise

    def call(self, w: int, method: str, *args: Any) -> Any:
        return getattr(self.actors[w], method).remote(*args)

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def get(self, handle: Any) -> Any:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as exc:  # the worker's own error, unwrapped
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception as exc:
                log.debug("could not kill a shard worker: %s", exc)
        self.actors = []
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(self.pg)
            except Exception as exc:
                log.debug("could not remove the placement group: %s", exc)
            self.pg = None
        self.session.close()
