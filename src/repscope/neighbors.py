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

Certified brute search
----------------------
Float32 products can also rank wrongly: their rounding error grows with the centred norms
(``|c_i|^2 + |c_j|^2``), not with the distance, so when the gap between a row's ``k``-th and
next neighbours is below it (far-apart clusters, unit rows that are nearly collinear) a true
neighbour can fall outside the candidates. Every row is therefore certified like a low-rank
row with zero residual (``r = d``): with ``t_i = |s_i|^2`` of the rounded centred rows and
``gamma = 2 (2 d + 16) u`` (:func:`_expansion_bounds`), each ranking value is within
``gamma (t_i + t_j)`` of the squared distance, and the row is exact when the ``k``-th
candidate's upper bound is below the lower bound of every non-candidate (:func:`_certify`).
A row that fails is retried with ``4 c + 16`` candidates from the same block; if it still
fails, the rows are searched again with float64 products of rows centred in float64
(:func:`_float64_search`, same certificate with float64 margins). Rows that fail that too
(neighbour gaps below float64 rounding against their centred norms: a tight cluster far from
the centroid) are searched among the rows the float64 bounds cannot exclude, re-centred at
those rows' own mean (:func:`_local_search`), and, if even that fails, every such row is
re-ranked by direct differences (:func:`_pruned_rerank`). Every path ends in the same
re-ranking, so ties keep the (distance, index) order, and ``Neighbors.float64_fraction`` /
``direct_fraction`` say how many rows needed the float64 search and the stages after it (zero
on ordinary data).

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

Low-rank pruning (``strategy="lowrank"``, chosen by ``"auto"`` when it pays)
---------------------------------------------------------------------------
When the rows (centred) lie close to an ``r``-dimensional subspace with ``r`` well below ``d``,
most of the full-dimensional arithmetic is wasted. Split each centred row ``c_i = x_i - mu``
into its coordinates ``p_i = V_r^T c_i`` in an orthonormal basis ``V_r`` (d, r) of the top
principal directions and its residual ``e_i = c_i - V_r p_i`` (computed explicitly in float64),
of norm ``rho_i``. Since ``e_i`` is orthogonal to the subspace,

    ||x_i - x_j||^2 = ||p_i - p_j||^2 + rho_i^2 + rho_j^2 - 2 e_i.e_j,   |e_i.e_j| <= rho_i rho_j,

so with ``M_ij = ||p_i - p_j||^2 + rho_i^2 + rho_j^2`` (an ``r``-dimensional product, blockwise as
in the brute search) every squared distance lies in ``[M_ij - 2 rho_i rho_j, M_ij + 2 rho_i rho_j]``.
For each row the ``k + extra`` smallest ``M`` are the candidates. The row is **certified** when
the ``k``-th smallest upper bound among its candidates is below a lower bound valid for every
non-candidate (the largest candidate ``M`` minus ``2 rho_i max_j rho_j``): no non-candidate can
then be among the ``k`` nearest. All bounds carry rigorous rounding margins (the float32
expanded product, the float64 projection, the relative error of the re-ranking distances), so a
certified row gets exactly the table of the brute search: the same candidates re-ranked by the
same direct float64 distances with the same tie rule. Rows that fail (typically those whose
residual is not small against the gap between their ``k``-th and further neighbours) are searched
again by the brute path. ``"auto"`` estimates the spectrum from a seeded subsample of 256 rows,
takes the smallest ``r`` leaving at most a ``1e-4`` fraction of the variance, uses pruning only
when ``d >= 2 r + 64`` and ``r <= 128`` (what 256 rows can vouch for), and switches to the brute
search if more than half of a first probe block of 512 rows fails the certificate. Cosine
distances are Euclidean distances of the unit rows, which are pruned the same way. This is standard bound-based pruning (a distance bounded by that
of a projection plus what the projection leaves out), specialised to an exact, certified table.
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
STRATEGIES = ("auto", "brute", "lowrank")
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_EXTRA_CANDIDATES = 4  # float32 candidates beyond k, re-ranked with exact distances
# Low-rank pruning (module docstring). The thresholds only decide speed, never correctness.
_LOWRANK_EXTRA = 8  # candidates beyond k in the projected search
_LOWRANK_TAIL = 1e-4  # variance fraction the r principal directions may leave out
_LOWRANK_SAMPLE = 256  # rows of the seeded subsample whose spectrum chooses r (auto: r <= 128)
_LOWRANK_MIN_SAVING = 64  # auto prunes only when d >= 2 r + this (selection costs ~ that much)
_PROBE_ROWS = 512  # auto: rows of the first (probe) block
_PROBE_MAX_FAIL = 0.5  # auto: switch to brute when more of the probe rows fail the certificate
_RERANK_PIECE = 2**20  # last-resort re-ranking: candidates x d per call at most
_LOCAL_MAX_BYTES = 2**26  # locally re-centred float64 rows per group of failing queries
_NUMPY_ON_CPU = True  # numpy fast paths for CPU tensors (off: the accelerator code runs on CPU)


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
    n_exact: int = 0
    "Rows bitwise equal to an earlier row (the rest of the duplicates are near duplicates)."

    @property
    def n_kept(self) -> int:
        return int(self.kept.shape[0])

    @property
    def n_duplicates(self) -> int:
        "Rows that duplicate another row, exact or near: ``fraction * n_input``."
        return int(round(self.fraction * self.n_input))

    def describe(self) -> str:
        """The fraction and both kinds in the words of every duplicates message, e.g.
        ``'12 % duplicates (fraction 0.12 of 1100 rows: 100 exact, 32 near (closer than
        tol=1e-06 x rms radius))'``."""
        return (f"{100 * self.fraction:.2g} % duplicates "
                f"({_kinds(self.n_duplicates, self.n_input, self.n_exact, self.tol)}))")

    def summary(self) -> dict[str, Any]:
        """Scalars for an estimate's params/diagnostics."""
        return {"duplicates": self.policy, "duplicate_fraction": float(self.fraction),
                "duplicate_threshold": float(self.threshold), "n_input": self.n_input,
                "n_exact_duplicates": self.n_exact}


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
    duplicates, tol : the duplicates policy (module docstring) and its relative tolerance.
    backend : ``"exact"`` (blockwise matmul + topk), or the approximate ``"faiss"`` (HNSW) and
        ``"pynndescent"`` when installed (``Neighbors.exact`` is then False).
    device : torch device for the search; defaults to the device of a tensor input, else CPU.
    memory_budget : bytes allowed for one block of the ranking matrix.
    dtype : dtype of the candidate search (float32 default). Every dtype gives the same exact
        table (certified, module docstring); float16 and bfloat16 round too coarsely to certify
        most rows at realistic ``d``, which then take the float64 fallback.
    seed : seeds the approximate backends and the subsample of the ``"auto"`` spectrum.
    strategy : exact backend only. ``"brute"`` ranks with full ``d``-dimensional products;
        ``"lowrank"`` ranks in the top principal subspace with certified bounds and re-searches
        the rows it cannot certify by brute force (module docstring); ``"auto"`` (default) uses
        ``"lowrank"`` when the spectrum says it pays. All three return the same table; the one
        that ran is ``Neighbors.strategy`` (with ``rank`` and ``fallback_fraction``).
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


