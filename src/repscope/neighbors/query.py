"""Exact neighbours of one set of rows among another: :func:`knn_query` and :func:`neighbor_ranks`.

:func:`knn_query` is the out-of-sample counterpart of :func:`repscope.neighbors.knn`: the ``k``
nearest rows of a reference set ``R`` for every query row of ``Q`` (no row is excluded, so a
query that also lies in ``R`` finds itself at distance 0). It ranks blockwise with one
``addmm`` per block of queries in the search dtype, on rows centred at ``R``'s centroid (the
rounding then scales with the data's spread, not with its offset), and is certified like the
in-set search: with the rounding bounds of :func:`~repscope.neighbors.certificate._expansion_bounds`
every ranking value is within ``gamma (t_q + t_j) + slack`` of the squared distance, so the
reference rows whose lower bound is below the ``k``-th smallest upper bound are the only ones
that can be among the ``k`` nearest. All of them are re-ranked by direct float64 coordinate
differences and sorted by (distance, index): the table is exact for every dtype, with no
fallback needed (a row whose bounds are loose simply re-ranks more candidates).

:func:`neighbor_ranks` gives, for pairs ``(i, j)`` of rows of one set, the rank of ``j`` among
the neighbours of ``i`` (1 = nearest), the quantity behind the information imbalance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repscope._validate import ArrayLike, as_numpy, check_array, check_choice, check_int
from repscope.neighbors.blocks import DEFAULT_MEMORY_BUDGET, _blocks
from repscope.neighbors.certificate import _expansion_bounds, _rerank_error
from repscope.neighbors.prepare import _prepare, _squared_norms

__all__ = ["QueryNeighbors", "knn_query", "neighbor_ranks"]

METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class QueryNeighbors:
    """The ``k`` nearest reference rows of each query row, nearest first."""

    indices: np.ndarray
    "(m, k) int64 rows of the reference set."
    distances: np.ndarray
    "(m, k) float64 ascending; Euclidean, or cosine distance ``1 - cos`` for 'cosine'."
    metric: str
    "'euclidean' or 'cosine'."
    k: int
    "Neighbours per query."
    n_reference: int
    "Rows of the reference set."
    mean_candidates: float
    "Mean number of reference rows per query re-ranked by direct distances (>= k)."

    def lengths(self) -> np.ndarray:
        """(m, k) Euclidean distances, or chord lengths ``sqrt(2 (1 - cos))`` for cosine."""
        return np.sqrt(2.0 * self.distances) if self.metric == "cosine" else self.distances


def _unit(A: np.ndarray, fn: str, name: str) -> np.ndarray:
    norms = np.linalg.norm(A, axis=1)
    if bool((norms == 0).any()):
        raise ValueError(f"{fn} with metric='cosine' needs non-zero rows; row "
                         f"{int(np.argmax(norms == 0))} of {name} has norm 0.")
    return A / norms[:, None]


def knn_query(
    Q: ArrayLike,
    R: ArrayLike,
    k: int,
    *,
    metric: str = "euclidean",
    device: str | torch.device | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    dtype: torch.dtype = torch.float32,
) -> QueryNeighbors:
    """The ``k`` nearest rows of the reference ``R`` (n, d) for every query row of ``Q`` (m, d).

    Exact and certified for every ``dtype`` (see the module docstring); ties in distance are
    broken by reference index. ``metric="cosine"`` compares unit rows (``1 - cos``).
    """
    fn = "knn_query"
    Q = check_array(Q, fn, name="Q", min_samples=1)
    R = check_array(R, fn, name="R", min_samples=1)
    if Q.shape[1] != R.shape[1]:
        raise ValueError(f"{fn}: Q has {Q.shape[1]} features but R has {R.shape[1]}; "
                         f"they must be rows of the same space.")
    n, d = R.shape
    k = check_int(k, "k", fn, low=1, high=n, high_inclusive=True, high_name="n_reference")
    check_choice(metric, "metric", fn, METRICS)
    memory_budget = check_int(memory_budget, "memory_budget", fn, low=2**16)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"The 'dtype' parameter of {fn} must be torch.float32 or torch.float64. "
                         f"Got {dtype!r} instead.")
    if device is None:
        device = Q.device if isinstance(Q, torch.Tensor) else "cpu"
    device = torch.device(device)
    P = _prepare(R, metric, device, dtype)  # centred search copy of R, its centre
    Rref = as_numpy(P.ref).astype(np.float64, copy=False)  # (n, d) rows of exact distances
    Qref = as_numpy(Q).astype(np.float64)  # (m, d)
    if metric == "cosine":
        Qref = _unit(Qref, fn, "Q")
    center = P.center.cpu().numpy()
    Qs = torch.as_tensor(Qref - center, dtype=dtype, device=device)  # (m, d) centred, rounded
    Rs = P.search  # (n, d)
    tR = _squared_norms(Rs)  # (n,) float64
    tQ = _squared_norms(Qs)  # (m,)
    sq = torch.as_tensor(tR, dtype=dtype, device=device)
    bounds = _expansion_bounds(tR, d, dtype, device)
    eps, tiny = _rerank_error(torch.empty((0, d), dtype=torch.float64))
    m = Qref.shape[0]
    out_idx = np.empty((m, k), dtype=np.int64)
    out_d2 = np.empty((m, k), dtype=np.float64)
    n_cand = 0
    for lo, hi in _blocks(m, n, memory_budget // 4, 8):  # ~5 (b, n) float64 arrays
        M = torch.addmm(sq[None, :], Qs[lo:hi], Rs.T, alpha=-2.0)  # (b, n) ranking values
        M = M.to(torch.float64).cpu().numpy() + tQ[lo:hi, None]  # ~ squared distances
        spread = bounds.gamma * (tQ[lo:hi, None] + tR[None, :]) + bounds.slack
        upper = M + spread
        ceiling = np.partition(upper, k - 1, axis=1)[:, k - 1] * (1 + eps) + tiny  # (b,)
        lower = (M - spread) * (1 - eps) - tiny
        width = int((lower <= ceiling[:, None]).sum(1).max())  # >= k
        cand = (np.argpartition(lower, width - 1, axis=1)[:, :width] if width < n
                else np.broadcast_to(np.arange(n), (hi - lo, n)))  # (b, w)
        n_cand += width * (hi - lo)
        cand = np.sort(cand, axis=1)  # by index, so that equal distances keep it
        diff = Rref[cand] - Qref[lo:hi, None, :]  # (b, w, d)
        d2 = np.einsum("bwd,bwd->bw", diff, diff)
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        out_idx[lo:hi] = np.take_along_axis(cand, order, 1)
        out_d2[lo:hi] = np.take_along_axis(d2, order, 1)
    dist = 0.5 * out_d2 if metric == "cosine" else np.sqrt(out_d2)
    return QueryNeighbors(out_idx, dist, metric, k, n, n_cand / max(m, 1))


def neighbor_ranks(
    X: ArrayLike,
    targets: np.ndarray,
    *,
    metric: str = "euclidean",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> np.ndarray:
    """(n,) int64 rank of row ``targets[i]`` among the neighbours of row ``i`` of X (n, d).

    ``rank = 1 + #{l != i : d(i, l) < d(i, targets[i])}`` (1 = nearest; rows tied with the
    target count as farther). Blockwise float64 distances (no ``(n, n)`` matrix): the distance
    of the target and of every other row come from the same expanded form on centred rows, so
    only rows within float64 rounding (~1e-15 relative) of a tie can fall on either side.
    """
    fn = "neighbor_ranks"
    X = check_array(X, fn, min_samples=2)
    n = X.shape[0]
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (n,) or targets.min() < 0 or targets.max() >= n:
        raise ValueError(f"{fn}: targets must be ({n},) row indices of X; got shape "
                         f"{targets.shape}.")
    check_choice(metric, "metric", fn, METRICS)
    A = as_numpy(X).astype(np.float64)  # (n, d)
    if metric == "cosine":
        A = _unit(A, fn, "X")
    A = A - A.mean(0)
    sq = np.einsum("ij,ij->i", A, A)  # (n,)
    ranks = np.empty(n, dtype=np.int64)
    for lo, hi in _blocks(n, n, memory_budget, 8):
        D = sq[None, :] - 2.0 * (A[lo:hi] @ A.T)  # (b, n) squared distance minus |a_i|^2
        rows = np.arange(hi - lo)
        D[rows, np.arange(lo, hi)] = np.inf  # the row itself
        ref = D[rows, targets[lo:hi]]
        ranks[lo:hi] = 1 + (D < ref[:, None]).sum(1)
    return ranks
