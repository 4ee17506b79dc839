"""Local rank: the numerical rank of the covariance of each point's neighbourhood.

Patel and Shwartz-Ziv ("Learning to compress: local rank and information compression in deep
neural networks", 2024) define the local rank of a layer as the expected rank of the Jacobian
of its feature map at an input: the dimension of the feature manifold there. From the
representation alone (no model), the tangent space is seen through the neighbourhood: the
rows near ``x`` span, to first order, the image of that Jacobian. :func:`local_rank` counts the
directions of the neighbourhood's covariance above a stated threshold. It is the data-side
estimate of the paper's quantity, not its Jacobian computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_choice, check_float, check_int
from repscope.measures.dimension._common import (
    _LOCAL,
    IDEstimate,
    _boot,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _expand,
    _k,
    _table,
)
from repscope.neighbors import Neighbors
from repscope.registry import register

__all__ = ["local_rank"]


def neighbourhood_spectra(A: np.ndarray, idx: np.ndarray, include_self: bool = True) -> np.ndarray:
    """(m, min(k+1, d)) descending covariance eigenvalues of each row's neighbourhood.

    ``A`` (n, d) float64 rows, ``idx`` (m, k) neighbour rows of the rows ``0..m-1``; the
    neighbourhood is the row and its neighbours, centred on their mean.
    """
    m, k = idx.shape
    out = np.empty((m, min(k + int(include_self), A.shape[1])))
    step = max(1, 2**20 // max(1, (k + 1) * A.shape[1]))
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        B = A[idx[lo:hi]]  # (b, k, d)
        if include_self:
            B = np.concatenate([A[lo:hi, None, :], B], axis=1)  # (b, k + 1, d)
        B = B - B.mean(1, keepdims=True)
        s = np.linalg.svd(B, compute_uv=False)  # (b, min(k + 1, d)) descending
        out[lo:hi] = s**2 / B.shape[1]
    return out


@register("local_rank", **_LOCAL, min_samples=4)
def local_rank(X: ArrayLike, *, k: int = 20, rtol: float = 0.01, summary: str = "mean",
               metric: str = "euclidean", duplicates: str = "drop", n_boot: int = 200,
               seed: int = 0, ci_level: float = 0.95, neighbors: Neighbors | None = None,
               device: Any = None) -> IDEstimate:
    """Local rank per point: directions of its neighbourhood's covariance above ``rtol``.

    For row ``x`` with its ``k`` nearest neighbours, the ``k + 1`` rows are centred and the
    eigenvalues ``l_1 >= l_2 >= ...`` of their covariance computed; the local rank is
    ``#{i : l_i > rtol * l_1}`` (threshold rule: an eigenvalue counts when its variance is at
    least ``rtol`` of the largest, i.e. singular values above ``sqrt(rtol)`` of the largest;
    0.01 keeps directions whose spread is at least a tenth of the main one). The data-side
    estimate of the local rank of Patel and Shwartz-Ziv (2024), the rank of the feature map's
    Jacobian (see the module docstring). The value is the ``summary`` over points (mean by
    default; the median is an integer), with a bootstrap over points; ``diagnostics["local"]``
    holds one rank per input row, ``"eigenvalue_ratios"`` the (n, 8) leading ``l_i / l_1``.
    """
    fn = "local_rank"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=2)
    rtol = check_float(rtol, "rtol", fn, low=0.0, high=1.0, low_inclusive=False,
                       high_inclusive=False)
    check_choice(summary, "summary", fn, ("mean", "median"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    A = as_numpy(X).astype(np.float64)[t.nb.duplicates.kept]  # (m, d) rows of the table
    if metric == "cosine":
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
    ev = neighbourhood_spectra(A, t.nb.indices)  # (m, r)
    top = ev[:, :1]
    ratios = np.divide(ev, top, out=np.zeros_like(ev), where=top > 0)
    ranks = (ratios > rtol).sum(1).astype(np.float64)  # (m,)
    w = t.weights

    def stat(i: np.ndarray) -> float:
        v, wi = ranks[i], w[i]
        if summary == "mean":
            return float((v * wi).sum() / wi.sum())
        order = np.argsort(v, kind="stable")
        cw = np.cumsum(wi[order])
        return float(v[order][np.searchsorted(cw, 0.5 * cw[-1] - 1e-12)])

    se, ci = _boot(stat, ranks.size, n_boot, seed, ci_level)
    values, counts = np.unique(ranks, return_counts=True)
    pad = np.zeros((ratios.shape[0], 8))
    pad[:, : min(8, ratios.shape[1])] = ratios[:, :8]
    diag = {"local": _expand(ranks, t), "rank_values": values.astype(np.int64),
            "rank_counts": counts.astype(np.int64), "eigenvalue_ratios": _expand(pad, t),
            "mean": float(np.average(ranks, weights=w)), **_dup_diag(t)}
    params = {"k": k, "rtol": rtol, "summary": summary, "n_boot": n_boot, "seed": seed,
              "ci_level": ci_level, "uncertainty": "bootstrap" if n_boot else "none",
              **_common(t, metric, device)}
    return IDEstimate(fn, stat(np.arange(ranks.size)), int(ranks.size), se, ci, params, diag,
                      scale=float(np.median(t.lengths[:, k - 1])), rank=k)
