"""What an exact neighbour search will cost: time, memory and bytes moved, on one machine or
on ``W`` workers (:func:`repscope.neighbors.knn_distributed`), before running it.

The model follows the plan step by step and prices each step with a per-operation cost
measured on this machine (:func:`calibrate`, a second or two of micro-benchmarks: the float32
ranking product, the candidate selection, the exact re-ranking, the centring of query rows, a
read and a serialised copy of rows):

* every worker ranks all ``n`` query rows against its ``m ~ n / W`` rows: ``n m d``
  multiply-adds (``matmul_s`` each) and ``n m`` selections (``select_s``), then re-ranks
  ``k + 4`` candidates per query and shard (``n (k + 4) d`` coordinates, ``rerank_s``) and
  centres every query block (``n d`` values, ``prep_s``);
* the query rows go to the ``W - 1`` workers that do not own them, each query's partial
  tables climb a merge tree of ``W - 1`` merges, the merged table goes to the driver
  (``transfer_s`` per byte, counted on the busiest worker's inbound link);
* every remote call costs ``call_s`` of latency (``2 + log2 W`` calls per worker per query
  block); Ray's workers start once (``start_s``); each worker reads its rows once
  (``read_s`` per byte).

Memory per worker: its rows (and the centred copy), one ranking block (``memory_budget``), the
query blocks in flight. The bytes moved are exact for the plan (the same tally
:func:`~repscope.neighbors.distributed.run_knn_distributed` reports); times assume ordinary data
(no certificate fallbacks: ``Neighbors.float64_fraction`` near zero) and one shard per worker.
:func:`estimate_knn_cost` is the preflight estimate other code prints before long work.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repscope._validate import check_choice, check_int
from repscope.neighbors import prepare
from repscope.neighbors.blocks import _EXTRA_CANDIDATES, DEFAULT_MEMORY_BUDGET, _smallest

_WINDOW = 3  # query blocks in flight (as in distributed.py)


@dataclass(frozen=True)
class CostProfile:
    """Seconds per elementary operation of one worker with ``threads`` threads."""

    matmul_s: float
    "Per multiply-add of the float32 ranking product (``addmm``)."
    select_s: float
    "Per ranking-matrix entry: masking and the two-stage selection of candidates."
    rerank_s: float
    "Per candidate coordinate of the exact re-ranking (difference, square, float64 sum)."
    prep_s: float
    "Per value of a query block: centring, squared norms."
    read_s: float
    "Per byte of rows read (a local read here; set it for object storage)."
    transfer_s: float
    "Per byte sent between processes (serialised copy here; set it for a network)."
    call_s: float = 2e-3
    "Latency of one remote call (a Ray actor call on one machine is about a millisecond)."
    start_s: float = 10.0
    "Seconds to start the workers (Ray actors import torch; 0 in process)."
    threads: int = 1
    "Threads of the worker the costs were measured with."
    machine: str = ""
    "Where it was measured (``platform.node()``, processor, cores)."
    date: str = ""
    "When it was measured (UTC, ISO 8601)."

    def save(self, path: str | Path) -> None:
        from repscope._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> CostProfile:
        return cls(**json.loads(Path(path).read_text()))

    def scaled(self, threads: int, efficiency: float = 0.8, **changes: Any) -> CostProfile:
        """The profile of a worker with ``threads`` threads, assuming the compute costs fall as
        ``1 / (1 + efficiency (threads - 1))`` (a projection, not a measurement); ``changes``
        replace other fields (``transfer_s``, ``read_s``, ``call_s``, ``start_s``)."""
        f = (1 + efficiency * (self.threads - 1)) / (1 + efficiency * (threads - 1))
        return replace(self, matmul_s=self.matmul_s * f, select_s=self.select_s * f,
                       rerank_s=self.rerank_s * f, prep_s=self.prep_s * f, threads=threads,
                       **changes)


@dataclass(frozen=True)
class KnnCost:
    """The predicted cost of one exact neighbour search plan."""

    n: int
    d: int
    k: int
    workers: int
    seconds: float
    "Predicted wall time."
    parts: dict[str, float]
    "Seconds by step: 'start', 'read', 'stats', 'rank', 'select', 'rerank', 'prep', "
    "'transfer', 'calls'."
    memory_per_worker: int
    "Peak bytes on the busiest worker."
    memory_driver: int
    "Bytes the driver holds (the table, hashes and group arrays)."
    bytes_moved: int
    "Bytes sent between processes (zero on one machine)."
    bytes_read: int
    "Bytes of rows read from the input."
    query_blocks: int
    "Query blocks streamed."

    def summary(self) -> str:
        """One line for a preflight message."""
        return (f"kNN of {self.n:,} x {self.d} rows (k={self.k}) on {self.workers} worker(s): "
                f"~{_duration(self.seconds)}, {_size(self.memory_per_worker)} per worker, "
                f"{_size(self.bytes_moved)} moved")


def estimate_knn_cost(n: int, d: int, k: int, workers: int = 1, *,
                      profile: CostProfile | None = None, metric: str = "euclidean",
                      itemsize: int = 4, query_rows: int = 4096,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET, remote: bool | None = None,
                      kept_fraction: float = 1.0) -> KnnCost:
    """Predict time, memory and bytes moved of an exact kNN of ``n`` rows of ``d`` features on
    ``workers`` workers (1: :func:`repscope.neighbors.knn` in this process).

    ``profile``: per-operation costs (default: :func:`default_profile`, measured once per
    process); ``itemsize``: bytes per stored value as the workers hold it (4 for float32 and
    for a store, which reads float32); ``remote``: whether workers are separate processes
    (default: ``workers > 1``; adds start-up, transfers and call latency);
    ``kept_fraction``: rows left after the duplicates policy.
    """
    fn = "estimate_knn_cost"
    n = check_int(n, "n", fn, low=2)
    d = check_int(d, "d", fn, low=1)
    k = check_int(k, "k", fn, low=1, high=n, high_name="n")
    workers = check_int(workers, "workers", fn, low=1)
    check_choice(metric, "metric", fn, ("euclidean", "cosine"))
    profile = profile or default_profile()
    remote = workers > 1 if remote is None else remote
    shards = [hi - lo for lo, hi in shard_ranges(n, workers)]
    W = len(shards)
    m_max = max(shards)
    q = max(1, int(round(n * kept_fraction)))  # query rows (kept)
    c = min(m_max - 1, k + _EXTRA_CANDIDATES)
    blocks = sum(-(-max(1, int(round(s * kept_fraction))) // query_rows) for s in shards)
    ref_itemsize = 8 if metric == "cosine" else itemsize
    parts = {
        "start": profile.start_s if remote else 0.0,
        "read": m_max * d * itemsize * profile.read_s,
        "stats": 2.0 * m_max * d * profile.prep_s,  # moments and hashes of its rows
        "rank": q * m_max * d * profile.matmul_s,
        "select": q * m_max * profile.select_s,
        "rerank": q * c * d * profile.rerank_s * (ref_itemsize / 4),
        "prep": q * d * profile.prep_s,
    }
    table = 16 * k  # bytes per query row of a table: int64 ids + float64 squared distances
    row = d * itemsize + 8
    moved = 0
    if remote:
        nb = -(-n // _moment_block())
        moved = nb * d * 8 + nb * 8 + n * 8  # block sums and hashes to the driver
        moved += W * (d * 8)  # the centre in each setup
        moved += q * 8  # the kept positions in the setups
        moved += (W - 1) * q * row + W * q * table  # queries out, partial and merged tables
        inbound = (q - min(shards)) * row + math.ceil(math.log2(W)) * q * table if W > 1 else 0
        parts["transfer"] = inbound * profile.transfer_s
        parts["calls"] = blocks * (2 + math.ceil(math.log2(max(W, 1)))) * profile.call_s
    else:
        parts["transfer"] = parts["calls"] = 0.0
    block_rows = max(1, min(query_rows, memory_budget // (2 * m_max * 4)))
    memory = (m_max * d * (itemsize + 4)  # its rows and their centred float32 copy
              + (m_max * d * 8 if metric == "cosine" else 0)  # float64 unit rows
              + 2 * block_rows * m_max * 4  # the ranking block and the selection workspace
              + _WINDOW * query_rows * d * (itemsize + 4 + ref_itemsize))  # query blocks
    driver = q * table + n * 8 * 4  # the table; hashes, inverse, kept, multiplicities
    return KnnCost(n, d, k, W, sum(parts.values()), parts, int(memory), int(driver), int(moved),
                   int(n * d * itemsize), blocks)


def _moment_block() -> int:
    from repscope.neighbors import prepare

    return prepare.MOMENT_BLOCK


PROFILE_ENV = "REPSCOPE_COST_PROFILE"
"Environment variable naming a saved :class:`CostProfile` (JSON) that replaces calibration."


@functools.lru_cache(maxsize=4)
def default_profile(threads: int | None = None) -> CostProfile:
    """The profile saved at ``$REPSCOPE_COST_PROFILE`` if set, else :func:`calibrate` once per
    process (and thread count)."""
    import os

    saved = os.environ.get(PROFILE_ENV)
    if saved:
        return CostProfile.load(saved)
    return calibrate(threads=threads)


def calibrate(*, threads: int | None = None, d: int = 384, repeats: int = 3) -> CostProfile:
    """Measure the per-operation costs on this machine with ``threads`` torch threads (default:
    the current setting): the best of ``repeats`` runs of each micro-benchmark (a few seconds
    on one core). The product is timed on a ``(1024, d) x (d, 8192)`` block: smaller blocks run
    at a lower rate per multiply-add, larger ones slightly higher."""
    old = torch.get_num_threads()
    threads = threads or old
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        b, m, k = 1024, 8192, 10  # a ranking block of the size the search uses
        S = torch.from_numpy(rng.standard_normal((m, d)).astype(np.float32))  # (m, d)
        Q = S[:b].clone()
        sq = (S * S).sum(1)
        buf = torch.empty((b, m))

        def rank() -> None:
            torch.addmm(sq[None, :], Q, S.T, alpha=-2.0, out=buf)

        matmul_s = _best(rank, repeats) / (b * m * d)
        rank()

        def select() -> None:
            buf[torch.arange(b), torch.arange(b)] = float("inf")
            _smallest(buf, k + _EXTRA_CANDIDATES)

        select_s = _best(select, repeats) / (b * m)
        A = S.numpy()
        C = rng.integers(0, m, (b, k + _EXTRA_CANDIDATES))
        from repscope.neighbors.shard import sqdist

        rerank_s = _best(lambda: sqdist(A[:b], A, C), repeats) / C.size / d
        mu = A.mean(0, dtype=np.float64)
        big = np.concatenate([A] * 4)  # (4m, d): 8 MB of float32 rows

        def prep() -> None:
            Z = (big - mu.astype(np.float32))
            np.einsum("ij,ij->i", Z, Z, dtype=np.float64)

        prep_s = _best(prep, repeats) / big.size
        read_s = _best(lambda: np.array(big, copy=True), repeats) / big.nbytes
        import pickle

        transfer_s = _best(lambda: pickle.loads(pickle.dumps(big, protocol=5)), repeats) / big.nbytes
    finally:
        torch.set_num_threads(old)
    machine = f"{platform.node()} ({platform.processor() or platform.machine()}, " \
              f"{torch.get_num_threads()} threads available)"
    date = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return CostProfile(matmul_s, select_s, rerank_s, prep_s, read_s, transfer_s,
                       threads=threads, machine=machine, date=date)


class _Probe:
    """A Ray actor that imports torch on start, like a shard worker."""

    def __init__(self) -> None:
        import torch  # noqa: F401

    def echo(self, x: Any) -> int:
        return 0 if x is None else int(np.asarray(x).nbytes)


def calibrate_ray(profile: CostProfile, workers: int = 2, calls: int = 50) -> CostProfile:
    """``profile`` with the Ray costs measured on the running Ray: ``start_s`` (starting
    ``workers`` actors that import torch, as the shard workers do), ``call_s`` (mean round trip
    of an empty actor call) and ``transfer_s`` (an 8 MB array put by the driver and fetched
    by an actor)."""
    import ray

    t = time.perf_counter()
    probe = ray.remote(num_cpus=0)(_Probe)
    actors = [probe.remote() for _ in range(workers)]
    ray.get([a.echo.remote(None) for a in actors])
    start_s = time.perf_counter() - t
    ray.get(actors[0].echo.remote(None))
    t = time.perf_counter()
    for _ in range(calls):
        ray.get(actors[0].echo.remote(None))
    call_s = (time.perf_counter() - t) / calls
    big = np.zeros(2**21, dtype=np.float32)  # 8 MB
    ray.get(actors[-1].echo.remote(big))
    t = time.perf_counter()
    for _ in range(3):
        ray.get(actors[-1].echo.remote(ray.put(big)))
    transfer_s = max((time.perf_counter() - t) / 3 - call_s, 0.0) / big.nbytes
    for a in actors:
        ray.kill(a)
    return replace(profile, start_s=start_s, call_s=call_s, transfer_s=transfer_s)


def _best(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1024 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"


def shard_ranges(n: int, workers: int) -> list[tuple[int, int]]:
    """Row ranges of the shards: whole blocks of ``MOMENT_BLOCK`` rows split as evenly as
    possible over ``workers`` (fewer shards when there are fewer blocks)."""
    block = prepare.MOMENT_BLOCK  # read at call time (tests shrink it)
    n_blocks = -(-n // block)
    per = -(-n_blocks // workers)  # blocks per shard
    return [(lo, min(n, lo + per * block)) for lo in range(0, n, per * block)]
