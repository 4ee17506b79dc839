"""Retrieval recall of an approximate index against the exact neighbour table, vs local ID.

:func:`knn_recall` is :func:`repscope.neighbors.recall_at_k` as a registered measure: the mean
recall@k of an approximate (HNSW), compressed (PCA dimensions kept, 8-bit scalar or product
quantisation) or exact (flat) faiss index over every row of X, with the per-row recall set
against each row's local intrinsic dimension (Levina-Bickel MLE on the same exact table) and
its insertion order, the two factors "The impacts of data, ordering, and intrinsic
dimensionality on recall in HNSW" (Elliott and Clark, 2024) relate recall to; "The curse of
dense low-dimensional information retrieval" (Reimers and Gurevych, 2021) motivates the
dimensions-kept axis. The compression table (dimensions x quantiser -> recall and bytes) is
:func:`repscope.neighbors.compression_table` and ``repscope compression-table``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from repscope._validate import ArrayLike, check_array, check_choice, check_float, check_int
from repscope.measures.dimension._common import _boot
from repscope.measures.dimension._core import mle_inverse_local
from repscope.measures.similarity._common import make_estimate
from repscope.neighbors import INDEXES, knn, recall_at_k
from repscope.registry import register
from repscope.results import Estimate

__all__ = ["INSERTIONS", "knn_recall"]

INSERTIONS = ("given", "random", "id_ascending", "id_descending")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


@register("knn_recall", family="local_dimension", higher_is_better=True, bounds=(0.0, 1.0),
          min_samples=4)
def knn_recall(X: ArrayLike, *, k: int = 10, index: str = "hnsw", dims: int | None = None,
               M: int = 16, ef_construction: int = 40, ef_search: int = 16,
               pq_bytes: int | None = None, insertion: str = "given", n_bins: int = 5,
               n_boot: int = 200, seed: int = 0, ci_level: float = 0.95) -> Estimate:
    """Recall@k of a faiss index (HNSW, flat, SQ8, PQ; optionally on PCA dims) vs the exact table.

    For every row (as a query, itself excluded), the fraction of its ``k`` exact nearest
    neighbours (:func:`repscope.neighbors.knn`) among the ``k`` the index returns; a returned
    row within float32 rounding of the ``k``-th exact distance counts (ties are not misses), so
    ``index="flat"`` has recall 1. Value: mean recall, with a bootstrap CI over rows.
    ``diagnostics``: ``local`` (per-row recall), ``local_id`` (per-row Levina-Bickel MLE from
    the same exact table, ``k`` neighbours), ``spearman_recall_id`` and
    ``spearman_recall_order`` (rank correlation of recall with the local ID and with the
    insertion position), ``recall_by_id_bin`` over ``n_bins`` quantile bins
    of the local ID (``id_bin_edges``), and ``bytes_per_vector``. ``insertion``: the order
    rows enter the index, ``"given"`` (row order), ``"random"`` (seeded), ``"id_ascending"`` or
    ``"id_descending"`` (by local ID, the orderings Elliott and Clark vary). Other parameters:
    see :func:`repscope.neighbors.recall_at_k`.
    """
    fn = "knn_recall"
    X = check_array(X, fn, min_samples=4)
    n = X.shape[0]
    k = check_int(k, "k", fn, low=3, high=n, high_name="n_samples")
    n_bins = check_int(n_bins, "n_bins", fn, low=1)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = check_float(ci_level, "ci_level", fn, low=0.0, high=1.0, low_inclusive=False,
                           high_inclusive=False)
    check_choice(insertion, "insertion", fn, INSERTIONS)
    exact = knn(X, k, duplicates="keep")
    L = exact.lengths()
    local_id = np.full(n, np.nan)
    pos = L[:, 0] > 0
    local_id[pos] = 1.0 / mle_inverse_local(L[pos], k, True)
    order = None
    if insertion == "random":
        order = np.random.default_rng(seed).permutation(n)
    elif insertion != "given":
        key = np.where(np.isfinite(local_id), local_id, np.inf)
        order = np.argsort(key if insertion == "id_ascending" else -key, kind="stable")
    res = recall_at_k(X, k, index=index, dims=dims, M=M, ef_construction=ef_construction,
                      ef_search=ef_search, pq_bytes=pq_bytes, exact=exact, order=order)
    r = res.recall  # (n,)
    position = np.arange(n, dtype=np.float64) if order is None else np.argsort(order).astype(np.float64)
    edges = np.quantile(local_id[pos], np.linspace(0, 1, n_bins + 1)) if pos.any() else np.zeros(n_bins + 1)
    bins = np.clip(np.searchsorted(edges, local_id, side="right") - 1, 0, n_bins - 1)
    by_bin = np.array([r[pos & (bins == b)].mean() if (pos & (bins == b)).any() else np.nan
                       for b in range(n_bins)])
    se, ci = _boot(lambda i: float(r[i].mean()), n, n_boot, seed, ci_level)
    diag = {"local": r, "local_id": local_id, "spearman_recall_id": _spearman(r, local_id),
            "spearman_recall_order": _spearman(r, position),
            "recall_by_id_bin": by_bin, "id_bin_edges": edges,
            "bytes_per_vector": res.bytes_per_vector, "index_dims": res.dims,
            "perfect_fraction": float((r == 1).mean())}
    params = {"k": k, "index": index, "dims": dims, "M": M, "ef_construction": ef_construction,
              "ef_search": ef_search, "pq_bytes": pq_bytes, "insertion": insertion, "n_bins": n_bins, "n_boot": n_boot,
              "seed": seed, "ci_level": ci_level,
              "uncertainty": "bootstrap" if n_boot else "none",
              "interval": "sampling" if n_boot else "none", "indexes": list(INDEXES)}
    return make_estimate(fn, float(r.mean()), n, params, diag, stderr=se, ci=ci)
