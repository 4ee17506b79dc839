"""Exact k-nearest neighbours, computed once and shared by every estimator.

:func:`knn` searches blockwise with matrix products (torch, CPU or CUDA): for a block of ``b``
query rows it forms the ``(b, n)`` ranking matrix ``|y|^2 - 2 x.y`` with one ``addmm``, masks
the query itself and keeps the best candidates with ``topk``. Memory is bounded by
``memory_budget`` (the block matrix never exceeds it) and no ``(n, n)`` matrix is ever built.
The candidate search runs in float32 by default and keeps a few spare candidates; their
distances are then recomputed from direct coordinate differences in X's own precision (relative
error ~ machine epsilon, free of the cancellation of the expanded form
``|x|^2 + |y|^2 - 2 x.y``, which destroys small distances) and re-sorted, so
``Neighbors.distances`` are accurate even for near-duplicate rows.

Duplicates (identical rows, and rows closer than ``tol`` times the data's RMS radius) make
distance ratios degenerate (``r1 = 0``). The ``duplicates`` policy decides what happens:

* ``"drop"`` (default): keep one representative per group (the first row), search among
  representatives only;
* ``"weight"``: as ``"drop"``, and estimators weight each representative by its multiplicity;
* ``"raise"``: raise a ``ValueError`` when any duplicate is found;
* ``"keep"``: search among all rows (zero distances stay; estimators then exclude the points
  whose distances are zero and warn).

Exact duplicates are found by hashing rows (any group size). Near duplicates are merged through
neighbour edges shorter than the threshold (single linkage), so a near-duplicate cluster larger
than ``k + 1`` rows can be merged only partially; exact duplicates never are.
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
    as_torch,
    check_array,
    check_choice,
    check_float,
    check_int,
)

__all__ = ["DuplicateReport", "Neighbors", "count_pairs_within", "knn"]

log = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
POLICIES = ("drop", "weight", "raise", "keep")
BACKENDS = ("exact", "faiss", "pynndescent")
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_EXTRA_CANDIDATES = 4  # float32 candidates beyond k, re-ranked with exact distances


@dataclass(frozen=True)
class DuplicateReport:
    """What the duplicates policy found and did.

    Row indices refer to the input ``X``; "kept" rows are the ones the neighbour table is over.
    """

    policy: str
    "'drop', 'weight', 'raise' or 'keep'."
    tol: float
    "Relative tolerance: rows closer than ``tol * rms_radius`` are duplicates."
    threshold: float
    "Absolute distance threshold used (``tol`` times the RMS distance to the centroid)."
    n_input: int
    "Rows in the input."
    fraction: float
    "Fraction of input rows that duplicate another row: ``1 - n_groups / n_input``."
    kept: np.ndarray
    "(n_kept,) int64 indices into X of the rows the table is over."
    multiplicity: np.ndarray
    "(n_kept,) int64 number of input rows each kept row stands for (all ones for 'keep')."
    inverse: np.ndarray
    "(n_input,) int64 position in ``kept`` of the row that stands for each input row."

    @property
    def n_kept(self) -> int:
        return int(self.kept.shape[0])

    def summary(self) -> dict[str, Any]:
        """Scalars for an estimate's params/diagnostics."""
        return {"duplicates": self.policy, "duplicate_fraction": float(self.fraction),
                "duplicate_threshold": float(self.threshold), "n_input": self.n_input}


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
) -> Neighbors:
    """The ``k`` nearest neighbours of every row of ``X`` (shape ``(n, d)``), self excluded.

    Parameters
    ----------
    k : neighbours per row, ``1 <= k < n`` (after the duplicates policy).
    metric : ``"euclidean"`` or ``"cosine"`` (``1 - cos``; zero rows are refused).
    duplicates, tol : the duplicates policy (module docstring) and its relative tolerance.
    backend : ``"exact"`` (blockwise matmul + topk), or the approximate ``"faiss"`` (HNSW) and
        ``"pynndescent"`` when installed (``Neighbors.exact`` is then False).
    device : torch device for the search; defaults to the device of a tensor input, else CPU.
    memory_budget : bytes allowed for one block of the ranking matrix.
    dtype : dtype of the candidate search (float32 default; float64 for a bit-exact ranking).
    seed : seeds the approximate backends.
    """
    fn = "knn"
    X = check_array(X, fn, min_samples=2)
    n, d = X.shape
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    check_choice(metric, "metric", fn, METRICS)
    check_choice(duplicates, "duplicates", fn, POLICIES)
    check_choice(backend, "backend", fn, BACKENDS)
    tol = check_float(tol, "tol", fn, low=0.0)
    memory_budget = check_int(memory_budget, "memory_budget", fn, low=2**16)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"The 'dtype' parameter of knn must be a torch float dtype. Got {dtype!r} instead.")
    if device is None:
        device = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)

    P = _prepare(X, metric, device, dtype)
    threshold = tol * P.rms_radius
    kept, inverse, mult = _exact_groups(as_numpy(X))
    n_groups = kept.shape[0]
    if duplicates == "raise" and n_groups < n:  # exact duplicates: no search needed to know
        _raise_duplicates(1.0 - n_groups / n, n, tol, threshold)
    if duplicates == "keep":
        kept, inverse, mult = np.arange(n), np.arange(n), np.ones(n, dtype=np.int64)
    search = _searcher(backend, metric, device, dtype, memory_budget, seed)
    idx, dist = _search_checked(search, P, kept, k, n, duplicates)
    if duplicates != "keep" and threshold > 0:
        merged = _merge_near(idx, dist, threshold, kept, inverse, mult)
        if merged is not None:
            kept, inverse, mult = merged
            idx, dist = _search_checked(search, P, kept, k, n, duplicates)
        n_groups = kept.shape[0]
    elif threshold > 0:
        n_groups = min(n_groups, n - _count_near(dist, threshold))
    fraction = 1.0 - n_groups / n
    if duplicates == "raise" and fraction > 0:
        _raise_duplicates(fraction, n, tol, threshold)
    report = DuplicateReport(duplicates, tol, threshold, n, fraction, kept.astype(np.int64),
                             mult.astype(np.int64), inverse.astype(np.int64))
    if fraction > 0:
        log.info("knn: %.3g of %d rows are duplicates (policy %r)", fraction, n, duplicates)
    return Neighbors(idx, dist, metric, k, backend == "exact", backend, report, d)