def _raise_duplicates(fraction: float, n: int, n_exact: int, tol: float, threshold: float) -> None:
    n_dup = int(round(fraction * n))
    raise ValueError(
        f"knn found duplicate rows in X ({_kinds(n_dup, n, n_exact, tol)} = {threshold:.3g}) and "
        f"duplicates='raise'. Use duplicates='drop' (default), 'weight' or 'keep'."
    )


def _kinds(n_dup: int, n: int, n_exact: int, tol: float) -> str:
    """'fraction 0.12 of 1100 rows: 100 exact, 32 near (closer than tol=1e-06 x rms radius'."""
    return (f"fraction {n_dup / n:.4g} of {n} rows: {n_exact} exact, {n_dup - n_exact} near "
            f"(closer than tol={tol:g} x rms radius")


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
    "(n, d) in the search dtype: centred rows (euclidean) or centred unit rows (cosine)."
    ref: torch.Tensor
    "(n, d) rows whose float64 differences give exact distances: X itself, or unit rows."
    rms_radius: float
    "sqrt(mean squared distance to the centroid) of the rows the metric sees."
    center: torch.Tensor
    "(d,) float64 centroid of ``ref``."
    lowrank: _LowRank | None = None
    "The projected rows of the low-rank search, when it is used."

    def subset(self, rows: np.ndarray) -> _Prepared:
        if rows.shape[0] == self.search.shape[0]:
            return self
        r = torch.as_tensor(rows, device=self.search.device)
        low = None if self.lowrank is None else self.lowrank.subset(r)
        return _Prepared(self.search[r], self.ref[r], self.rms_radius, self.center, low)


@dataclass(frozen=True)
class _Bounds:
    """What :func:`_certify` needs to bound the squared distances behind a ranking matrix."""

    t: np.ndarray
    "(n,) float64 squared norms of the centred rows."
    rho: np.ndarray
    "(n,) float64 norms of the parts the ranking leaves out (zero for the brute search)."
    gamma: float
    "Relative margin of the ranking: ``|M_hat - M| <= gamma (t_i + t_j)``."
    slack: float
    "Absolute margin (float64 roundings, underflow)."


@dataclass(frozen=True)
class _LowRank:
    """Rows split into principal coordinates and residual norms (module docstring)."""

    proj: torch.Tensor
    "(n, r) coordinates ``p_i`` rounded to the search dtype."
    bias: torch.Tensor
    "(n,) ``t_i`` rounded to the search dtype: the row term of the ranking ``t_j - 2 p_i.p_j``."
    t: np.ndarray
    "(n,) float64 ``t_i = |p_i|^2 + rho_i^2`` (= ``|c_i|^2``), on the host."
    rho: np.ndarray
    "(n,) float64 residual norms ``rho_i``, on the host."
    gamma: float
    "Relative margin of the ranking: ``|M_hat - M| <= gamma (t_i + t_j)``."
    slack: float
    "Absolute margin for every float64 rounding (centring, projection, residual)."
    auto: bool = False
    "Chosen by strategy='auto': hand everything to the brute search if the probe block fails."

    @property
    def rank(self) -> int:
        return int(self.proj.shape[1])

    @property
    def bounds(self) -> _Bounds:
        return _Bounds(self.t, self.rho, self.gamma, self.slack)

    def subset(self, r: torch.Tensor) -> _LowRank:
        rn = r.cpu().numpy()
        return _LowRank(self.proj[r], self.bias[r], self.t[rn], self.rho[rn], self.gamma,
                        self.slack, self.auto)


