"""Recall@k of approximate and compressed indexes against the exact neighbour table.

An index (faiss: flat, HNSW, 8-bit scalar quantisation, product quantisation), optionally
built on the top ``dims`` principal coordinates, is queried with every row of X; its ``k``
neighbours (the row itself removed) are compared with the exact table of
:func:`repscope.neighbors.knn`. A returned row counts as a true neighbour when its exact
distance is at most the ``k``-th exact distance plus the float32 rounding of a distance
computation (``4 d u (|x_i|^2 + |x_j|^2)`` on centred rows, ``u = 2^-24``): ties, and rows the
float32 flat index cannot tell apart from the ``k``-th, are not counted as misses, so the flat
index has recall 1. Everything is computed on centred rows (the indexes are translation
invariant, and centring shrinks their rounding). The indexes are built single-threaded, so
results are deterministic. faiss is optional (``pip install faiss-cpu``).

References: Malkov and Yashunin (2018) for HNSW; Jegou, Douze and Schmid (2011) for product
quantisation; the recall-vs-intrinsic-dimension analyses this module serves are "The impacts
of data, ordering, and intrinsic dimensionality on recall in HNSW" (Elliott and Clark, 2024)
and "The curse of dense low-dimensional information retrieval" (Reimers and Gurevych, 2021).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_array, check_choice, check_int
from repscope.neighbors.search import Neighbors, knn

__all__ = ["INDEXES", "CompressionRow", "RecallResult", "compression_table", "recall_at_k"]

log = logging.getLogger(__name__)

INDEXES = ("flat", "hnsw", "sq8", "pq")


@dataclass(frozen=True)
class RecallResult:
    """Per-row recall@k of one index and what it costs."""

    recall: np.ndarray
    "(n,) fraction of each row's k exact neighbours the index returned (tie-aware)."
    found: np.ndarray
    "(n, k) int64 rows the index returned (self removed), nearest first by the index."
    exact: Neighbors
    "The exact table the index was compared with."
    bytes_per_vector: float
    "Bytes of one stored code (vector part only; HNSW's graph links are extra)."
    dims: int
    "Dimensions the index was built on (after PCA)."
    index: str
    "One of :data:`INDEXES`."


@dataclass(frozen=True)
class CompressionRow:
    """One line of :func:`compression_table`."""

    dims: int
    quantizer: str
    recall: float
    recall_ci: tuple[float, float]
    bytes_per_vector: float

    def to_dict(self) -> dict:
        return asdict(self)


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is a test dependency
        raise ImportError("recall_at_k needs faiss: pip install faiss-cpu") from err
    return faiss


def _pca_rows(A: np.ndarray, dims: int) -> np.ndarray:
    """(n, dims) coordinates of the centred rows A on their top ``dims`` principal axes."""
    if dims >= A.shape[1]:
        return A
    C = A.T @ A  # (d, d)
    w, V = np.linalg.eigh(C)
    V = V[:, np.argsort(w)[::-1][:dims]]
    return A @ V


def _pq_subquantizers(d: int, bytes_hint: int | None) -> int:
    """Sub-quantisers of a PQ code: a divisor of ``d``, about ``d / 4`` unless given."""
    target = bytes_hint if bytes_hint is not None else max(1, d // 4)
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    return min(divisors, key=lambda m: (abs(m - target), m))


def _build(faiss, A: np.ndarray, index: str, M: int, ef_construction: int, ef_search: int,
           pq_bytes: int | None):
    d = A.shape[1]
    if index == "flat":
        ix, nbytes = faiss.IndexFlatL2(d), 4.0 * d
    elif index == "hnsw":
        ix = faiss.IndexHNSWFlat(d, M)
        ix.hnsw.efConstruction = ef_construction
        ix.hnsw.efSearch = ef_search
        nbytes = 4.0 * d
    elif index == "sq8":
        ix, nbytes = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit), float(d)
    else:
        m = _pq_subquantizers(d, pq_bytes)
        nbits = int(min(8, max(1, np.floor(np.log2(max(A.shape[0], 2))))))  # 2^nbits <= n
        ix, nbytes = faiss.IndexPQ(d, m, nbits), m * nbits / 8.0
        if A.shape[0] < 39 * 2**nbits:  # faiss's own threshold for a well-trained codebook
            log.info("recall_at_k: training %d codebooks of %d centroids on %d rows only",
                     m, 2**nbits, A.shape[0])
        ix.pq.cp.min_points_per_centroid = 1  # the note above, instead of faiss's stderr one
    if not ix.is_trained:
        ix.train(A)
    ix.add(A)
    return ix, nbytes


def recall_at_k(
    X: ArrayLike,
    k: int = 10,
    *,
    index: str = "hnsw",
    dims: int | None = None,
    M: int = 16,
    ef_construction: int = 40,
    ef_search: int = 16,
    pq_bytes: int | None = None,
    exact: Neighbors | None = None,
    order: ArrayLike | None = None,
) -> RecallResult:
    """Recall@k of a faiss ``index`` built on X (n, d), optionally on ``dims`` PCA coordinates.

    Parameters
    ----------
    k : neighbours compared per row (self excluded).
    index : ``"flat"`` (exact, float32), ``"hnsw"`` (``M``, ``ef_construction``, ``ef_search``),
        ``"sq8"`` (8-bit scalar quantiser) or ``"pq"`` (product quantiser with ``pq_bytes``
        sub-quantisers of 8 bits; default about ``dims / 4``, a divisor of ``dims``).
    dims : build the index on the top ``dims`` principal coordinates (None: all ``d``).
    exact : the exact table of X (``knn(X, >= k, duplicates="keep")``) when already computed.
    order : insertion order, a permutation of ``range(n)``: row ``order[t]`` is added ``t``-th
        (None: row order). Results are reported per row of X whatever the order.
    """
    fn = "recall_at_k"
    X = check_array(X, fn, min_samples=3)
    n, d = X.shape
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    check_choice(index, "index", fn, INDEXES)
    dims = d if dims is None else check_int(dims, "dims", fn, low=1, high=d, high_inclusive=True,
                                             high_name="n_features")
    M = check_int(M, "M", fn, low=2)
    ef_construction = check_int(ef_construction, "ef_construction", fn, low=1)
    ef_search = check_int(ef_search, "ef_search", fn, low=1)
    if pq_bytes is not None:
        pq_bytes = check_int(pq_bytes, "pq_bytes", fn, low=1, high=dims, high_inclusive=True,
                             high_name="dims")
    if order is not None:
        order = np.asarray(order)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ValueError(f"{fn}: order must be a permutation of range({n}); got an array of "
                             f"shape {order.shape}.")
    if exact is None or exact.k < k or exact.duplicates.policy != "keep" or exact.n != n:
        exact = knn(X, k, duplicates="keep")
    exact = exact.head(k)
    A = as_numpy(X).astype(np.float64)
    A -= A.mean(0)  # (n, d) centred
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # deterministic graphs and codebooks
    try:
        B = np.ascontiguousarray(_pca_rows(A, dims), dtype=np.float32)  # (n, dims)
        if order is not None:
            B = B[order]  # inserted in this order; ids are positions in it
        ix, nbytes = _build(faiss, B, index, M, ef_construction, ef_search, pq_bytes)
        _, got = ix.search(B, min(n, k + 1))  # (n, k + 1)
        if order is not None:  # back to rows of X: query t is row order[t], id s is order[s]
            got = np.where(got >= 0, order[np.maximum(got, 0)], -1)
            back = np.empty_like(got)
            back[order] = got
            got = back
    finally:
        faiss.omp_set_num_threads(threads)
    found = _drop_self(got.astype(np.int64), k)
    recall = _tie_aware_recall(A, exact, found)
    return RecallResult(recall, found, exact, nbytes, dims, index)


def _drop_self(got: np.ndarray, k: int) -> np.ndarray:
    """(n, k): each row's results without the row itself (else without the last result)."""
    n = got.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        row = got[i][(got[i] != i)]
        row = row[:k]
        out[i, : row.size] = row
    return out


