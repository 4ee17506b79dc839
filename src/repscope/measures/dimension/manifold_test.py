"""The manifold (fibre-bundle) test: does the local dimension grow with the radius at a point?

Robinson, Dey and Chiang ("Token embeddings violate the manifold hypothesis", 2025) look, at
every token, at the number of points within radius ``r`` against ``r`` on log-log axes. On a
manifold the slope (the local dimension) is constant at small radii; under their more general
null, a fibre bundle, it may drop from a small-radius regime (fibre + base) to a large-radius
one (base) but never rise. A significant *increase* of the slope rejects the null at that
point: the neighbourhood is not a fibre bundle, hence not a manifold.

:func:`manifold_test` tests that null exactly under a locally uniform density. With ``T_j`` the
distance to the ``j``-th neighbour, the scaled log-spacings ``w_j = j log(T_{j+1} / T_j)``,
``j = 1..k-1``, are independent exponentials of rate ``m`` (the local dimension) when the
volume of balls grows like ``r^m`` (Renyi's representation of uniform order statistics; their
mean is the inverse Levina-Bickel estimate, the slope of log count vs log radius). The slope of
the inner neighbours (``j < k_inner``) and of the outer ones are two Gamma means, so under the
constant-slope null ``m_out / m_in ~ F(2 b, 2 a)`` exactly (``a = k_inner - 1``,
``b = k - k_inner``), and the one-sided p-value tests for a rise. This is our formulation of
the paper's null and alternative, not a re-implementation of its regression code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import f as f_dist

from repscope._validate import ArrayLike, check_float, check_int
from repscope.measures.dimension._common import (
    _LOCAL,
    IDEstimate,
    _check_X,
    _common,
    _dup_diag,
    _expand,
    _k,
    _table,
    _valid_rows,
)
from repscope.neighbors import Neighbors
from repscope.registry import register

__all__ = ["benjamini_hochberg", "manifold_test"]


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """(n,) Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1)."""
    n = p.size
    order = np.argsort(p)
    scaled = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def slope_change(lengths: np.ndarray, k_inner: int) -> tuple[np.ndarray, ...]:
    """Per row of ascending neighbour distances (m, k): inner slope, outer slope, overall
    slope and the one-sided p-value of a rise (see the module docstring)."""
    k = lengths.shape[1]
    j = np.arange(1, k)  # (k - 1,)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = j * np.log(lengths[:, 1:] / lengths[:, :-1])  # (m, k - 1)
    a, b = k_inner - 1, k - k_inner
    s_in, s_out = w[:, :a].sum(1), w[:, a:].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_in, m_out = a / s_in, b / s_out
        ratio = m_out / m_in  # ~ F(2b, 2a) under the null
        overall = (k - 1) / (s_in + s_out)
    p = f_dist.sf(ratio, 2 * b, 2 * a)
    return m_in, m_out, overall, p


@register("manifold_test", **{**_LOCAL, "bounds": (0.0, 1.0)}, min_samples=34)
def manifold_test(X: ArrayLike, *, k: int = 32, k_inner: int | None = None, alpha: float = 0.05,
                  metric: str = "euclidean", duplicates: str = "drop",
                  neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """Fibre-bundle / manifold test per point (Robinson et al. 2025): fraction of points rejected.

    At each point, the slope of log neighbour count vs log radius over its ``k`` nearest
    neighbours is estimated separately for the inner ``k_inner`` (default ``k // 2``) and the
    outer neighbours, as the Levina-Bickel MLE of each range; the null (a manifold, or a fibre
    bundle whose slope may only fall with the radius) is rejected when the outer slope is
    significantly larger. The p-value is exact for a locally uniform density on a locally
    flat set (``m_out / m_in ~ F(2(k - k_inner), 2(k_inner - 1))``; see the module
    docstring). p-values are adjusted across points with Benjamini-Hochberg; the value is the
    fraction of points rejected at ``alpha`` after adjustment. ``diagnostics`` (one entry per
    input row, the per-token table): ``p_value`` (also ``local``, the per-point values the
    report plots), ``p_adjusted``, ``rejected``,
    ``slope_inner``, ``slope_outer``, ``slope``, ``radius_inner``, ``radius``; and
    ``global_p`` (the smallest adjusted p-value: Simes' test of "the null holds everywhere",
    valid when the per-point p-values are independent or positively dependent).
    """
    fn = "manifold_test"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=4)
    k_inner = k // 2 if k_inner is None else k_inner
    k_inner = check_int(k_inner, "k_inner", fn, low=2, high=k - 1, high_inclusive=True,
                        high_name="k - 1")
    alpha = check_float(alpha, "alpha", fn, low=0.0, high=1.0, low_inclusive=False,
                        high_inclusive=False)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    L = t.lengths  # (m, k)
    ok = _valid_rows(L, 1, fn)
    m_in, m_out, slope, p = slope_change(np.where(ok[:, None], L, 1.0), k_inner)
    p = np.where(ok, p, np.nan)
    adj = np.full(p.shape, np.nan)
    adj[ok] = benjamini_hochberg(p[ok])
    rejected = np.where(ok, adj <= alpha, False)
    value = float(rejected[ok].mean())
    diag = {"local": _expand(p, t), "p_value": _expand(p, t), "p_adjusted": _expand(adj, t),
            "rejected": _expand(rejected, t), "slope_inner": _expand(np.where(ok, m_in, np.nan), t),
            "slope_outer": _expand(np.where(ok, m_out, np.nan), t),
            "slope": _expand(np.where(ok, slope, np.nan), t),
            "radius_inner": _expand(L[:, k_inner - 1], t), "radius": _expand(L[:, k - 1], t),
            "global_p": float(np.nanmin(adj)), "n_rejected": int(rejected.sum()),
            "raw_rejection_rate": float((p[ok] <= alpha).mean()), **_dup_diag(t)}
    params = {"k": k, "k_inner": k_inner, "alpha": alpha, "multiple_testing": "benjamini-hochberg",
              **_common(t, metric, device)}
    return IDEstimate(fn, value, int(ok.sum()), None, None, params, diag,
                      scale=float(np.median(L[ok, k - 1])), rank=k)