def _prepare(X: ArrayLike, metric: str, device: torch.device, dtype: torch.dtype) -> _Prepared:
    """Search copy (centred rows, or centred unit rows for cosine: exact translation invariance
    and less cancellation in the expanded form) and the reference rows for exact distances;
    chunked float64 work."""
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
        search[lo:lo + chunk] = rows - mean
    return _Prepared(search, ref, rms, mean)


def _prepare_numpy(ref: torch.Tensor, metric: str, dtype: torch.dtype) -> _Prepared:
    """CPU path of :func:`_prepare`: numpy's float64-accumulating reductions and casting
    subtraction run in a few passes over X (torch's float64 column sums are ~10x slower)."""
    A = ref.numpy()  # (n, d) float32 or float64, shares memory with ref
    n = A.shape[0]
    mean = np.add.reduce(A, axis=0, dtype=np.float64) / n  # (d,)
    sq = float(np.einsum("ij,ij->", A, A, dtype=np.float64))
    rms = float(np.sqrt(max(sq / n - float(mean @ mean), 0.0)))
    out = np.empty(A.shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
    if np.float64 in (A.dtype, out.dtype):  # unit rows (cosine) are float64
        np.subtract(A, mean, out=out, casting="same_kind")  # centred in float64, then rounded
    else:
        np.subtract(A, mean.astype(A.dtype), out=out)  # exact near the centre: a translation
    return _Prepared(torch.from_numpy(out), ref, rms, torch.from_numpy(mean))


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


def _count_joined(a: np.ndarray, b: np.ndarray) -> int:
    """Number of groups when rows in the same group of labelling ``a`` or of ``b`` are joined."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = a.shape[0]
    graph = coo_matrix((np.ones(n), (a, n + b)), shape=(2 * n, 2 * n))  # label nodes, one edge a row
    _, label = connected_components(graph, directed=False)
    return int(np.unique(label[a]).size)


def _blocks(n_query: int, n_ref: int, budget: int, itemsize: int):
    """(lo, hi) query blocks whose (b, n_ref) matrix fits ``budget`` with topk workspace."""
    b = max(1, min(n_query, budget // (2 * n_ref * itemsize)))
    for lo in range(0, n_query, b):
        yield lo, min(lo + b, n_query)


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


def _brute_search(P: _Prepared, rows: np.ndarray, k: int, metric: str, budget: int,
                  out_idx: np.ndarray, out_dist: np.ndarray) -> tuple[int, int]:
    """Blockwise exact search of the query ``rows`` (sorted int64) against all rows of ``P``,
    written in place: candidates from products in the search dtype, certified row by row
    (:func:`_certify` with zero residuals, module docstring), re-ranked by direct distances.
    Rows that fail go to :func:`_float64_search`. Returns how many rows needed the float64
    search and how many the stages after it (:func:`_local_search`, :func:`_pruned_rerank`)."""
    Xs = P.search  # (n, d)
    n = Xs.shape[0]
    t = _squared_norms(Xs)  # (n,) float64
    sq = torch.from_numpy(t).to(device=Xs.device, dtype=Xs.dtype)  # (n,) rounded once
    c = min(n - 1, k + _EXTRA_CANDIDATES)
    bounds = _expansion_bounds(t, Xs.shape[1], Xs.dtype, Xs.device)
    rel = _rerank_error(P.ref)
    final = Xs.dtype == torch.float64  # nothing more precise to fall back on
    blocks = list(_blocks(rows.size, n, budget, Xs.element_size()))
    # One block buffer reused by every block: a fresh (b, n) tensor per block is a large
    # allocation the OS maps and zero-fills anew each time (~15 % of the product's time on CPU).
    buf = torch.empty((blocks[0][1] - blocks[0][0], n), dtype=Xs.dtype, device=Xs.device)
    failed, n_direct = [], 0
    for lo, hi in blocks:
        q = rows[lo:hi]
        if _contiguous(q):
            R = torch.addmm(sq[None, :], Xs[q[0]:q[-1] + 1], Xs.T, alpha=-2.0, out=buf[: hi - lo])
            R.diagonal(int(q[0])).fill_(float("inf"))  # R[i, q0 + i]: the query itself
        else:
            qt = torch.as_tensor(q, device=Xs.device)
            R = torch.addmm(sq[None, :], Xs[qt], Xs.T, alpha=-2.0, out=buf[: hi - lo])  # (b, n)
            R[torch.arange(hi - lo, device=Xs.device), qt] = float("inf")
        bad = _certified_rerank(P.ref, R, q, c, k, metric, bounds, rel, final, out_idx,
                                out_dist)
        if final:
            n_direct += bad.size
        else:
            failed.append(bad)
    failed = np.concatenate(failed) if failed else rows[:0]
    n64 = failed.size
    if n64:
        n_direct = _float64_search(P, failed, k, metric, budget, out_idx, out_dist)
    if n64 or n_direct:
        log.debug("knn: %d rows searched again in float64, %d by direct distances", n64, n_direct)
    return n64, n_direct


def _certified_rerank(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, c: int, k: int,
                      metric: str, bounds: _Bounds, rel: tuple[float, float], final: bool,
                      out_idx: np.ndarray, out_dist: np.ndarray) -> np.ndarray:
    """Rows of the ranking block ``R`` (b, n) (queries ``q``, sorted) re-ranked against ``ref``
    and written when their ``c`` smallest values are certified; the rows that fail are tried
    once more with ``4 c + 16`` candidates (a wider gap to the excluded rows). Returns the rows
    still failing; with ``final``, those are settled (and written) by :func:`_local_search` and
    :func:`_pruned_rerank`."""
    pos = np.arange(q.size)
    for width in (c, min(R.shape[1] - 1, 4 * c + 16)):
        sub = R if pos.size == q.size else R[torch.as_tensor(pos, device=R.device)]  # (f, n)
        cand = _smallest(sub, width)  # (f, width)
        vals = torch.gather(sub, 1, cand)
        vals = vals.to(torch.float64).cpu().numpy()  # (f, width); float16/bfloat16 searches too
        ok, keep = _certify(bounds, q[pos], cand.cpu().numpy(), vals, k, 0.0, rel)
        good = q[pos[ok]]
        if good.size:
            keep = torch.as_tensor(keep, device=R.device)
            out_idx[good], out_dist[good] = _rerank(ref, good, keep, k, metric)
        pos = pos[~ok]
        if not pos.size or width >= R.shape[1] - 1:
            break
    if final and pos.size:
        Rf = R[torch.as_tensor(pos, device=R.device)]  # (f, n)
        rest = _local_search(ref, Rf, q[pos], k, metric, bounds, rel, out_idx, out_dist)
        if rest.size:
            sel = torch.as_tensor(np.searchsorted(q[pos], rest), device=R.device)
            _pruned_rerank(ref, Rf[sel], rest, k, metric, bounds, rel, out_idx, out_dist)
    return q[pos]


def _possible(R: torch.Tensor, q: np.ndarray, bounds: _Bounds, rel: tuple[float, float],
              k: int) -> np.ndarray:
    """(f, n) bool: the rows that may be among the ``k`` nearest of each query ``q`` (f,),
    from its ranking row in ``R`` (f, n) and the bounds of :func:`_certify` over the whole row:
    lower bound of the computed distance at most the ``k``-th smallest upper bound (nan, from
    an overflow, counts as possible); the query itself excluded. No other row can be."""
    eps, tiny = rel
    t = bounds.t
    M = t[q, None] + R.to(torch.float64).cpu().numpy()  # (f, n)
    spread = bounds.gamma * (t[q, None] + t[None, :]) + bounds.slack
    ceiling = np.partition(M + spread, k - 1, axis=1)[:, k - 1] * (1 + eps) + tiny  # (f,)
    lower = (M - spread) * (1 - eps) - tiny  # <= computed distances
    out = ~(lower > ceiling[:, None])
    out[np.arange(q.size), q] = False
    return out


def _local_search(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, k: int, metric: str,
                  bounds: _Bounds, rel: tuple[float, float], out_idx: np.ndarray,
                  out_dist: np.ndarray) -> np.ndarray:
    """Rows whose neighbour gaps are below float64 rounding against their centred norms (e.g.
    a tight cluster far from the centroid, or nearly collinear unit rows) are searched again
    among the rows their bounds cannot exclude (:func:`_possible`), with float64 products of
    rows centred at the mean of those rows: the rounding then scales with the cluster's own
    spread. Queries are grouped greedily (a first row and the failing rows it may be near);
    each group's union ``U`` (sorted) is ranked with the excluded rows masked, certified and
    re-ranked as everywhere else (within ``U``, whose order is the global index order). Groups
    whose union exceeds ``_LOCAL_MAX_BYTES`` as float64 rows are skipped. Returns the rows
    still failing (sorted)."""
    n, d = ref.shape
    dev = ref.device
    step = max(1, 2**21 // n)  # query rows per (step, n) float64 temporary
    S = np.concatenate([_possible(R[lo:lo + step], q[lo:lo + step], bounds, rel, k)
                        for lo in range(0, q.size, step)])  # (f, n)
    left = np.ones(q.size, dtype=bool)
    failed = []
    while left.any():
        a = int(np.flatnonzero(left)[0])
        near = S[a][q]  # (f,) failing rows that may be among a's nearest
        near[a] = True
        G = np.flatnonzero(left & near)  # positions in q
        left[G] = False
        mask = S[G].any(0)
        mask[q[G]] = True
        U = np.flatnonzero(mask)  # (u,) sorted global rows
        if U.size * d * 8 > _LOCAL_MAX_BYTES:
            failed.append(q[G])
            continue
        C = ref[torch.as_tensor(U, device=dev)].to(torch.float64)  # (u, d)
        C -= C.mean(0)  # centred in float64 at the group's own mean
        t = (C * C).sum(1)  # (u,)
        ql = np.searchsorted(U, q[G])  # (g,) queries' positions in U
        qt = torch.as_tensor(ql, device=dev)
        Rl = torch.addmm(t[None, :], C[qt], C.T, alpha=-2.0)  # (g, u)
        Rl[torch.as_tensor(~S[G][:, U], device=dev)] = float("inf")  # excluded and self
        lb = _expansion_bounds(t.cpu().numpy(), d, torch.float64, dev)
        li = np.empty((U.size, k), dtype=np.int64)
        ld = np.empty((U.size, k), dtype=np.float64)
        c = min(U.size - 1, k + _EXTRA_CANDIDATES)
        bad = _certified_rerank(ref[torch.as_tensor(U, device=dev)], Rl, ql, c, k, metric, lb,
                                rel, False, li, ld)
        good = np.setdiff1d(ql, bad)
        out_idx[U[good]], out_dist[U[good]] = U[li[good]], ld[good]
        failed.append(U[bad])
    return np.sort(np.concatenate(failed))


def _pruned_rerank(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, k: int, metric: str,
                   bounds: _Bounds, rel: tuple[float, float], out_idx: np.ndarray,
                   out_dist: np.ndarray) -> None:
    """Last resort for rows that no candidate list certifies: every row that may be among
    their ``k`` nearest (:func:`_possible`) is re-ranked by direct distances (in pieces, keeping
    each piece's ``k`` best), the rest cannot be. Exact for any data; its cost is the number
    of rows the bounds cannot exclude (``O(n d)`` per query at worst)."""
    n = R.shape[1]
    step = max(1, 2**21 // n)  # query rows per (step, n) float64 temporary
    piece = max(k + 1, _RERANK_PIECE // ref.shape[1])  # candidates per re-ranking call
    dev = ref.device
    for lo in range(0, q.size, step):
        rows = q[lo:lo + step]
        may = _possible(R[lo:lo + step], rows, bounds, rel, k)  # (s, n)
        for i, row in enumerate(rows):
            cand = np.flatnonzero(may[i])
            while cand.size > piece:  # the union of each piece's k best holds the k best
                cand = np.concatenate([
                    _rerank(ref, row[None], torch.as_tensor(cand[None, s:s + piece], device=dev),
                            min(k, cand[s:s + piece].size), metric)[0][0]
                    for s in range(0, cand.size, piece)])
            idx, dist = _rerank(ref, row[None], torch.as_tensor(cand[None], device=dev), k, metric)
            out_idx[row], out_dist[row] = idx[0], dist[0]


def _squared_norms(S: torch.Tensor) -> np.ndarray:
    """(n,) float64 squared norms of the rows of ``S`` (n, d), in chunks of 8 MB."""
    n, d = S.shape
    t = np.empty(n)
    chunk = max(1, 2**20 // d)
    host = S.device.type == "cpu" and _NUMPY_ON_CPU and S.dtype in (torch.float32, torch.float64)
    for lo in range(0, n, chunk):
        if host:
            rows = S[lo:lo + chunk].numpy()  # (c, d)
            t[lo:lo + chunk] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        else:
            rows = S[lo:lo + chunk].to(torch.float64)  # (c, d)
            t[lo:lo + chunk] = (rows * rows).sum(1).cpu().numpy()
    return t


def _expansion_bounds(t: np.ndarray, d: int, dtype: torch.dtype, device: torch.device) -> _Bounds:
    """Rounding bounds of the brute ranking ``|s_j|^2 - 2 s_i.s_j`` computed in ``dtype`` from
    the centred rows ``s`` rounded to ``dtype`` (``t_i = |s_i|^2`` in float64), for
    :func:`_certify` with zero residuals: ``|M_hat - D| <= gamma (t_i + t_j) + slack``.

    With ``u`` the unit roundoff of the products (:func:`_unit_roundoff`, and of the dtype)
    plus that of float64 (the centring): ``t`` (a float64 sum, ``d u64 t_i``) and its rounding
    to ``dtype`` (``u t_j``), the ``d``-term products of ``addmm`` and its final rounding
    (``gamma_d |s_i| |s_j|`` in any summation order, so ``(d + 3) u (t_i + t_j)``) and the
    rounding of the centred rows (relative ``u`` per entry, so ``|D_s - D| <= 4 u (t_i + t_j)``)
    add up to at most ``(d + 8) u (t_i + t_j)`` to first order; ``(2 d + 16) u`` is twice that.
    ``slack`` covers products that underflow (flushed to zero or not).
    """
    u = max(_unit_roundoff(dtype, device), float(torch.finfo(dtype).eps) / 2) + 2.0**-53
    gamma = 2.0 * (2 * d + 16) * u
    slack = 8.0 * (d + 4) * float(torch.finfo(dtype).tiny)
    return _Bounds(t, np.zeros(t.shape[0]), gamma, slack)


def _float64_search(P: _Prepared, rows: np.ndarray, k: int, metric: str, budget: int,
                    out_idx: np.ndarray, out_dist: np.ndarray) -> int:
    """Fallback of the brute search: the same certified search with float64 products of the
    rows centred in float64 (centring removes a common offset, float64 the rest of the
    rounding), column chunks converted on the fly (no float64 copy of X). Rows that still fail
    (neighbour gaps below float64 rounding against their centred norms) are settled by
    :func:`_local_search` and :func:`_pruned_rerank`; returns how many."""
    ref, dev = P.ref, P.ref.device
    n, d = ref.shape
    mu = P.center.to(dev)  # (d,) float64
    chunk = max(1, 2**20 // d)  # float64 column chunks of 8 MB
    rel = _rerank_error(ref)
    c = min(n - 1, k + _EXTRA_CANDIDATES)
    b = max(1, min(rows.size, budget // (16 * max(n, d))))  # (b, n) block and (b, d) queries
    buf = torch.empty((b, n), dtype=torch.float64, device=dev)
    t = torch.empty(n, dtype=torch.float64, device=dev)  # |c_j|^2, filled by the first block
    bounds = None
    n_direct = 0
    for lo in range(0, rows.size, b):
        q = rows[lo:lo + b]
        qt = torch.as_tensor(q, device=dev)
        Q = ref[qt].to(torch.float64) - mu  # (b, d)
        R = buf[: q.size]  # (b, n)
        for j in range(0, n, chunk):
            C = ref[j:j + chunk].to(torch.float64) - mu  # (s, d) centred in float64
            if bounds is None:
                t[j:j + chunk] = (C * C).sum(1)
            torch.addmm(t[None, j:j + chunk], Q, C.T, alpha=-2.0, out=buf[: q.size, j:j + chunk])
        if bounds is None:
            bounds = _expansion_bounds(t.cpu().numpy(), d, torch.float64, dev)
        R[torch.arange(q.size, device=dev), qt] = float("inf")
        n_direct += _certified_rerank(ref, R, q, c, k, metric, bounds, rel, True, out_idx,
                                      out_dist).size
    return n_direct


def _contiguous(q: np.ndarray) -> bool:
    return q.size > 0 and int(q[-1]) - int(q[0]) == q.size - 1


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


# ------------------------------------------------------------------------- low-rank pruning


def _with_lowrank(P: _Prepared, strategy: str, dtype: torch.dtype, seed: int) -> _Prepared:
    """``P`` with its projected rows when the low-rank search is used, else ``P`` unchanged."""
    d = P.ref.shape[1]
    if strategy == "auto" and d < 2 + _LOWRANK_MIN_SAVING:
        return P  # too few columns to save anything
    V = _sample_basis(P, seed, strategy == "auto")  # (d, r) or None
    if V is None:
        return P
    return replace(P, lowrank=_project(P, V, dtype, strategy == "auto"))


def _sample_basis(P: _Prepared, seed: int, auto: bool) -> np.ndarray | None:
    """(d, r) float64 orthonormal basis of the top principal directions of a seeded subsample
    of the centred rows: the smallest ``r`` leaving out at most ``_LOWRANK_TAIL`` of its
    variance. With ``auto``, None when pruning would not pay (``d < 2 r + 64``), or when the
    subsample cannot tell (``m`` rows show at most ``m - 1`` directions; trusted for ``r <= m/2``).

    The spectrum comes from the smaller Gram matrix (``C C^T`` (m, m) or ``C^T C`` (d, d)),
    on the CPU in float64; the basis is orthonormalised by Householder QR (any orthonormal
    basis keeps the search exact; a better one certifies more rows).
    """
    n, d = P.ref.shape
    m = min(n, _LOWRANK_SAMPLE)
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else np.arange(n)
    if P.ref.device.type == "cpu":
        S = P.ref.numpy()[rows]  # (m, d)
    else:
        S = P.ref[torch.as_tensor(rows, device=P.ref.device)].cpu().numpy()
    C = np.subtract(S, P.center.cpu().numpy())  # (m, d) float64, host
    # small dense algebra in numpy (no change to torch's global thread settings)
    G = C @ C.T if m < d else C.T @ C
    lam = np.clip(np.linalg.eigvalsh(G)[::-1], 0.0, None)  # descending
    tail = np.append(np.cumsum(lam[::-1])[::-1], 0.0)  # tail[j]: left out by the first j
    r = max(1, int(np.argmax(tail <= _LOWRANK_TAIL * tail[0])))
    if auto and (d < 2 * r + _LOWRANK_MIN_SAVING or 2 * r > m):
        log.debug("knn: rank %d of %d columns (subsample of %d rows), brute search", r, d, m)
        return None
    W = np.linalg.eigh(G)[1][:, ::-1][:, :r]  # top r eigenvectors
    V = C.T @ W if m < d else W  # (d, r) principal directions (scaled if m < d)
    return np.linalg.qr(V)[0]


def _unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit roundoff of products in ``dtype`` on ``device``: float32 products are assumed to
    round like TF32 or bfloat16 when any torch setting (legacy or per-backend) allows it."""
    if dtype == torch.float64:
        return 2.0**-53
    roundoff = {"highest": 2.0**-24, "ieee": 2.0**-24, "none": 2.0**-24, "high": 2.0**-11,
                "tf32": 2.0**-11}
    modes = []
    try:
        modes.append(torch.get_float32_matmul_precision())
    except RuntimeError:  # legacy and new settings mixed: assume the least precise
        modes.append("bf16")
    backends = [torch.backends, torch.backends.cuda.matmul if device.type == "cuda"
                else getattr(torch.backends.mkldnn, "matmul", None)]
    modes += [str(getattr(b, "fp32_precision", "none")) for b in backends if b is not None]
    if device.type == "cuda":
        try:
            modes.append("tf32" if torch.backends.cuda.matmul.allow_tf32 else "none")
        except RuntimeError:
            modes.append("bf16")
    return max(roundoff.get(m, 2.0**-8) for m in modes)


def _project(P: _Prepared, V: np.ndarray, dtype: torch.dtype, auto: bool) -> _LowRank:
    """Coordinates ``p_i = V^T c_i`` and residual norms ``rho_i = |c_i - V p_i|`` of the
    centred rows ``c_i = ref_i - mu``, all in float64 (the residual explicitly, not as
    ``|c|^2 - |p|^2``, which cancels), and the rounding margins of the projected ranking.
    numpy on the CPU (faster float64 elementwise work), torch on accelerators."""
    n, d = P.ref.shape
    r = V.shape[1]
    dev = P.ref.device
    sdtype = torch.float64 if dtype == torch.float64 else torch.float32
    cpu = dev.type == "cpu" and _NUMPY_ON_CPU
    ref = P.ref.numpy() if cpu else P.ref
    mu = P.center.numpy() if cpu else P.center
    Vx = V if cpu else torch.as_tensor(V, device=dev)
    proj = torch.empty((n, r), dtype=sdtype, device=dev)
    t = np.empty(n)
    rho = np.empty(n)
    norm_max = 0.0
    chunk = max(1, 2**20 // d)  # float64 chunks of 8 MB
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        if cpu:
            norm_max = max(norm_max, float(np.einsum("ij,ij->i", ref[lo:hi], ref[lo:hi],
                                                     dtype=np.float64).max()) ** 0.5)
            C = np.subtract(ref[lo:hi], mu)  # (c, d) float64
            p = C @ Vx  # (c, r)
            E = np.matmul(p, Vx.T)
            np.subtract(C, E, out=E)  # (c, d) residual, explicit
            rho2, p2 = np.einsum("ij,ij->i", E, E), np.einsum("ij,ij->i", p, p)
        else:
            rows = ref[lo:hi].to(torch.float64)  # (c, d)
            norm_max = max(norm_max, float((rows * rows).sum(1).max()) ** 0.5)
            C = rows - mu
            p = C @ Vx  # (c, r)
            E = torch.addmm(C, p, Vx.T, alpha=-1.0)  # (c, d) residual, explicit
            rho2, p2 = (E * E).sum(1).cpu().numpy(), (p * p).sum(1).cpu().numpy()
        rho[lo:hi] = np.sqrt(rho2)
        t[lo:hi] = p2 + rho2
        proj[lo:hi] = torch.as_tensor(p, device=dev)
    u = _unit_roundoff(sdtype, dev)
    u64 = 2.0**-53
    # Ranking error: rounding p and t to the search dtype, and the (r + 1)-term dot product of
    # addmm (|error| <= gamma_{r+1} |x|.|y|, any summation order), all <= (2r + 8) u (t_i + t_j);
    # doubled for safety. The float64 work (centring, projection, residual, the non-orthogonality
    # of V) is bounded by a few (d (sqrt(r) + 2) u64) (max |ref| + |mu|)^2; taken 64 times.
    gamma = 2.0 * (2 * r + 8) * u
    B = norm_max + float(np.linalg.norm(P.center.cpu().numpy()))
    slack = 64.0 * d * (np.sqrt(r) + 2.0) * u64 * B * B
    bias = torch.as_tensor(t, device=dev).to(sdtype)
    return _LowRank(proj, bias, t, rho, gamma, slack, auto)


def _lowrank_search(P: _Prepared, k: int, metric: str, budget: int,
                    out_idx: np.ndarray, out_dist: np.ndarray) -> np.ndarray:
    """Projected blockwise search with a per-row certificate (module docstring); certified rows
    are re-ranked and written in place. Returns the sorted rows left to the brute search."""
    L = P.lowrank
    Ps = L.proj  # (n, r)
    n = Ps.shape[0]
    c = min(n - 1, k + _LOWRANK_EXTRA)
    b = next(_blocks(n, n, budget, Ps.element_size()))[1]
    probe = min(b, _PROBE_ROWS)
    starts = [0, *range(probe, n, b)]
    buf = torch.empty((b, n), dtype=Ps.dtype, device=Ps.device)
    rho_max = float(L.rho.max())
    rel = _rerank_error(P.ref)
    failed = []
    for i, lo in enumerate(starts):
        hi = min(n, probe if i == 0 else lo + b)
        R = torch.addmm(L.bias[None, :], Ps[lo:hi], Ps.T, alpha=-2.0, out=buf[: hi - lo])  # (b, n)
        R.diagonal(lo).fill_(float("inf"))
        cand = _smallest(R, c)  # (b, c)
        vals = torch.gather(R, 1, cand)
        ok, keep = _certify(L.bounds, slice(lo, hi), cand.cpu().numpy(), vals.cpu().numpy(), k,
                            rho_max, rel)
        rows = lo + np.flatnonzero(ok)
        if rows.size:
            keep = torch.as_tensor(keep, device=Ps.device)
            out_idx[rows], out_dist[rows] = _rerank(P.ref, rows, keep, k, metric)
        failed.append(lo + np.flatnonzero(~ok))
        if i == 0 and L.auto and hi < n and failed[0].size > _PROBE_MAX_FAIL * (hi - lo):
            log.debug("knn: %d of %d probe rows failed the certificate, brute search",
                      failed[0].size, hi - lo)
            failed.append(np.arange(hi, n))
            break
    return np.concatenate(failed).astype(np.int64)


def _certify(L: _Bounds, q: slice | np.ndarray, cand: np.ndarray, vals: np.ndarray, k: int,
             rho_max: float, rel: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Which query rows ``q`` (a slice or indices) are certified, and the candidates of those
    rows that can still be among their ``k`` nearest, ordered by lower bound:
    ``(ok (b,) bool, cand (b_ok, w) int64)``.

    ``vals`` (b, c) are the computed ranking values ``t_j - 2 p_i.p_j`` of the candidates, so
    ``M_hat = t_i + vals`` estimates ``M_ij`` within ``gamma (t_i + t_j)`` (see :func:`_project`;
    for the brute search ``rho = 0``, ``M = D`` and the margins of :func:`_expansion_bounds`).
    Squared distances satisfy ``M - 2 rho_i rho_j - margin <= D <= M + 2 rho_i rho_j + margin``.
    A non-candidate has ``M_hat >= max(candidate M_hat)`` and ``t_j <= 2 t_i + 2 D``, hence
    ``D (1 + 2 gamma) >= max M_hat - 3 gamma t_i - 2 rho_i rho_max - slack``. The re-ranking
    computes ``D`` with relative error ``eps`` (plus ``tiny`` for underflow), so the row is exact
    when that lower bound, lowered by it, exceeds the ``k``-th smallest candidate upper bound,
    raised by it. A row with a non-finite candidate value (overflow) fails. Small (b, c)
    arrays: numpy on the host for every device.
    """
    eps, tiny = rel
    gamma = L.gamma
    ti, ri = L.t[q, None], L.rho[q, None]  # (b, 1)
    M = ti + vals.astype(np.float64)  # (b, c)
    spread = 2.0 * ri * L.rho[cand] + gamma * (ti + L.t[cand]) + L.slack
    upper_k = np.partition(M + spread, k - 1, axis=1)[:, k - 1]  # (b,)
    ceiling = upper_k * (1 + eps) + tiny  # >= the computed distance of k candidates
    if cand.shape[1] >= L.t.shape[0] - 1:  # every other row is a candidate
        ok = np.ones(ti.shape[0], dtype=bool)
    else:
        floor = M.max(1) - 3.0 * gamma * ti[:, 0] - 2.0 * ri[:, 0] * rho_max - L.slack
        ok = (floor / (1 + 2.0 * gamma)) * (1 - eps) - tiny > ceiling
        ok &= np.isfinite(M).all(1)  # an overflowed product bounds nothing
    lower = ((M - spread) * (1 - eps) - tiny)[ok]  # (b_ok, c) <= computed distances
    order = np.argsort(lower, axis=1)
    need = lower <= ceiling[ok, None]  # may be among the k nearest
    width = max(k, int(need.sum(1).max())) if need.shape[0] else k
    return ok, np.take_along_axis(cand[ok], order[:, :width], 1)


def _rerank_error(ref: torch.Tensor) -> tuple[float, float]:
    """(relative, absolute) error bound of the re-ranking's squared distances: the difference
    and square in ``ref``'s dtype, the float64 sum over ``d`` terms, doubled for safety; the
    absolute part covers squares that underflow."""
    d = ref.shape[1]
    u = 2.0**-24 if ref.dtype == torch.float32 else 2.0**-53
    return 2.0 * (3.0 * u + (d + 4) * 2.0**-53), 4.0 * d * float(torch.finfo(ref.dtype).tiny)


# ------------------------------------------------------------------------- re-ranking


def _rerank(ref, rows, cand, k, metric):
    """Distances of the candidates of the query ``rows`` (sorted int64) from direct coordinate
    differences (no cancellation: relative error ~ eps of X's dtype), sorted by (distance,
    index); the first ``k`` kept."""
    if ref.device.type == "cpu" and _NUMPY_ON_CPU:
        return _rerank_cpu(ref, rows, cand.numpy(), k, metric)
    d2 = _candidate_sqdist(ref, rows, cand)  # (b, c) float64
    key = torch.argsort(cand, dim=1)  # ties in distance are broken by index, on every backend
    cand, d2 = torch.gather(cand, 1, key), torch.gather(d2, 1, key)
    order = torch.argsort(d2, dim=1, stable=True)[:, :k]
    idx, d2 = torch.gather(cand, 1, order), torch.gather(d2, 1, order)
    dist = 0.5 * d2 if metric == "cosine" else torch.sqrt(d2)
    return idx.cpu().numpy(), dist.cpu().numpy()


def _rerank_cpu(ref: torch.Tensor, rows: np.ndarray, cand: np.ndarray, k: int, metric: str):
    """:func:`_rerank` on the CPU, in numpy (which releases the GIL): the rows are split
    between ``torch.get_num_threads()`` threads when there is enough work to share."""
    b, c = cand.shape
    idx = np.empty((b, k), dtype=np.int64)
    dist = np.empty((b, k), dtype=np.float64)

    def run(s: int, e: int) -> None:
        C = np.sort(cand[s:e], axis=1)  # (m, c) by index, so that equal distances keep it
        d2 = _sqdist_numpy(ref.numpy(), rows[s:e], C)  # (m, c) float64
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


def _sqdist_numpy(R: np.ndarray, rows: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(b, c) float64 squared distances between the rows ``rows`` (b,) of ``R`` and rows ``C``
    (b, c): candidate rows gathered in chunks of a few MB (one reused buffer), subtracted,
    squared and summed in float64 (pairwise summation)."""
    b, c, d = C.shape[0], C.shape[1], R.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    out = np.empty(C.shape, dtype=np.float64)  # (b, c)
    buf = np.empty((min(step, b), c, d), dtype=R.dtype)
    contiguous = _contiguous(rows)
    for s in range(0, b, step):
        e = min(s + step, b)
        q = R[rows[0] + s:rows[0] + e] if contiguous else R[rows[s:e]]  # (s, d)
        diff = np.take(R, C[s:e], axis=0, out=buf[: e - s])  # (s, c, d)
        diff -= q[:, None, :]
        np.square(diff, out=diff)
        out[s:e] = diff.sum(-1, dtype=np.float64)
    return out


def _candidate_sqdist(ref: torch.Tensor, rows: np.ndarray, cand: torch.Tensor) -> torch.Tensor:
    """(b, c) float64 squared distances between the rows ``rows`` of ``ref`` and their candidates.

    Torch version of :func:`_sqdist_numpy` for accelerators: candidate rows gathered in chunks
    of a few MB, subtracted, squared and summed in float64.
    """
    b, c, d = cand.shape[0], cand.shape[1], ref.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    rows_t = torch.as_tensor(rows, device=ref.device)
    d2 = torch.empty(cand.shape, dtype=torch.float64, device=cand.device)  # (b, c)
    for s in range(0, b, step):
        e = min(s + step, b)
        diff = ref.index_select(0, cand[s:e].reshape(-1)).view(e - s, c, d)  # (s, c, d)
        diff -= ref[rows_t[s:e], None, :]
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
    idx, dist = _rerank(P.ref, np.arange(n), c, c.shape[1], metric)
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