def _tie_aware_recall(A: np.ndarray, exact: Neighbors, found: np.ndarray) -> np.ndarray:
    """(n,) fraction of ``found`` (n, k) within the k-th exact distance plus float32 rounding."""
    n, k = found.shape
    d = A.shape[1]
    sq = np.einsum("ij,ij->i", A, A)  # (n,)
    kth2 = exact.distances[:, k - 1] ** 2  # (n,)
    hits = np.zeros(n, dtype=np.int64)
    step = max(1, 2**20 // max(1, k * d))
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        F = found[lo:hi]
        valid = F >= 0
        J = np.where(valid, F, 0)
        diff = A[J] - A[lo:hi, None, :]  # (b, k, d)
        d2 = np.einsum("bkd,bkd->bk", diff, diff)
        tol = 4.0 * d * 2.0**-24 * (sq[lo:hi, None] + sq[J])
        hits[lo:hi] = ((d2 <= kth2[lo:hi, None] + tol) & valid).sum(1)
    return np.minimum(hits, k) / k


def compression_table(
    X: ArrayLike,
    *,
    k: int = 10,
    dims: Sequence[int | None] = (None, 128, 64, 32, 16),
    quantizers: Sequence[str] = ("flat", "sq8", "pq"),
    pq_bytes: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> list[CompressionRow]:
    """Dimensions kept (PCA) x quantiser -> recall@k and bytes per vector, one exact table.

    ``dims`` above ``d`` are skipped (None means all ``d``); ``quantizers`` among ``"flat"``,
    ``"sq8"``, ``"pq"`` (and ``"hnsw"``). ``recall_ci`` is a percentile bootstrap over rows
    (``n_boot`` resamples, ``seed``) at 95 %.
    """
    fn = "compression_table"
    X = check_array(X, fn, min_samples=3)
    n, d = X.shape
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    for q in quantizers:
        check_choice(q, "quantizers", fn, INDEXES)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    kept = sorted({d if m is None else int(m) for m in dims if m is None or 0 < int(m) <= d},
                  reverse=True)
    if not kept:
        raise ValueError(f"{fn}: no entry of dims={list(dims)} is in [1, {d}].")
    exact = knn(X, k, duplicates="keep")
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, n, size=(n_boot, n)) if n_boot else None
    rows = []
    for m in kept:
        for q in quantizers:
            res = recall_at_k(X, k, index=q, dims=m, pq_bytes=pq_bytes, exact=exact)
            r = res.recall
            if boot is not None:
                means = r[boot].mean(1)
                ci = (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
            else:
                ci = (float("nan"), float("nan"))
            rows.append(CompressionRow(m, q, float(r.mean()), ci, res.bytes_per_vector))
            log.info("compression_table: dims=%d %s recall@%d=%.4f", m, q, k, r.mean())
    return rows
