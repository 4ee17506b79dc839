"""GeoMLE (Gomtsyan, Mokrov, Panov and Maximov 2019, "Geometry-aware maximum likelihood
estimation of intrinsic dimension", ACML): the Levina-Bickel MLE extrapolated to zero
neighbourhood radius by a polynomial regression over the neighbourhood size.

At finite radius ``R`` the local MLE is biased by curvature and by the non-uniformity of the
density (both grow with ``R``); GeoMLE regresses the estimates ``m_k`` on ``R_k`` and ``R_k^2``
for ``k = k1..k2`` and reports the intercept, the estimate at ``R = 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validate import ArrayLike, check_choice, check_float, check_int
from repscope.measures.dimension._common import (
    _DIM,
    IDEstimate,
    _boot,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _k,
    _table,
    _valid_rows,
)
from repscope.neighbors import Neighbors
from repscope.registry import ScaleParam, register

__all__ = ["geomle", "geomle_fit", "ridge_intercept"]


def ridge_intercept(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float,
                    degree: int = 2) -> np.ndarray:
    """Intercepts of weighted ridge regressions ``y ~ a0 + a1 x + ... + a_deg x^deg`` (the slope
    coefficients penalised by ``alpha``, the intercept not), one per row of ``x``, ``y``, ``w``
    (shape ``(b, p)``): ``minimise sum_j w_j (y_j - a0 - sum_i a_i x_j^i)^2 + alpha |a|^2``."""
    F = np.stack([x**i for i in range(1, degree + 1)], axis=-1)  # (b, p, deg)
    W = w / w.sum(1, keepdims=True)
    Fm = (W[..., None] * F).sum(1, keepdims=True)  # weighted means (b, 1, deg)
    ym = (W * y).sum(1, keepdims=True)  # (b, 1)
    Fc, yc = F - Fm, y - ym
    A = np.einsum("bpi,bp,bpj->bij", Fc, w, Fc) + alpha * np.eye(degree)
    rhs = np.einsum("bpi,bp,bp->bi", Fc, w, yc)
    coef = np.linalg.solve(A, rhs[..., None])[..., 0]  # (b, deg)
    return ym[:, 0] - (Fm[:, 0] * coef).sum(1)


def geomle_fit(lengths: np.ndarray, k1: int, k2: int, alpha: float, variant: str,
               w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """GeoMLE on a neighbour table ``lengths`` (m, >= k2): ``(estimate, m_k (m, K), R_k (m, K))``.

    ``m_k(x) = (k - 2) / sum_{j<k} log(T_k / T_j)`` (Levina-Bickel, unbiased form) and
    ``R_k(x) = T_k``, with ``R`` in units of the median ``T_{k2}`` (scale invariant).
    ``variant="fast"`` (fastGeoMLE): regress the point-averaged ``m_k`` on the averaged ``R_k``,
    weights ``1 / std_x(m_k)``. ``variant="pointwise"`` (GeoMLE): one regression per point,
    weights ``sqrt(k - 3)`` (the inverse standard deviation of ``m_k`` under the Gamma law,
    standing in for the paper's bootstrap standard deviation), then the mean of the
    intercepts. Weighted by ``w`` (duplicate multiplicities) in the averages.
    """
    logs = np.log(lengths[:, :k2])  # (m, k2)
    ks = np.arange(k1, k2 + 1)
    csum = np.cumsum(logs, axis=1)  # sum_{j<=k} log T_j
    S = ks * logs[:, ks - 1] - csum[:, ks - 1]  # sum_{j<k} log(T_k / T_j), (m, K)
    with np.errstate(divide="ignore"):
        mk = (ks - 2) / S
    R = lengths[:, ks - 1] / np.median(lengths[:, k2 - 1])
    if variant == "fast":
        W = w / w.sum()
        mean_m, mean_R = W @ mk, W @ R
        sd = np.sqrt(np.maximum(W @ (mk - mean_m) ** 2, 1e-300))
        est = ridge_intercept(mean_R[None], mean_m[None], 1.0 / sd[None], alpha)[0]
    else:
        wk = np.broadcast_to(np.sqrt(ks - 3.0), mk.shape)
        est = float(np.average(ridge_intercept(R, mk, wk, alpha), weights=w))
    return float(est), mk, R


@register("geomle", **_DIM, min_samples=6, scale_param=ScaleParam("k2", start=16))
def geomle(X: ArrayLike, *, k1: int = 10, k2: int = 40, alpha: float = 5e-3,
           variant: str = "fast", metric: str = "euclidean", duplicates: str = "drop",
           n_boot: int = 100, seed: int = 0, ci_level: float = 0.95,
           neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """GeoMLE (Gomtsyan et al. 2019): the Levina-Bickel MLE regressed on the neighbourhood
    radius (degree 2, ridge ``alpha``) over ``k = k1..k2`` and extrapolated to radius 0.

    ``variant="fast"``: the paper's fastGeoMLE (regression of point averages);
    ``"pointwise"``: its GeoMLE (one regression per point, intercepts averaged). Definition and
    the two deviations (one neighbour table instead of bootstrap resamples; radii in units of
    the median ``T_{k2}``, so the ridge penalty is scale free):
    :func:`repscope.measures.dimension.geomle.geomle_fit`. The value is clipped to
    ``[0, n_features]`` as in the paper. Uncertainty: bootstrap over points (sampling only).
    Cost: the neighbour table (``k2`` columns) plus ``O(n (k2 - k1))`` per fit.
    """
    fn = "geomle"
    X = _check_X(X, fn, 6)
    n, d_amb = X.shape
    k2 = _k(k2, "k2", fn, n, low=5)
    k1 = check_int(k1, "k1", fn, low=4, high=k2, high_name="k2")
    alpha = check_float(alpha, "alpha", fn, low=0.0)
    check_choice(variant, "variant", fn, ("fast", "pointwise"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k2, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    L, w = t.lengths[ok], t.weights[ok]

    def stat(i: np.ndarray) -> float:
        return float(np.clip(geomle_fit(L[i], k1, k2, alpha, variant, w[i])[0], 0, d_amb))

    value, mk, R = geomle_fit(L, k1, k2, alpha, variant, w)
    se, ci = _boot(stat, L.shape[0], n_boot, seed, ci_level)
    params = {"k1": k1, "k2": k2, "alpha": alpha, "variant": variant, "n_boot": n_boot,
              "seed": seed, "ci_level": ci_level, "uncertainty": "bootstrap" if n_boot else "none",
              **_common(t, metric, device)}
    diag = {"k": np.arange(k1, k2 + 1), "mle_by_k": np.average(mk, axis=0, weights=w),
            "radius_by_k": np.average(R, axis=0, weights=w), "unclipped": value, **_dup_diag(t)}
    return IDEstimate(fn, float(np.clip(value, 0, d_amb)), int(ok.sum()), se, ci, params, diag,
                      scale=float(np.median(L[:, k2 - 1])), rank=k2)