def _raise_duplicates(fraction: float, n: int, tol: float, threshold: float) -> None:
    raise ValueError(
        f"knn found duplicate rows in X (fraction {fraction:.4g} of {n} rows within "
        f"tol={tol:g} x rms radius = {threshold:.3g}) and duplicates='raise'. Use "
        f"duplicates='drop' (default), 'weight' or 'keep'."
    )


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


# ----------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Prepared:
    search: torch.Tensor
    "(n, d) in the search dtype: centred rows (euclidean) or unit rows (cosine)."
    ref: torch.Tensor
    "(n, d) rows whose float64 differences give exact distances: X itself, or unit rows."
    rms_radius: float
    "sqrt(mean squared distance to the centroid) of the rows the metric sees."

    def subset(self, rows: np.ndarray) -> _Prepared:
        if rows.shape[0] == self.search.shape[0]:
            return self
        r = torch.as_tensor(rows, device=self.search.device)
        return _Prepared(self.search[r], self.ref[r], self.rms_radius)


def _prepare(X: ArrayLike, metric: str, device: torch.device, dtype: torch.dtype) -> _Prepared:
    """Search copy (centred for Euclidean: exact translation invariance and less cancellation;
    unit rows for cosine) and the reference rows for exact distances; chunked float64 work."""
    Xo = as_torch(X, device=device)  # (n, d), not copied when possible
    n, d = Xo.shape
    chunk = max(1, 2**20 // d)  # float64 chunks of 8 MB: reused heap memory, not fresh maps
    if metric == "cosine":
        ref = torch.empty((n, d), dtype=torch.float64, device=device)
        for lo in range(0, n, chunk):
            rows = Xo[lo:lo + chunk].to(torch.float64)  # (c, d)
            norms = torch.linalg.vector_norm(rows, dim=1)  # (c,)
            if bool((norms == 0).any()):
                bad = lo + int((norms == 0).nonzero()[0, 0])
                raise ValueError(
                    f"knn with metric='cosine' needs non-zero rows; row {bad} of X has norm 0."
                )
            ref[lo:lo + chunk] = rows / norms[:, None]
    else:
        ref = Xo if Xo.dtype in (torch.float32, torch.float64) else Xo.to(torch.float32)
    if device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return _prepare_numpy(ref, metric, dtype)
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    sq = torch.zeros((), dtype=torch.float64, device=device)
    for lo in range(0, n, chunk):
        rows = ref[lo:lo + chunk].to(torch.float64)  # (c, d)
        mean += rows.sum(0)
        sq += (rows * rows).sum()
    mean /= n
    rms = float(torch.sqrt((sq / n - (mean * mean).sum()).clamp(min=0)))
    search = torch.empty((n, d), dtype=dtype, device=device)
    for lo in range(0, n, chunk):
        rows = ref[lo:lo + chunk].to(torch.float64)
        search[lo:lo + chunk] = rows if metric == "cosine" else rows - mean
    return _Prepared(search, ref, rms)


def _prepare_numpy(ref: torch.Tensor, metric: str, dtype: torch.dtype) -> _Prepared:
    """CPU path of :func:`_prepare`: numpy's float64-accumulating reductions and casting
    subtraction run in a few passes over X (torch's float64 column sums are ~10x slower)."""
    A = ref.numpy()  # (n, d) float32 or float64, shares memory with ref
    n = A.shape[0]
    mean = np.add.reduce(A, axis=0, dtype=np.float64) / n  # (d,)
    sq = float(np.einsum("ij,ij->", A, A, dtype=np.float64))
    rms = float(np.sqrt(max(sq / n - float(mean @ mean), 0.0)))
    out = np.empty(A.shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
    if metric == "cosine":
        out[...] = A
    elif np.float64 in (A.dtype, out.dtype):
        np.subtract(A, mean, out=out, casting="same_kind")  # centred in float64, then rounded
    else:
        np.subtract(A, mean.astype(A.dtype), out=out)  # exact near the centre: a translation
    return _Prepared(torch.from_numpy(out), ref, rms)


def _exact_groups(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bitwise-identical rows: (kept first-row indices in input order, inverse, counts).

    Rows are first grouped by a 64-bit hash of their bytes (one pass, fast); the grouping is
    then verified bytewise, and the slower sort of whole rows runs only on a hash collision.
    """
    X = np.ascontiguousarray(X)
    if X.nbytes % (4 * X.shape[0]) == 0:
        words = X.view(np.uint32).reshape(X.shape[0], -1)  # (n, w)
        mult = np.random.default_rng(0x5EED).integers(1, 2**63, words.shape[1], dtype=np.uint64) | 1
        h = np.empty(X.shape[0], dtype=np.uint64)  # wraps modulo 2**64
        step = max(1, 2**20 // words.shape[1])  # rows per 8 MB uint64 chunk
        for lo in range(0, X.shape[0], step):
            h[lo:lo + step] = words[lo:lo + step] @ mult
        _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True,
                                              return_counts=True)
        inverse = inverse.ravel()
        dup = np.flatnonzero(first[inverse] != np.arange(X.shape[0]))  # rows that join a group
        if np.array_equal(words[dup], words[first[inverse[dup]]]):  # bitwise equal to its first
            return _in_input_order(first, inverse, counts)
    rows = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()  # (n,)
    _, first, inverse, counts = np.unique(rows, return_index=True, return_inverse=True,
                                          return_counts=True)
    return _in_input_order(first, inverse.ravel(), counts)


def _in_input_order(first, inverse, counts):
    """Renumber groups by their first row's position in the input."""
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse], counts[order]


def _search_checked(search, P: _Prepared, kept, k, n, policy):
    if k >= kept.shape[0]:
        if kept.shape[0] == 1:
            raise ValueError(f"knn got constant data: all {n} rows of X are duplicates of one row.")
        raise ValueError(
            f"The 'k' parameter of knn must be an int in [1, n_unique={kept.shape[0]}) after "
            f"the duplicates policy {policy!r} kept {kept.shape[0]} of {n} rows. Got {k} instead."
        )
    return search(P.subset(kept), k)


def _merge_near(idx, dist, threshold, kept, inverse, mult):
    """Merge kept rows joined by a neighbour edge within ``threshold``; None if there is none."""
    close = dist <= threshold  # (m, k)
    if not close.any():
        return None
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = idx.shape[0]
    rows = np.repeat(np.arange(m), idx.shape[1])[close.ravel()]
    graph = coo_matrix((np.ones(rows.size), (rows, idx.ravel()[close.ravel()])), shape=(m, m))
    _, label = connected_components(graph, directed=False)  # (m,)
    first = np.full(label.max() + 1, m)
    np.minimum.at(first, label, np.arange(m))  # representative: first kept row of each group
    order = np.argsort(first)
    new_pos = np.empty_like(order)
    new_pos[order] = np.arange(order.size)
    group = new_pos[label]  # (m,) new position of each old kept row
    new_mult = np.bincount(group, weights=mult, minlength=order.size).astype(np.int64)
    return kept[first[order]], group[inverse], new_mult


def _count_near(dist, threshold) -> int:
    """Near-duplicate pairs seen as nearest neighbours (for the 'keep' report)."""
    return int((dist[:, 0] <= threshold).sum()) // 2


def _blocks(n_query: int, n_ref: int, budget: int, itemsize: int):
    """(lo, hi) query blocks whose (b, n_ref) matrix fits ``budget`` with topk workspace."""
    b = max(1, min(n_query, budget // (2 * n_ref * itemsize)))
    for lo in range(0, n_query, b):
        yield lo, min(lo + b, n_query)


def _searcher(backend, metric, device, dtype, budget, seed):
    if backend == "exact":
        return lambda P, k: _exact_search(P, k, metric, budget)
    if backend == "faiss":
        return lambda P, k: _refine(P, _faiss_candidates(P.search, k), k, metric)
    return lambda P, k: _refine(P, _pynndescent_candidates(P.search, k, seed), k, metric)


def _exact_search(P: _Prepared, k: int, metric: str, budget: int):
    """Blockwise exact search: candidates in the search dtype, then re-ranking by direct distances."""
    Xs = P.search  # (n, d)
    n = Xs.shape[0]
    sq = (Xs * Xs).sum(1)  # (n,)
    c = min(n - 1, k + (0 if Xs.dtype == torch.float64 else _EXTRA_CANDIDATES))
    out_idx = np.empty((n, k), dtype=np.int64)
    out_dist = np.empty((n, k), dtype=np.float64)
    blocks = list(_blocks(n, n, budget, Xs.element_size()))
    # One block buffer reused by every block: a fresh (b, n) tensor per block is a large
    # allocation the OS maps and zero-fills anew each time (~15 % of the product's time on CPU).
    buf = torch.empty((blocks[0][1] - blocks[0][0], n), dtype=Xs.dtype, device=Xs.device)
    for lo, hi in blocks:
        R = torch.addmm(sq[None, :], Xs[lo:hi], Xs.T, alpha=-2.0, out=buf[: hi - lo])  # (b, n)
        R.diagonal(lo).fill_(float("inf"))  # R[i, lo + i]: the query itself
        cand = _smallest(R, c)  # (b, c)
        out_idx[lo:hi], out_dist[lo:hi] = _rerank(P.ref, lo, hi, cand, k, metric)
    return out_idx, out_dist


def _smallest(R: torch.Tensor, c: int, group: int = 8) -> torch.Tensor:
    """(b, c) column indices of the ``c`` smallest entries of each row of ``R`` (b, n), unordered.

    Exact two-stage selection, cheaper than ``topk`` over whole rows on the CPU: the columns
    are split into ``m = n // group`` strided groups ``{j, j + m, j + 2m, ...}``, whose minima
    take one vectorised pass; the ``c`` smallest entries of a row all lie in its ``c`` groups
    with the smallest minima (an entry in any other group has ``c`` distinct smaller-or-equal
    entries, the minima of those groups), so ``topk`` then runs on ``n / group`` minima and on
    the ``c * group`` members of the chosen groups (plus the ``n % group`` tail columns).
    """
    b, n = R.shape
    m = n // group
    if m < 8 * c:
        return torch.topk(R, c, dim=1, largest=False, sorted=False).indices
    minima = R[:, : m * group].view(b, group, m).amin(1)  # (b, m)
    gid = torch.topk(minima, c, dim=1, largest=False, sorted=False).indices  # (b, c)
    step = torch.arange(group, device=R.device) * m  # (group,)
    cols = (gid[:, :, None] + step).reshape(b, c * group)  # (b, c * group)
    if m * group < n:
        tail = torch.arange(m * group, n, device=R.device)
        cols = torch.cat([cols, tail.expand(b, -1)], 1)
    sel = torch.topk(torch.gather(R, 1, cols), c, dim=1, largest=False, sorted=False).indices
    return torch.gather(cols, 1, sel)


def _rerank(ref, lo, hi, cand, k, metric):
    """Distances of the candidates from direct coordinate differences (no cancellation:
    relative error ~ eps of X's dtype), sorted by (distance, index); the first ``k`` kept."""
    if ref.device.type == "cpu":
        return _rerank_cpu(ref, lo, hi, cand.numpy(), k, metric)
    d2 = _candidate_sqdist(ref, lo, hi, cand)  # (b, c) float64
    key = torch.argsort(cand, dim=1)  # ties in distance are broken by index, on every backend
    cand, d2 = torch.gather(cand, 1, key), torch.gather(d2, 1, key)
    order = torch.argsort(d2, dim=1, stable=True)[:, :k]
    idx, d2 = torch.gather(cand, 1, order), torch.gather(d2, 1, order)
    dist = 0.5 * d2 if metric == "cosine" else torch.sqrt(d2)
    return idx.cpu().numpy(), dist.cpu().numpy()


def _rerank_cpu(ref: torch.Tensor, lo: int, hi: int, cand: np.ndarray, k: int, metric: str):
    """:func:`_rerank` on the CPU, in numpy (which releases the GIL): the rows are split
    between ``torch.get_num_threads()`` threads when there is enough work to share."""
    b, c = cand.shape
    idx = np.empty((b, k), dtype=np.int64)
    dist = np.empty((b, k), dtype=np.float64)

    def run(s: int, e: int) -> None:
        C = np.sort(cand[s:e], axis=1)  # (m, c) by index, so that equal distances keep it
        d2 = _sqdist_numpy(ref.numpy(), lo + s, lo + e, C)  # (m, c) float64
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]  # (m, k)
        idx[s:e] = np.take_along_axis(C, order, 1)
        d2 = np.take_along_axis(d2, order, 1)
        dist[s:e] = 0.5 * d2 if metric == "cosine" else np.sqrt(d2)

    parts = max(1, min(torch.get_num_threads(), b * c * ref.shape[1] // 2**21))
    if parts == 1:
        run(0, b)
        return idx, dist
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.linspace(0, b, parts + 1).astype(int)
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(run, cuts[:-1], cuts[1:]))
    return idx, dist


def _sqdist_numpy(R: np.ndarray, lo: int, hi: int, C: np.ndarray) -> np.ndarray:
    """(b, c) float64 squared distances between rows ``lo:hi`` of ``R`` and rows ``C`` (b, c):
    candidate rows gathered in chunks of a few MB (one reused buffer), subtracted, squared and
    summed in float64 (pairwise summation)."""
    c, d = C.shape[1], R.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    out = np.empty(C.shape, dtype=np.float64)  # (b, c)
    buf = np.empty((min(step, hi - lo), c, d), dtype=R.dtype)
    for s in range(0, hi - lo, step):
        e = min(s + step, hi - lo)
        diff = np.take(R, C[s:e], axis=0, out=buf[: e - s])  # (s, c, d)
        diff -= R[lo + s:lo + e, None, :]
        np.square(diff, out=diff)
        out[s:e] = diff.sum(-1, dtype=np.float64)
    return out


def _candidate_sqdist(ref: torch.Tensor, lo: int, hi: int, cand: torch.Tensor) -> torch.Tensor:
    """(b, c) float64 squared distances between rows ``lo:hi`` of ``ref`` and their candidates.

    Torch version of :func:`_sqdist_numpy` for accelerators: candidate rows gathered in chunks
    of a few MB, subtracted, squared and summed in float64.
    """
    c, d = cand.shape[1], ref.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    d2 = torch.empty(cand.shape, dtype=torch.float64, device=cand.device)  # (b, c)
    for s in range(0, hi - lo, step):
        e = min(s + step, hi - lo)
        diff = ref.index_select(0, cand[s:e].reshape(-1)).view(e - s, c, d)  # (s, c, d)
        diff -= ref[lo + s:lo + e, None, :]
        d2[s:e] = diff.square_().sum(-1, dtype=torch.float64)
    return d2


def _refine(P: _Prepared, cand: np.ndarray, k: int, metric: str):
    """Exact re-ranking of approximate candidates; self, missing (-1) and repeated entries
    are removed first."""
    n = P.search.shape[0]
    out_idx = np.empty((n, k), dtype=np.int64)
    out_dist = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        row = np.unique(cand[i][(cand[i] >= 0) & (cand[i] != i)])
        if row.size < k:
            raise RuntimeError(
                f"The approximate backend returned {row.size} < k={k} distinct neighbours for "
                f"row {i}; use backend='exact'."
            )
        cand[i, : row.size] = row
        cand[i, row.size:] = row[-1]  # repeats sort after the distinct copy and are cut below
    c = torch.as_tensor(cand, device=P.search.device)  # (n, c)
    idx, dist = _rerank(P.ref, 0, n, c, c.shape[1], metric)
    for i in range(n):
        keep = np.ones(idx.shape[1], dtype=bool)
        keep[1:] = idx[i, 1:] != idx[i, :-1]
        out_idx[i], out_dist[i] = idx[i, keep][:k], dist[i, keep][:k]
    return out_idx, out_dist


def _faiss_candidates(Xs: torch.Tensor, k: int) -> np.ndarray:
    try:
        import faiss
    except ImportError as err:
        raise ImportError("knn(backend='faiss') needs faiss: pip install faiss-cpu") from err
    A = np.ascontiguousarray(Xs.cpu().numpy(), dtype=np.float32)  # (n, d)
    index = faiss.IndexHNSWFlat(A.shape[1], 32)
    index.hnsw.efSearch = max(64, 2 * (k + 1))
    index.add(A)
    _, cand = index.search(A, min(A.shape[0], k + 1 + _EXTRA_CANDIDATES))
    return cand.astype(np.int64)


def _pynndescent_candidates(Xs: torch.Tensor, k: int, seed: int) -> np.ndarray:
    try:
        from pynndescent import NNDescent
    except ImportError as err:
        raise ImportError("knn(backend='pynndescent') needs pynndescent: pip install pynndescent") from err
    A = np.ascontiguousarray(Xs.cpu().numpy(), dtype=np.float32)  # (n, d)
    c = min(A.shape[0], k + 1 + _EXTRA_CANDIDATES)
    cand, _ = NNDescent(A, n_neighbors=c, metric="euclidean", random_state=seed).neighbor_graph
    return cand.astype(np.int64)
