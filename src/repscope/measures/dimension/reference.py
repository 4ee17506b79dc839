"""Out-of-sample local intrinsic dimension: the LID of new rows among a reference set.

Yin, Srinivasa and Chang ("Characterizing truthfulness in large language model generations
with local intrinsic dimension", ICML 2024) score a generation by the Levina-Bickel MLE of the
local dimension of its representation, with the neighbours drawn from a reference set of
representations. :func:`reference_lid` does that for every query row: its ``k`` nearest rows of
the reference come from :func:`repscope.neighbors.knn_query` (exact, certified like the in-set
search), and ``m_k(q) = (k - c) / sum_{j<k} log(T_k(q) / T_j(q))`` as in ``local_mle``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_array, check_choice, check_int
from repscope.measures.dimension._common import (
    _LOCAL,
    IDEstimate,
    _boot,
    _check_X,
    _ci_level,
    _wquantile,
)
from repscope.measures.dimension._core import mle_inverse_local
from repscope.neighbors import knn, knn_query
from repscope.registry import register

__all__ = ["reference_lid"]


def _fingerprint(R: Any) -> dict[str, Any]:
    A = np.ascontiguousarray(as_numpy(R))
    return {"shape": list(A.shape), "dtype": str(A.dtype),
            "sha256": hashlib.sha256(A.tobytes()).hexdigest()[:16]}


def positive_lengths(search: Callable[[int], np.ndarray], k: int, n_max: int) -> np.ndarray:
    """(m, k) the first ``k`` non-zero neighbour lengths of each row (NaN where fewer exist).

    ``search(kk)`` returns the (m, kk) ascending lengths of the ``kk`` nearest rows; rows at
    distance 0 (the query itself, or exact copies of it in the reference) carry no scale and
    are skipped, searching further as needed.
    """
    kk = min(k, n_max)
    while True:
        L = search(kk)  # (m, kk)
        zeros = (L <= 0).sum(1)  # zeros come first (ascending)
        if (kk - zeros >= k).all() or kk >= n_max:
            break
        kk = min(n_max, kk + int(zeros.max()))
    out = np.full((L.shape[0], k), np.nan)
    for z in np.unique(zeros):
        rows = zeros == z
        have = min(k, kk - int(z))
        out[rows, :have] = L[rows, z:z + have]
    return out


@register("reference_lid", **_LOCAL, min_samples=4)
def reference_lid(X: ArrayLike, *, reference: ArrayLike | None = None, k: int = 20,
                  unbiased: bool = True, summary: str = "median", metric: str = "euclidean",
                  n_boot: int = 200, seed: int = 0, ci_level: float = 0.95,
                  device: Any = None) -> IDEstimate:
    """Local ID of each row of X among the rows of ``reference`` (Yin et al., ICML 2024).

    ``m_k(x) = (k - c) / sum_{j=1}^{k-1} log(T_k(x) / T_j(x))`` (Levina and Bickel 2004;
    ``c = 2`` unbiased, else 1) with ``T_j(x)`` the distance from row ``x`` to its ``j``-th
    nearest row of ``reference`` (exact kNN queries of one set against another,
    :func:`repscope.neighbors.knn_query`). ``reference=None`` uses X itself, leaving each row
    out (then it equals ``local_mle(X, duplicates="keep")``). Reference rows at distance 0 from
    a query (copies of it) are skipped. ``diagnostics["local"]`` holds one value per row of
    X (NaN where fewer than ``k`` distinct reference rows exist), with quantiles; the value is
    the ``summary`` (median by default), with a bootstrap over the query rows. ``params``
    record a fingerprint (shape, dtype, SHA-256 prefix) of the reference, not its rows.
    ``device``: where the neighbour search runs (default: CPU, or the device of a tensor X).
    """
    fn = "reference_lid"
    X = _check_X(X, fn, 1 if reference is not None else 4)
    check_choice(metric, "metric", fn, ("euclidean", "cosine"))
    if reference is not None:
        R = check_array(reference, fn, name="reference", min_samples=3)
        if R.shape[1] != X.shape[1]:
            raise ValueError(f"{fn}: reference has {R.shape[1]} features but X has {X.shape[1]}; "
                             f"they must be rows of the same space.")
        n_max = R.shape[0]
        k = check_int(k, "k", fn, low=3, high=n_max, high_inclusive=True, high_name="n_reference")

        def search(kk: int) -> np.ndarray:
            return knn_query(X, R, kk, metric=metric, device=device).lengths()
    else:
        n_max = X.shape[0] - 1
        k = check_int(k, "k", fn, low=3, high=X.shape[0], high_name="n_samples")

        def search(kk: int) -> np.ndarray:
            return knn(X, kk, metric=metric, duplicates="keep", device=device).lengths()
    if not isinstance(unbiased, bool):
        raise ValueError(f"The 'unbiased' parameter of {fn} must be a bool. Got {unbiased!r} instead.")
    check_choice(summary, "summary", fn, ("median", "mean"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    L = positive_lengths(search, k, n_max)  # (m, k)
    ok = np.isfinite(L).all(1)
    local = np.full(L.shape[0], np.nan)
    local[ok] = 1.0 / mle_inverse_local(L[ok], k, unbiased)
    vals = local[ok]
    if vals.size < 1:
        raise ValueError(f"{fn}: no row of X has {k} reference rows at non-zero distance.")
    w = np.ones(vals.size)

    def stat(i: np.ndarray) -> float:
        v = vals[i]
        return float(v.mean()) if summary == "mean" else _wquantile(v, w[: v.size], 0.5)

    se, ci = _boot(stat, vals.size, n_boot, seed, ci_level)
    qs = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    diag = {"local": local, "quantile_levels": qs, "quantiles": np.quantile(vals, qs),
            "mean": float(vals.mean()), "median": float(np.median(vals)),
            "n_reference": int(n_max + (reference is None)), "n_undefined": int((~ok).sum())}
    params = {"reference": None if reference is None else _fingerprint(reference), "k": k,
              "unbiased": unbiased, "summary": summary, "metric": metric, "n_boot": n_boot,
              "seed": seed, "ci_level": ci_level,
              "device": None if device is None else str(device), "uncertainty": "bootstrap" if n_boot else "none"}
    return IDEstimate(fn, stat(np.arange(vals.size)), int(vals.size), se, ci, params, diag,
                      scale=float(np.median(L[ok, k - 1])), rank=k)
