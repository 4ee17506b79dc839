"""The public entry points: :func:`knn` (the shared exact table) and :func:`count_pairs_within`.

:func:`knn` prepares the rows (:mod:`~repscope.neighbors.prepare`), applies the duplicates
policy (:mod:`~repscope.neighbors.duplicates`), and searches with the exact engine (certified
brute search, :mod:`~repscope.neighbors.brute`, optionally pruned in a low-rank subspace,
:mod:`~repscope.neighbors.lowrank`) or an approximate backend
(:mod:`~repscope.neighbors.approximate`). Every exact path ends in the same re-ranking
(:mod:`~repscope.neighbors.rerank`), so every strategy returns the same table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from repscope._validate import (
    ArrayLike,
    as_numpy,
    check_array,
    check_choice,
    check_float,
    check_int,
)
from repscope.neighbors.approximate import _faiss_candidates, _pynndescent_candidates, _refine
from repscope.neighbors.blocks import DEFAULT_MEMORY_BUDGET, _blocks
from repscope.neighbors.brute import _brute_search
from repscope.neighbors.duplicates import (
    POLICIES,
    DuplicateReport,
    _count_joined,
    _exact_groups,
    _merge_near,
    _raise_duplicates,
)
from repscope.neighbors.lowrank import _lowrank_search, _with_lowrank
from repscope.neighbors.prepare import _prepare, _Prepared

log = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
BACKENDS = ("exact", "faiss", "pynndescent")
STRATEGIES = ("auto", "brute", "lowrank")


@dataclass(frozen=True)
class Neighbors:
    """A k-nearest-neighbour table over the kept rows of X (self excluded, nearest first)."""

    indices: np.ndarray
    "(n_kept, k) int64 positions into ``duplicates.kept`` (equal to rows of X when none dropped)."
    distances: np.ndarray
    "(n_kept, k) float64 ascending; Euclidean, or cosine distance ``1 - cos`` for 'cosine'."
    metric: str
    "'euclidean' or 'cosine'."
    k: int
    "Neighbours per row."
    exact: bool
    "False for the approximate backends."
    backend: str
    "'exact', 'faiss' or 'pynndescent'."
    duplicates: DuplicateReport
    "The duplicates policy and what it found."
    n_features: int = 0
    "Columns of the X the table was computed on (checked when the table is reused)."
    strategy: str = "brute"
    "Exact search that ran: 'brute' or 'lowrank' (certified pruning); 'approximate' otherwise."
    rank: int = 0
    "Dimension ``r`` of the principal subspace the 'lowrank' search ranked in (0 for brute)."
    fallback_fraction: float = 0.0
    "Fraction of rows the 'lowrank' search handed to the brute search (failed certificate)."
    float64_fraction: float = 0.0
    "Fraction of rows whose brute-search candidates failed their certificate (float64 recheck)."
    direct_fraction: float = 0.0
    "Fraction of rows that failed the float64 certificate too (searched locally re-centred)."

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    def head(self, k: int) -> Neighbors:
        """The table restricted to the first ``k`` neighbours."""
        k = check_int(k, "k", "Neighbors.head", low=1, high=self.k, high_inclusive=True,
                      high_name="Neighbors.k")
        if k == self.k:
            return self
        return replace(self, indices=self.indices[:, :k], distances=self.distances[:, :k], k=k)

    def lengths(self) -> np.ndarray:
        """(n_kept, k) distances as lengths: Euclidean, or chord ``sqrt(2 (1 - cos))`` for cosine.

        Estimators built on distance ratios need a metric that scales like a length; the chord
        between unit vectors does, the cosine distance (quadratic in the angle) does not.
        """
        if self.metric == "cosine":
            return np.sqrt(2.0 * self.distances)
        return self.distances


def knn(
    X: ArrayLike,
    k: int,
    *,
    metric: str = "euclidean",
    duplicates: str = "drop",
    tol: float = 1e-6,
    backend: str = "exact",
    device: Any = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    strategy: str = "auto",
) -> Neighbors:
    """The ``k`` nearest neighbours of every row of ``X`` (shape ``(n, d)``), self excluded.

    Parameters
    ----------
    k : neighbours per row, ``1 <= k < n`` (after the duplicates policy).
    metric : ``"euclidean"`` or ``"cosine"`` (``1 - cos``; zero rows are refused).
    duplicates, tol : the duplicates policy (:mod:`repscope.neighbors.duplicates`) and its
        relative tolerance.
    backend : ``"exact"`` (blockwise matmul + topk), or the approximate ``"faiss"`` (HNSW) and
        ``"pynndescent"`` when installed (``Neighbors.exact`` is then False).
    device : torch device for the search; defaults to the device of a tensor input, else CPU.
    memory_budget : bytes allowed for one block of the ranking matrix.
    dtype : dtype of the candidate search (float32 default). Every dtype gives the same exact
        table (certified, :mod:`repscope.neighbors.certificate`); float16 and bfloat16 round
        too coarsely to certify most rows at realistic ``d``, which then take the float64
        fallback.
    seed : seeds the approximate backends and the subsample of the ``"auto"`` spectrum.
    strategy : exact backend only. ``"brute"`` ranks with full ``d``-dimensional products;
        ``"lowrank"`` ranks in the top principal subspace with certified bounds and re-searches
        the rows it cannot certify by brute force (:mod:`repscope.neighbors.lowrank`);
        ``"auto"`` (default) uses ``"lowrank"`` when the spectrum says it pays. All three
        return the same table; the one that ran is ``Neighbors.strategy`` (with ``rank`` and
        ``fallback_fraction``).
    """
    fn = "knn"
    X = check_array(X, fn, min_samples=2)
    n, d = X.shape
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    check_choice(metric, "metric", fn, METRICS)
    check_choice(duplicates, "duplicates", fn, POLICIES)
    check_choice(backend, "backend", fn, BACKENDS)
    check_choice(strategy, "strategy", fn, STRATEGIES)
    tol = check_float(tol, "tol", fn, low=0.0)
    memory_budget = check_int(memory_budget, "memory_budget", fn, low=2**16)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"The 'dtype' parameter of knn must be a torch float dtype. Got {dtype!r} instead.")
    if device is None:
        device = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)

    P = _prepare(X, metric, device, dtype)
    if backend == "exact" and strategy != "brute":
        P = _with_lowrank(P, strategy, dtype, seed)
    threshold = tol * P.rms_radius
    kept, inverse, mult = _exact_groups(as_numpy(X))
    n_exact = n - kept.shape[0]  # rows bitwise equal to an earlier row
    if duplicates == "raise" and n_exact and k >= kept.shape[0]:  # no search possible: exact only
        _raise_duplicates(n_exact / n, n, n_exact, tol, threshold)
    exact_inverse = inverse
    if duplicates == "keep":
        kept, inverse, mult = np.arange(n), np.arange(n), np.ones(n, dtype=np.int64)
    search = _searcher(backend, metric, device, dtype, memory_budget, seed)
    idx, dist, info = _search_checked(search, P, kept, k, n, duplicates)
    n_groups = n - n_exact
    if threshold > 0:  # near duplicates: the same single linkage counts them under every policy
        merged = _merge_near(idx, dist, threshold, kept, inverse, mult)
        if merged is not None and duplicates == "keep":  # groups of both kinds, joined
            n_groups = _count_joined(merged[1], exact_inverse)
        elif merged is not None:
            kept, inverse, mult = merged
            n_groups = kept.shape[0]
            if duplicates != "raise":
                idx, dist, info = _search_checked(search, P, kept, k, n, duplicates)
    fraction = 1.0 - n_groups / n  # exact + near, the one number every report gives
    if duplicates == "raise" and fraction > 0:
        _raise_duplicates(fraction, n, n_exact, tol, threshold)
    report = DuplicateReport(duplicates, tol, threshold, n, fraction, kept.astype(np.int64),
                             mult.astype(np.int64), inverse.astype(np.int64), n_exact)
    if fraction > 0:
        log.info("knn: %.3g of %d rows are duplicates (policy %r)", fraction, n, duplicates)
    return Neighbors(idx, dist, metric, k, backend == "exact", backend, report, d, *info)


def count_pairs_within(
    X: ArrayLike,
    radii: ArrayLike,
    *,
    metric: str = "euclidean",
    device: Any = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """Number of ordered pairs ``(i, j)``, ``i != j``, with distance ``< r`` for each radius.

    Blockwise like :func:`knn` (no ``(n, n)`` matrix). Distances come from the expanded form in
    ``dtype``, so a pair within rounding of a radius may fall on either side.
    """
    fn = "count_pairs_within"
    X = check_array(X, fn, min_samples=2)
    check_choice(metric, "metric", fn, METRICS)
    radii = np.sort(np.asarray(radii, dtype=np.float64).ravel())  # (m,)
    device = torch.device(device or (X.device if isinstance(X, torch.Tensor) else "cpu"))
    Xt = _prepare(X, metric, device, dtype).search  # (n, d)
    sq = (Xt * Xt).sum(1)  # (n,)
    if metric == "cosine":
        radii2 = torch.as_tensor(radii, dtype=dtype, device=device)  # 1 - cos < r
    else:
        radii2 = torch.as_tensor(radii**2, dtype=dtype, device=device)
    counts = torch.zeros(len(radii), dtype=torch.int64, device=device)
    n = Xt.shape[0]
    for lo, hi in _blocks(n, n, memory_budget, Xt.element_size()):
        D = torch.addmm(sq[None, :], Xt[lo:hi], Xt.T, alpha=-2.0)  # (b, n)
        D += sq[lo:hi, None]
        if metric == "cosine":
            D *= 0.5
        D.clamp_(min=0)
        D[torch.arange(hi - lo, device=device), torch.arange(lo, hi, device=device)] = float("inf")
        counts += torch.stack([(D < r).sum() for r in radii2])
    return counts.cpu().numpy()


def _search_checked(search, P: _Prepared, kept, k, n, policy):
    if k >= kept.shape[0]:
        if kept.shape[0] == 1:
            raise ValueError(f"knn got constant data: all {n} rows of X are duplicates of one row.")
        raise ValueError(
            f"The 'k' parameter of knn must be an int in [1, n_unique={kept.shape[0]}) after "
            f"the duplicates policy {policy!r} kept {kept.shape[0]} of {n} rows. Got {k} instead."
        )
    return search(P.subset(kept), k)


def _searcher(backend, metric, device, dtype, budget, seed):
    if backend == "exact":
        return lambda P, k: _exact_search(P, k, metric, budget)
    approx = ("approximate", 0, 0.0)
    if backend == "faiss":
        return lambda P, k: (*_refine(P, _faiss_candidates(P.search, k), k, metric), approx)
    return lambda P, k: (*_refine(P, _pynndescent_candidates(P.search, k, seed), k, metric), approx)


def _exact_search(P: _Prepared, k: int, metric: str, budget: int):
    """(indices, distances, (strategy, rank, fallback, float64 and direct fractions))."""
    n = P.search.shape[0]
    out_idx = np.empty((n, k), dtype=np.int64)
    out_dist = np.empty((n, k), dtype=np.float64)
    if P.lowrank is None:
        n64, n_direct = _brute_search(P, np.arange(n), k, metric, budget, out_idx, out_dist)
        return out_idx, out_dist, ("brute", 0, 0.0, n64 / n, n_direct / n)
    failed = _lowrank_search(P, k, metric, budget, out_idx, out_dist)
    n64 = n_direct = 0
    if failed.size:
        n64, n_direct = _brute_search(P, failed, k, metric, budget, out_idx, out_dist)
    return out_idx, out_dist, ("lowrank", P.lowrank.rank, failed.size / n, n64 / n, n_direct / n)
