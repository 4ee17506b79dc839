"""Neighbour-distance estimators of the global intrinsic dimension: TwoNN, MLE, GRIDE and the
correlation dimension.

Each takes ``neighbors=`` (a :class:`repscope.neighbors.Neighbors` on the same X), so one
table serves them all. Known bias: they underestimate once the dimension reaches ~10 and
more (``docs/dimension.md``); :mod:`.ess` is the estimator for high dimensions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from repscope._arrays import take_rows
from repscope._validate import (
    ArrayLike,
    check_choice,
    check_float,
    check_int,
)
from repscope.measures.dimension._common import (
    _DIM,
    IDEstimate,
    _boot,
    _cap,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _k,
    _table,
    _valid_rows,
    _wmean,
    _z,
)
from repscope.measures.dimension._core import (
    gride_mle,
    mle_inverse_local,
    twonn_linear_fit,
    twonn_linear_fit_sorted,
)
from repscope.neighbors import Neighbors, count_pairs_within
from repscope.registry import ScaleParam, register

__all__ = ["correlation_dimension", "gride", "mle", "twonn"]


# ============================================================================ TwoNN


@register("twonn", **_DIM, min_samples=4, default_panel=True,
          scale_param=ScaleParam("n1", via="gride", reach=2, start=1))
def twonn(X: ArrayLike, *, fit: str = "linear", discard_fraction: float = 0.1,
          metric: str = "euclidean", duplicates: str = "drop", n_boot: int = 200, seed: int = 0,
          ci_level: float = 0.95, neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """TwoNN (Facco et al. 2017): dimension from the ratio ``mu = r2 / r1`` of the two nearest
    neighbour distances, which is Pareto distributed, ``P(mu > x) = x^-d``, when the density is
    locally uniform up to ``r2``.

    ``fit="linear"`` (Facco's estimator): least-squares line through the origin of
    ``-log(1 - F(mu))`` against ``log(mu)`` after discarding the largest ``discard_fraction`` of
    the ratios; uncertainty by bootstrap over points. ``fit="mle"``: maximum likelihood
    ``d = (N - 1) / sum_i log(mu_i)`` (the unbiased form, Denti et al. 2022) with the analytic
    standard error ``d / sqrt(N)`` and the exact chi-square interval. Scale: median ``r2``.
    Cost: the neighbour table (2 columns) plus ``O(n log n)`` per bootstrap resample.
    """
    fn = "twonn"
    X = _check_X(X, fn, 4)
    check_choice(fit, "fit", fn, ("linear", "mle"))
    discard_fraction = check_float(discard_fraction, "discard_fraction", fn, low=0.0, high=1.0,
                                   high_inclusive=False)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, 2, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device,
               takes_k=False)
    ok = _valid_rows(t.lengths, 1, fn)
    L, w = t.lengths[ok], t.weights[ok]
    log_mu = np.log(L[:, 1] / L[:, 0])  # (m,)
    params = {"fit": fit, "discard_fraction": discard_fraction, "n_boot": n_boot, "seed": seed,
              "ci_level": ci_level, **_common(t, metric, device)}
    diag: dict[str, Any] = _dup_diag(t)
    if fit == "mle":
        W, S = w.sum(), float((w * log_mu).sum())
        d = (W - 1) / S
        se = d / math.sqrt(W)
        from scipy.special import gammaincinv  # 2 d S ~ chi2(2W), i.e. d S ~ Gamma(W, 1)

        a = (1 - ci_level) / 2
        ci = (float(gammaincinv(W, a) / S), float(gammaincinv(W, 1 - a) / S))
        params["uncertainty"] = "analytic"
    else:
        d, x, y = twonn_linear_fit(log_mu, w, discard_fraction)
        step = max(1, x.size // 200)
        diag.update(fit_log_mu=x[::step], fit_neg_log_survival=y[::step])
        order = np.argsort(log_mu, kind="stable")  # sort once: a resample's sorted order is
        rank = np.empty_like(order)  # the sorted ratios repeated by their resample counts
        rank[order] = np.arange(order.size)
        xs, ws = log_mu[order], w[order]

        def fit(i: np.ndarray) -> float:
            counts = np.bincount(rank[i], minlength=order.size)  # (m,)
            return twonn_linear_fit_sorted(np.repeat(xs, counts), np.repeat(ws, counts),
                                           discard_fraction)[0]

        se, ci = _boot(fit, log_mu.size, n_boot, seed, ci_level)
        params["uncertainty"] = "bootstrap" if n_boot else "none"
    return IDEstimate(fn, float(d), int(ok.sum()), se, ci, params, diag,
                      scale=float(np.median(L[:, 1])), rank=2)


# ============================================================================ MLE


@register("mle", **_DIM, min_samples=4, default_panel=True, scale_param=ScaleParam("k"))
def mle(X: ArrayLike, *, k: int = 20, average: str = "inverse", metric: str = "euclidean",
        duplicates: str = "drop", n_boot: int = 200, seed: int = 0, ci_level: float = 0.95,
        neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """Levina-Bickel (2004) maximum-likelihood dimension from the ``k`` nearest neighbours.

    With ``S(x) = sum_{j=1}^{k-1} log(T_k(x) / T_j(x))`` (``T_j`` the distance to the j-th
    neighbour), ``S(x)`` is Gamma(k - 1, d) distributed for a locally uniform density.
    ``average="inverse"`` (default; MacKay and Ghahramani 2005): ``d = 1 / mean_x(S(x) / (k-1))``,
    inverting the average of the unbiased estimates of ``1/d``. ``average="mean"``: the average
    of the per-point unbiased estimates ``(k - 2) / S(x)`` (Levina and Bickel's corrected form).
    Uncertainty: bootstrap over points (ignores the overlap of neighbourhoods, so it is a lower
    bound). Scale: median ``T_k``. Cost: the neighbour table (``k`` columns) plus ``O(n k)``,
    and ``O(n)`` per bootstrap resample.
    """
    fn = "mle"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=3)
    check_choice(average, "average", fn, ("inverse", "mean"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    L, w = t.lengths[ok], t.weights[ok]
    inverse = average == "inverse"
    inv = mle_inverse_local(L, k, unbiased=not inverse)  # (m,) S/(k-1) or S/(k-2)

    def stat(i: np.ndarray) -> float:
        return 1.0 / _wmean(inv[i], w[i]) if inverse else _wmean(1.0 / inv[i], w[i])

    se, ci = _boot(stat, inv.size, n_boot, seed, ci_level)
    params = {"k": k, "average": average, "n_boot": n_boot, "seed": seed,
              "ci_level": ci_level, "uncertainty": "bootstrap" if n_boot else "none",
              **_common(t, metric, device)}
    return IDEstimate(fn, stat(np.arange(inv.size)), int(ok.sum()), se, ci, params, _dup_diag(t),
                      scale=float(np.median(L[:, k - 1])), rank=k)


# ============================================================================ GRIDE


@register("gride", **_DIM, min_samples=4, default_panel=True,
          scale_param=ScaleParam("n1", reach=2, start=1))
def gride(X: ArrayLike, *, n1: int = 1, n2: int | None = None, k: int = 32,
          metric: str = "euclidean", duplicates: str = "drop", ci_level: float = 0.95,
          neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """GRIDE (Denti et al. 2022): maximum likelihood on the generalised ratio ``r_{n2} / r_{n1}``.

    With a locally uniform density up to ``r_{n2}``, ``mu = r_{n2} / r_{n1}`` has density
    ``d (mu^d - 1)^(n2-n1-1) / (B(n2-n1, n1) mu^(d(n2-1)+1))``; the MLE of ``d`` is the value
    (default ``n1 = 1``, ``n2 = 2 n1``: the TwoNN likelihood, as the anchors' GRIDE). Larger
    ``n1`` looks at a larger scale and averages out noise, but on reference data it reads lower
    at every ID >= 5 (n = 2500, balls/cubes/spheres/Gaussians: -7 % at ID 10 and -18 % at 20
    for ``n1 = 1``, -11 % and -23 % for ``n1 = 4``; ``benchmarks/id_design.md``), so the
    smallest scale is the default; raise ``n1`` on noisy data, guided by the curve. The multiscale curve (``n1 = 1, 2, 4, ...`` with ``n2 = 2 n1 <= k``) is in
    ``diagnostics`` (``curve_rank``, ``curve_id``, ``curve_stderr``, ``curve_scale`` = median
    ``r_{n2}``): a plateau is the scale range where the ID is well defined. Uncertainty: the
    analytic (observed Fisher information) standard error. Cost: the neighbour table (``k``
    columns) plus ``O(n log k)`` Newton work.
    """
    fn = "gride"
    X = _check_X(X, fn, 4)
    n = X.shape[0]
    k = _k(k, "k", fn, n, low=2)
    n1 = check_int(n1, "n1", fn, low=1, high=k, high_name="k")
    n2 = 2 * n1 if n2 is None else n2
    n2 = check_int(n2, "n2", fn, low=n1 + 1, high=k, high_inclusive=True, high_name="k")
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    L, w = t.lengths[ok], t.weights[ok]
    d, se = gride_mle(np.log(L[:, n2 - 1] / L[:, n1 - 1]), w, n1, n2)
    ranks = [r for r in (2**i for i in range(20)) if 2 * r <= k]
    curve = np.array([gride_mle(np.log(L[:, 2 * r - 1] / L[:, r - 1]), w, r, 2 * r) for r in ranks])
    z = _z(ci_level)
    diag = {"curve_rank": np.array(ranks), "curve_id": curve[:, 0], "curve_stderr": curve[:, 1],
            "curve_scale": np.array([float(np.median(L[:, 2 * r - 1])) for r in ranks]),
            **_dup_diag(t)}
    params = {"n1": n1, "n2": n2, "k": k, "ci_level": ci_level, "uncertainty": "analytic",
              **_common(t, metric, device)}
    return IDEstimate(fn, d, int(ok.sum()), se, (d - z * se, d + z * se), params, diag,
                      scale=float(np.median(L[:, n2 - 1])), rank=n2)


# ============================================================================ correlation dim


@register("correlation_dimension", **_DIM, min_samples=4, scale_param=ScaleParam("k2"))
def correlation_dimension(X: ArrayLike, *, k1: int = 5, k2: int = 20, n_radii: int = 8,
                          max_samples: int = 5000, metric: str = "euclidean",
                          duplicates: str = "drop", seed: int = 0,
                          device: Any = None) -> IDEstimate:
    """Correlation dimension (Grassberger and Procaccia 1983): the slope of ``log C(r)`` against
    ``log r``, ``C(r)`` the fraction of pairs closer than ``r``.

    The radii are ``n_radii`` log-spaced values between the medians of the ``k1``-th and
    ``k2``-th neighbour distances (so the fit covers small scales whatever the units). Pairs are
    counted blockwise (no ``n x n`` matrix) on at most ``max_samples`` rows drawn with ``seed``.
    Uncertainty: the least-squares standard error of the slope (a lower bound: pairs are not
    independent). ``duplicates="weight"`` is not available (pair counts are unweighted).
    Cost: the neighbour table plus ``O(m^2 d)`` pair counting on ``m = min(n, max_samples)`` rows;
    ``max_samples <= 50000``.
    """
    fn = "correlation_dimension"
    X = _check_X(X, fn, 4)
    n = X.shape[0]
    k2 = _k(k2, "k2", fn, n, low=2)
    k1 = check_int(k1, "k1", fn, low=1, high=k2, high_name="k2")
    n_radii = check_int(n_radii, "n_radii", fn, low=2)
    max_samples = check_int(max_samples, "max_samples", fn, low=k2 + 1)
    _cap(max_samples, "max_samples", fn, 50_000, "pair counting costs max_samples^2 d")
    check_choice(duplicates, "duplicates", fn, ("drop", "raise", "keep"))
    rows = np.arange(n)
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        X = take_rows(X, rows)
    t = _table(X, k2, fn, metric=metric, duplicates=duplicates, neighbors=None, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    kept = t.nb.duplicates.kept
    Xk = take_rows(X, kept)
    r_lo, r_hi = np.median(t.lengths[ok, k1 - 1]), np.median(t.lengths[ok, k2 - 1])
    # nudged off the data distances that define the medians, so rounding cannot flip a pair
    radii = np.geomspace(r_lo, r_hi, n_radii) * (1 - 1e-9)  # (n_radii,)
    q = radii**2 / 2 if metric == "cosine" else radii  # chord -> cosine distance
    m = Xk.shape[0]
    C = count_pairs_within(Xk, q, metric=metric, device=device, dtype=torch.float64) / (m * (m - 1))
    good = C > 0
    if good.sum() < 2:
        raise ValueError(f"{fn}: fewer than two radii with pairs inside; increase k1/k2.")
    x, y = np.log(radii[good]), np.log(C[good])
    A = np.vstack([x, np.ones_like(x)]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = max(1, x.size - 2)
    se = float(math.sqrt((resid @ resid) / dof / ((x - x.mean()) @ (x - x.mean()))))
    params = {"k1": k1, "k2": k2, "n_radii": n_radii, "max_samples": max_samples, "seed": seed,
              "uncertainty": "regression", **_common(t, metric, device)}
    diag = {"radii": radii, "correlation_integral": C, "rows_used": int(rows.size), **_dup_diag(t)}
    return IDEstimate(fn, float(coef[0]), int(m), se, None, params, diag,
                      scale=float(r_hi), rank=k2)
