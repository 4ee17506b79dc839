"""Intrinsic dimension: global estimators, local (per-point) estimators and ID-vs-scale curves.

Every kNN estimator takes ``neighbors=`` (a :class:`repscope.neighbors.Neighbors` computed on the
same X) so one neighbour table per representation serves them all; without it they compute
their own with :func:`repscope.neighbors.knn`. Duplicated rows are handled by the table's
``duplicates`` policy (default ``"drop"``); the policy and the duplicate fraction are recorded in
every result. Definitions, references and known biases: ``docs/dimension.md``.

Known bias: every neighbour-distance estimator (TwoNN, MLE, GRIDE, correlation dimension)
underestimates the dimension once it reaches ~10 and more (the number of points needed grows
exponentially with the dimension); ``ess`` is angle-based and calibrated, and is the one to use
there. PCA-based counts measure linear, not intrinsic, dimension.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
from repscope.measures._id_core import (
    broken_stick_rank,
    ess_calibration,
    ess_local_statistic,
    gride_mle,
    marchenko_pastur_rank,
    mle_inverse_local,
    participation_ratio_from_eigenvalues,
    twonn_linear_fit,
    twonn_linear_fit_sorted,
    variance_threshold_rank,
)
from repscope.neighbors import POLICIES, Neighbors, knn
from repscope.registry import register
from repscope.results import Estimate, result_type
from repscope.stats import Moments, bootstrap

__all__ = [
    "IDEstimate",
    "ScaleCurve",
    "correlation_dimension",
    "ess",
    "gride",
    "id_scale_curve",
    "local_mle",
    "local_twonn",
    "mle",
    "participation_ratio",
    "participation_ratio_from_eigenvalues",
    "pca",
    "pca_noise",
    "twonn",
]

log = logging.getLogger(__name__)

_EUCLID = {"rotation", "translation", "scale", "permutation"}
_DIM = dict(family="dimension", invariances=_EUCLID, bounds=(0.0, None))
_LOCAL = dict(family="local_dimension", invariances=_EUCLID, bounds=(0.0, None))


@result_type
@dataclass(frozen=True)
class IDEstimate(Estimate):
    """An intrinsic-dimension estimate and the scale it refers to."""

    scale: float | None = None
    "Length scale of the estimate: median distance to the largest neighbour rank used (kNN), or the RMS radius of the data (PCA-based)."
    rank: int | None = None
    "Largest neighbour rank the estimate uses (None for PCA-based estimates)."


# ============================================================================ shared plumbing


@dataclass(frozen=True)
class _Table:
    nb: Neighbors
    lengths: np.ndarray  # (m, k) Euclidean or chord lengths
    weights: np.ndarray  # (m,) multiplicities ('weight') or ones


def _table(X: ArrayLike, k: int, fn: str, *, metric: str, duplicates: str,
           neighbors: Neighbors | None, device: Any) -> _Table:
    """Validated neighbour table with ``k`` columns, reusing ``neighbors`` when compatible."""
    n, d = X.shape
    check_choice(metric, "metric", fn, ("euclidean", "cosine"))
    check_choice(duplicates, "duplicates", fn, POLICIES)
    nb = neighbors
    if nb is not None:
        if not isinstance(nb, Neighbors):
            raise TypeError(f"{fn} expects 'neighbors' as a repscope.neighbors.Neighbors; got {type(nb).__name__}.")
        if nb.duplicates.n_input != n or nb.n_features != d:
            raise ValueError(
                f"{fn} got a neighbour table computed on X of shape "
                f"({nb.duplicates.n_input}, {nb.n_features}), but X has shape ({n}, {d})."
            )
        if nb.k < k or nb.metric != metric or nb.duplicates.policy != duplicates:
            log.info("%s: the given neighbour table (k=%d, %s, %s) does not fit (k=%d, %s, %s); "
                     "computing a new one", fn, nb.k, nb.metric, nb.duplicates.policy, k, metric,
                     duplicates)
            nb = None
    if nb is None:
        try:
            nb = knn(X, k, metric=metric, duplicates=duplicates, device=device)
        except ValueError as err:
            raise ValueError(str(err).replace("of knn", f"of {fn}")) from None
    nb = nb.head(k)
    lengths = nb.lengths()
    w = nb.duplicates.multiplicity.astype(np.float64) if duplicates == "weight" else np.ones(nb.n)
    return _Table(nb, lengths, w)


def _valid_rows(lengths: np.ndarray, cols: int, fn: str) -> np.ndarray:
    """Rows whose first ``cols`` distances are positive; warns when some are not (policy 'keep')."""
    ok = lengths[:, 0] > 0 if cols >= 1 else np.ones(lengths.shape[0], bool)
    if not ok.all():
        warnings.warn(
            f"{fn}: {int((~ok).sum())} point(s) have a zero neighbour distance (duplicates kept); "
            "they are excluded. Use duplicates='drop' or 'weight'.", RuntimeWarning, stacklevel=3)
    if ok.sum() < 3:
        raise ValueError(f"{fn}: fewer than 3 points with non-zero neighbour distances.")
    return ok


def _check_X(X: ArrayLike, fn: str, min_samples: int = 3):
    return check_array(X, fn, min_samples=min_samples)


def _k(k: Any, name: str, fn: str, n: int, low: int = 2) -> int:
    return check_int(k, name, fn, low=low, high=n, high_name="n_samples")


def _ci_level(ci_level: float, fn: str) -> float:
    return check_float(ci_level, "ci_level", fn, low=0.0, high=1.0, low_inclusive=False,
                       high_inclusive=False)


def _boot(stat: Callable[[np.ndarray], float], m: int, n_boot: int, seed: int, ci_level: float):
    if n_boot == 0:
        return None, None
    se, ci, _ = bootstrap(stat, m, n_boot=n_boot, seed=seed, ci_level=ci_level)
    return se, ci


def _common(t: _Table, metric: str, device: Any) -> dict[str, Any]:
    return {"metric": metric, "device": None if device is None else str(device),
            "duplicates": t.nb.duplicates.policy, "duplicate_tol": t.nb.duplicates.tol,
            "neighbor_backend": t.nb.backend}


def _dup_diag(t: _Table) -> dict[str, Any]:
    rep = t.nb.duplicates
    return {"duplicate_fraction": float(rep.fraction), "n_input": rep.n_input,
            "neighbor_strategy": t.nb.strategy, "neighbor_rank": int(t.nb.rank),
            "neighbor_fallback_fraction": float(t.nb.fallback_fraction),
            "neighbor_float64_fraction": float(t.nb.float64_fraction),
            "neighbor_direct_fraction": float(t.nb.direct_fraction),
            "neighbor_exact": bool(t.nb.exact), "neighbor_workers": int(t.nb.workers),
            "neighbor_recall": None if t.nb.recall is None else float(t.nb.recall)}


def _expand(local: np.ndarray, t: _Table) -> np.ndarray:
    """Per-kept-row values -> one value per input row (duplicates share their group's value)."""
    return local[t.nb.duplicates.inverse]


def _wmean(v: np.ndarray, w: np.ndarray) -> float:
    return float((v * w).sum() / w.sum())


# ============================================================================ PCA-based


def _spectrum(X: ArrayLike) -> tuple[np.ndarray, Moments]:
    mom = Moments.init(X.shape[1]).update(as_numpy(X, np.float64))
    ev = np.linalg.eigvalsh(mom.covariance())[::-1].clip(min=0.0)  # (d,) descending
    if ev[0] <= 0:
        raise ValueError("The covariance of X is zero (constant data): no dimension to estimate.")
    return ev, mom


def _cov_boot(X: np.ndarray, fn_ev: Callable[[np.ndarray], float], n_boot: int, seed: int,
              ci_level: float):
    """Bootstrap over rows of a function of the covariance spectrum (O(n d^2) per resample)."""
    Xc = X - X.mean(0)  # (n, d)
    n = Xc.shape[0]

    def stat(idx: np.ndarray) -> float:
        c = np.bincount(idx, minlength=n).astype(np.float64)  # (n,) resample counts
        mu = c @ Xc / n  # (d,)
        C = (Xc.T * c) @ Xc / n - np.outer(mu, mu)
        ev = np.linalg.eigvalsh(C * n / (n - 1))[::-1].clip(min=0.0)
        return fn_ev(ev) if ev[0] > 0 else float("nan")

    return _boot(stat, n, n_boot, seed, ci_level)


def _pca_result(name, value, ev, X, params, diag, n_boot, seed, ci_level, fn_ev):
    se, ci = _cov_boot(as_numpy(X, np.float64), fn_ev, n_boot, seed, ci_level)
    rms = float(math.sqrt(ev.sum()))
    diag = {"eigenvalues": ev, "explained_variance_ratio": ev / ev.sum(), **diag}
    params = {**params, "n_boot": n_boot, "seed": seed, "ci_level": ci_level,
              "uncertainty": "bootstrap" if n_boot else "none"}
    return IDEstimate(name, float(value), int(X.shape[0]), se, ci, params, diag, scale=rms)


@register("pca", **_DIM, min_samples=3, default_panel=True)
def pca(X: ArrayLike, *, variance: float = 0.95, n_boot: int = 20, seed: int = 0,
        ci_level: float = 0.95) -> IDEstimate:
    """Linear dimension: the fewest principal components explaining ``variance`` of the total.

    ``value = min{m : sum_{i<=m} l_i / sum_i l_i >= variance}`` with ``l_i`` the eigenvalues of
    the sample covariance (float64, via the streaming :class:`repscope.stats.Moments`). Counts
    linear directions, so it overestimates the intrinsic dimension of curved manifolds and
    counts noise dimensions. Uncertainty: bootstrap over rows (``n_boot``, 0 disables).
    Reference: Jolliffe, *Principal Component Analysis* (2002), sec. 6.1.1.
    """
    fn = "pca"
    X = _check_X(X, fn)
    variance = check_float(variance, "variance", fn, low=0.0, high=1.0, low_inclusive=False)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    ev, _ = _spectrum(X)
    value = variance_threshold_rank(ev, variance)
    return _pca_result(fn, value, ev, X, {"variance": variance}, {}, n_boot, seed, ci_level,
                       lambda e: variance_threshold_rank(e, variance))


@register("pca_noise", **_DIM, min_samples=3)
def pca_noise(X: ArrayLike, *, rule: str = "marchenko_pastur", n_boot: int = 20, seed: int = 0,
              ci_level: float = 0.95) -> IDEstimate:
    """Noise-aware linear dimension: principal components standing out of a noise model.

    ``rule="marchenko_pastur"``: eigenvalues above the bulk edge ``s2 (1 + sqrt(p/n))^2`` of
    isotropic noise, with the noise variance ``s2`` re-estimated from the remaining eigenvalues
    until the count is stable (Marchenko and Pastur 1967; cf. Gavish and Donoho 2014).
    ``rule="broken_stick"``: components whose variance share exceeds the broken-stick
    expectation ``(1/d) sum_{j>=i} 1/j`` (Frontier 1976; Jackson 1993). The Marchenko-Pastur
    rule needs noise that is roughly isotropic; both count linear directions.
    Uncertainty: bootstrap over rows (``n_boot``, 0 disables).
    """
    fn = "pca_noise"
    X = _check_X(X, fn)
    check_choice(rule, "rule", fn, ("marchenko_pastur", "broken_stick"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    ev, _ = _spectrum(X)
    n = X.shape[0]
    if rule == "broken_stick":
        count = broken_stick_rank
        diag: dict[str, Any] = {}
    else:
        def count(e: np.ndarray) -> int:
            return marchenko_pastur_rank(e, n)[0]
        r, s2 = marchenko_pastur_rank(ev, n)
        diag = {"noise_variance": s2, "bulk_edge": s2 * (1 + math.sqrt((ev.size - r) / n)) ** 2}
    return _pca_result(fn, count(ev), ev, X, {"rule": rule}, diag, n_boot, seed, ci_level, count)


@register("participation_ratio", **_DIM, min_samples=3, default_panel=True)
def participation_ratio(X: ArrayLike, *, n_boot: int = 20, seed: int = 0,
                        ci_level: float = 0.95) -> IDEstimate:
    """Participation ratio of the covariance spectrum, ``(sum_i l_i)^2 / sum_i l_i^2``.

    A continuous linear dimension: 1 when one direction carries all the variance, ``d`` when all
    carry the same (Gao et al. 2017; Recanatesi et al. 2019). This is the one implementation in
    repscope (:func:`participation_ratio_from_eigenvalues`), shared with the spectrum measures.
    Uncertainty: bootstrap over rows (``n_boot``, 0 disables).
    """
    fn = "participation_ratio"
    X = _check_X(X, fn)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    ev, _ = _spectrum(X)
    return _pca_result(fn, participation_ratio_from_eigenvalues(ev), ev, X, {}, {}, n_boot, seed,
                       ci_level, participation_ratio_from_eigenvalues)


# ============================================================================ TwoNN


@register("twonn", **_DIM, min_samples=4, default_panel=True)
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
    """
    fn = "twonn"
    X = _check_X(X, fn, 4)
    check_choice(fit, "fit", fn, ("linear", "mle"))
    discard_fraction = check_float(discard_fraction, "discard_fraction", fn, low=0.0, high=1.0,
                                   high_inclusive=False)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, 2, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
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


@register("mle", **_DIM, min_samples=4, default_panel=True)
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
    bound). Scale: median ``T_k``.
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


@register("gride", **_DIM, min_samples=4, default_panel=True)
def gride(X: ArrayLike, *, n1: int = 4, n2: int | None = None, k: int = 32,
          metric: str = "euclidean", duplicates: str = "drop", ci_level: float = 0.95,
          neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """GRIDE (Denti et al. 2022): maximum likelihood on the generalised ratio ``r_{n2} / r_{n1}``.

    With a locally uniform density up to ``r_{n2}``, ``mu = r_{n2} / r_{n1}`` has density
    ``d (mu^d - 1)^(n2-n1-1) / (B(n2-n1, n1) mu^(d(n2-1)+1))``; the MLE of ``d`` is the value
    (default ``n1 = 4``, ``n2 = 2 n1``). Larger ``n1`` looks at a larger scale and averages out
    noise. The multiscale curve (``n1 = 1, 2, 4, ...`` with ``n2 = 2 n1 <= k``) is in
    ``diagnostics`` (``curve_rank``, ``curve_id``, ``curve_stderr``, ``curve_scale`` = median
    ``r_{n2}``): a plateau is the scale range where the ID is well defined. Uncertainty: the
    analytic (observed Fisher information) standard error.
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


def _z(ci_level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + ci_level / 2)


# ============================================================================ correlation dim


@register("correlation_dimension", **_DIM, min_samples=4)
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
    """
    from repscope.neighbors import count_pairs_within

    fn = "correlation_dimension"
    X = _check_X(X, fn, 4)
    n = X.shape[0]
    k2 = _k(k2, "k2", fn, n, low=2)
    k1 = check_int(k1, "k1", fn, low=1, high=k2, high_name="k2")
    n_radii = check_int(n_radii, "n_radii", fn, low=2)
    max_samples = check_int(max_samples, "max_samples", fn, low=k2 + 1)
    check_choice(duplicates, "duplicates", fn, ("drop", "raise", "keep"))
    rows = np.arange(n)
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        X = X[torch.as_tensor(rows)] if isinstance(X, torch.Tensor) else X[rows]
    t = _table(X, k2, fn, metric=metric, duplicates=duplicates, neighbors=None, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    kept = t.nb.duplicates.kept
    Xk = X[torch.as_tensor(kept)] if isinstance(X, torch.Tensor) else X[kept]
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


# ============================================================================ ESS (high ID)


def _ess_local(X: ArrayLike, t: _Table, k: int, device: Any) -> np.ndarray:
    """Per kept row: the ESS statistic of the point and its k neighbours, centred at their mean."""
    kept = t.nb.duplicates.kept
    ref = as_torch(X, device=device).to(torch.float64)[torch.as_tensor(kept, device=device)]  # (m, d)
    idx = torch.as_tensor(t.nb.indices[:, :k], device=ref.device)  # (m, k)
    m, d = ref.shape
    out = np.empty(m)
    step = max(1, 2**22 // ((k + 1) * d))
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        pts = torch.cat([ref[lo:hi, None, :], ref[idx[lo:hi]]], dim=1)  # (b, k+1, d)
        pts = pts - pts.mean(1, keepdim=True)
        G = torch.bmm(pts, pts.transpose(1, 2)).cpu().numpy()  # (b, k+1, k+1)
        out[lo:hi] = ess_local_statistic(G)
    return out


def _invert(curve: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Dimension m (real, by linear interpolation) whose reference statistic equals ``s``."""
    dims = np.arange(1, curve.size + 1, dtype=np.float64)
    return np.interp(s, curve, dims)


@register("ess", **_DIM, min_samples=4)
def ess(X: ArrayLike, *, k: int = 20, max_dim: int = 64, n_sim: int = 2000, seed: int = 0,
        metric: str = "euclidean", duplicates: str = "drop", n_boot: int = 200,
        ci_level: float = 0.95, neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """Expected simplex skewness (Johnsson, Soneson and Fontes 2015): an angle-based estimator
    with low bias at high dimension.

    For each point and its ``k`` neighbours, centred at their mean (vectors ``v_a``), the
    statistic ``s = sum_{a<b} |v_a||v_b||sin theta_ab| / sum_{a<b} |v_a||v_b|`` grows with the
    dimension; it depends on angles only, not on how distances scale with ``n``, which is what
    makes distance-based estimators underestimate at ID >= 10. The mean ``s`` over points is
    inverted through the reference curve of ``k`` points uniform in an ``m``-ball with their
    centre (simulated with ``n_sim`` neighbourhoods and ``seed``, ``m = 1..max_dim``, linear
    interpolation). Values at ``max_dim`` are censored there (a warning says so).
    Uncertainty: bootstrap over points of the mean statistic.

    Curvature bias: a bent neighbourhood spreads angles at first order in curvature x
    neighbourhood size (distance ratios only at second order), so ESS reads above the true ID
    on curved manifolds, e.g. ``1 + 0.65 * pi * k / n`` on a circle and ~1.3 on the suite's
    1-D curves at n = 1000, k = 20; the excess vanishes as ``k / n`` shrinks
    (``docs/dimension.md``, "ESS on curves").
    """
    fn = "ess"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=2)
    max_dim = check_int(max_dim, "max_dim", fn, low=2)
    n_sim = check_int(n_sim, "n_sim", fn, low=10)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    Xm = _unit_rows(X) if metric == "cosine" else X
    s = _ess_local(Xm, t, k, device)[ok]  # (m,)
    w = t.weights[ok]
    curve = _ess_curve(k, max_dim, n_sim, seed, _wmean(s, w))
    value = float(_invert(curve, np.array([_wmean(s, w)]))[0])
    if value >= max_dim - 1e-9:
        warnings.warn(f"{fn}: the estimate reached max_dim={max_dim}; increase max_dim.",
                      RuntimeWarning, stacklevel=2)
    se, ci = _boot(lambda i: float(_invert(curve, np.array([_wmean(s[i], w[i])]))[0]), s.size,
                   n_boot, seed, ci_level)
    params = {"k": k, "max_dim": max_dim, "n_sim": n_sim, "seed": seed, "n_boot": n_boot,
              "ci_level": ci_level, "uncertainty": "bootstrap" if n_boot else "none",
              **_common(t, metric, device)}
    diag = {"statistic": _wmean(s, w), "reference_curve": curve, **_dup_diag(t)}
    return IDEstimate(fn, value, int(ok.sum()), se, ci, params, diag,
                      scale=float(np.median(t.lengths[ok, k - 1])), rank=k)


def _ess_curve(k: int, max_dim: int, n_sim: int, seed: int, stat: float) -> np.ndarray:
    """The reference curve up to the smallest grid 8, 16, 32, ... (capped at ``max_dim``) that
    passes ``stat`` twice over. Prefixes of the curve do not depend on its length (same random
    stream), so the result is the same as computing it up to ``max_dim``, only cheaper."""
    m = min(8, max_dim)
    while True:
        curve = ess_calibration(k, m, n_sim, seed)
        if m == max_dim or (curve[m // 2 - 1] > stat):
            return curve
        m = min(2 * m, max_dim)


def _unit_rows(X: ArrayLike) -> Any:
    if isinstance(X, torch.Tensor):
        return X / torch.linalg.vector_norm(X, dim=1, keepdim=True)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# ============================================================================ local ID


def _local_result(fn, local_kept, t, ok, summary, n_boot, seed, ci_level, params, rank, scale):
    vals, w = local_kept[ok], t.weights[ok]
    full = np.full(local_kept.shape, np.nan)
    full[ok] = vals
    per_input = _expand(full, t)  # (n_input,)

    def stat(i: np.ndarray) -> float:
        if summary == "mean":
            return _wmean(vals[i], w[i])
        return _wquantile(vals[i], w[i], 0.5)

    se, ci = _boot(stat, vals.size, n_boot, seed, ci_level)
    qs = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    diag = {"local": per_input, "quantile_levels": qs,
            "quantiles": np.array([_wquantile(vals, w, q) for q in qs]),
            "mean": _wmean(vals, w), "median": _wquantile(vals, w, 0.5), **_dup_diag(t)}
    params = {**params, "summary": summary, "n_boot": n_boot, "seed": seed, "ci_level": ci_level,
              "uncertainty": "bootstrap" if n_boot else "none"}
    return IDEstimate(fn, stat(np.arange(vals.size)), int(ok.sum()), se, ci, params, diag,
                      scale=scale, rank=rank)


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    """Weighted quantile, inverted-CDF definition (smallest v with cumulative weight >= q)."""
    if w[0] == 1 and (w == 1).all():
        return float(np.quantile(v, q, method="inverted_cdf"))  # O(n) partition
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cw, q * cw[-1] - 1e-12)])


@register("local_mle", **_LOCAL, min_samples=4, default_panel=True)
def local_mle(X: ArrayLike, *, k: int = 20, unbiased: bool = True, summary: str = "median",
              metric: str = "euclidean", duplicates: str = "drop", n_boot: int = 200,
              seed: int = 0, ci_level: float = 0.95, neighbors: Neighbors | None = None,
              device: Any = None) -> IDEstimate:
    """Local intrinsic dimension per point: Levina-Bickel ``m_k(x)`` from its ``k`` neighbours.

    ``m_k(x) = (k - c) / sum_{j=1}^{k-1} log(T_k(x) / T_j(x))`` (``c = 2`` unbiased, else 1;
    Levina and Bickel 2004). ``diagnostics["local"]`` holds one value per input row (duplicates
    share their representative's value), with quantiles, mean and median; the value is the
    ``summary`` (median by default: local estimates are right-skewed). Uncertainty: bootstrap
    over points of the summary.
    """
    fn = "local_mle"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=3)
    if not isinstance(unbiased, bool):
        raise ValueError(f"The 'unbiased' parameter of {fn} must be a bool. Got {unbiased!r} instead.")
    check_choice(summary, "summary", fn, ("median", "mean"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    with np.errstate(divide="ignore"):
        local = 1.0 / mle_inverse_local(np.where(t.lengths > 0, t.lengths, 1.0), k, unbiased)
    params = {"k": k, "unbiased": unbiased, **_common(t, metric, device)}
    return _local_result(fn, local, t, ok, summary, n_boot, seed, ci_level, params, k,
                         float(np.median(t.lengths[ok, k - 1])))


@register("local_twonn", **_LOCAL, min_samples=4)
def local_twonn(X: ArrayLike, *, k: int = 20, summary: str = "median", metric: str = "euclidean",
                duplicates: str = "drop", n_boot: int = 200, seed: int = 0,
                ci_level: float = 0.95, neighbors: Neighbors | None = None,
                device: Any = None) -> IDEstimate:
    """Local TwoNN: the TwoNN maximum likelihood over each point's neighbourhood.

    For point ``x`` with neighbours ``N_{k-1}(x)``, ``S = {x} u N_{k-1}(x)`` (``k`` points):
    ``d(x) = (k - 1) / sum_{j in S} log(r2_j / r1_j)`` (the unbiased TwoNN MLE, Facco et al.
    2017, restricted to the neighbourhood, as in DADApy's local estimates). Less sensitive to
    the density than the distance-based local MLE, noisier at small ``k``. ``diagnostics``
    as for ``local_mle``.
    """
    fn = "local_twonn"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=3)
    check_choice(summary, "summary", fn, ("median", "mean"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, max(k - 1, 2), fn, metric=metric, duplicates=duplicates, neighbors=neighbors,
               device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mu = np.where(ok, np.log(t.lengths[:, 1] / t.lengths[:, 0]), np.nan)  # (m,)
    S = np.concatenate([log_mu[:, None], log_mu[t.nb.indices[:, : k - 1]]], axis=1)  # (m, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        local = (np.isfinite(S).sum(1) - 1) / np.nansum(S, axis=1)
    ok = ok & np.isfinite(local) & (local > 0)
    params = {"k": k, **_common(t, metric, device)}
    return _local_result(fn, local, t, ok, summary, n_boot, seed, ci_level, params, k,
                         float(np.median(t.lengths[ok, min(k - 1, t.nb.k) - 1])))


# ============================================================================ scale curves


@dataclass(frozen=True)
class ScaleCurve:
    """An ID-vs-scale curve of one estimator."""

    estimator: str
    "Registered name of the estimator."
    by: str
    "'rank' (neighbour rank / neighbourhood size) or 'subsample' (number of points)."
    x: np.ndarray
    "Neighbour ranks, or subsample sizes."
    scale: np.ndarray
    "Length scale of each point of the curve (the estimate's ``scale``)."
    value: np.ndarray
    "The estimates."
    stderr: np.ndarray
    "Their standard errors (NaN when the estimator gives none)."
    param: str | None = None
    "The estimator parameter varied for ``by='rank'``."


#: estimator -> (name of the rank parameter, name of the estimator actually called)
_RANK_PARAM = {"twonn": ("n1", "gride"), "gride": ("n1", "gride"), "mle": ("k", "mle"),
               "local_mle": ("k", "local_mle"), "local_twonn": ("k", "local_twonn"),
               "ess": ("k", "ess"), "correlation_dimension": ("k2", "correlation_dimension")}


def id_scale_curve(estimator: str, X: ArrayLike, *, by: str = "rank",
                   values: list[int] | None = None, seed: int = 0,
                   neighbors: Neighbors | None = None, **params: Any) -> ScaleCurve:
    """The ID of ``X`` by ``estimator`` as the scale grows.

    ``by="rank"``: vary the neighbourhood size (``k`` for MLE/ESS/local estimators, ``n1`` with
    ``n2 = 2 n1`` for GRIDE, and for TwoNN its generalisation GRIDE, since TwoNN is GRIDE at
    ``n1 = 1``); one neighbour table serves every point of the curve. Default ranks: powers of 2.
    ``by="subsample"``: re-estimate on nested random subsets of ``n, n/2, n/4, ...`` rows
    (seeded), the decimation protocol of Facco et al. 2017: the typical neighbour distance
    grows as the sample shrinks. ``params`` are passed to the estimator.
    """
    fn = "id_scale_curve"
    check_choice(estimator, "estimator", fn, sorted(_RANK_PARAM))
    check_choice(by, "by", fn, ("rank", "subsample"))
    X = _check_X(X, fn, 4)
    n = X.shape[0]
    from repscope import registry

    if by == "rank":
        pname, target = _RANK_PARAM[estimator]
        if values is None:  # powers of two: n1 = 1, 2, 4, ... or k = 4, 8, 16, ...
            low, cap = (1, n // 8) if pname == "n1" else (4, n // 4)
            values = [v for v in (2**i for i in range(12)) if low <= v <= max(low, cap)]
        values = [check_int(v, "values", fn, low=1, high=n, high_name="n_samples") for v in values]
        need = max(2 * v if pname == "n1" else v for v in values)
        if pname == "n1":
            params.setdefault("k", need)
        metric = params.get("metric", "euclidean")
        dup = params.get("duplicates", "drop")
        nb = neighbors
        if target != "correlation_dimension" and (nb is None or nb.k < need):
            nb = knn(X, need, metric=metric, duplicates=dup, device=params.get("device"))
        fn_est = registry.get(target).fn
        res = []
        for v in values:
            kw = {**params, pname: v}
            if target != "correlation_dimension":
                kw["neighbors"] = nb
            res.append(fn_est(X, **kw))
        return _curve(estimator, by, np.array(values), res, pname)
    if values is None:
        values = [n // 2**i for i in range(12) if n // 2**i >= 64] or [n]
    values = [check_int(v, "values", fn, low=4, high=n, high_inclusive=True, high_name="n_samples")
              for v in values]
    order = np.random.default_rng(seed).permutation(n)
    fn_est = registry.get(estimator).fn
    res = []
    for size in values:
        rows = np.sort(order[:size])  # nested subsets
        sub = X[torch.as_tensor(rows)] if isinstance(X, torch.Tensor) else X[rows]
        res.append(fn_est(sub, **params))
    return _curve(estimator, by, np.array(values), res, None)


def _curve(name, by, x, res, pname) -> ScaleCurve:
    se = np.array([np.nan if r.stderr is None else r.stderr for r in res], dtype=float)
    return ScaleCurve(name, by, x, np.array([r.scale for r in res], dtype=float),
                      np.array([r.value for r in res], dtype=float), se, pname)
