"""Covariance spectrum measures: eigenvalues, power-law decay, effective rank, entropy, stable rank.

All measures here are functions of the centred sample covariance ``C = Xc^T Xc / (n - 1)`` with
eigenvalues ``lambda_1 >= ... >= lambda_d >= 0``, so each is streamable: the registered
``compute`` from :class:`~repscope.stats.Moments` is the measure's one implementation, and the
batch function applies it to the moments of all rows (see :mod:`.stream`).

Eigenvalues are computed in float64 whatever the input dtype. A covariance with zero trace
(constant data) makes the normalised measures undefined: they return NaN with a RuntimeWarning.
Zero-variance columns are allowed: they are zero eigenvalues. Every spectral result records
``diagnostics["finite_sample_*"]`` and warns (:class:`FiniteSampleWarning`) when n is too small
for its spectrum (``n <= d`` or fewer than 10 rows per effective dimension; see
``_finite_sample``).

Conventions that papers use under the same names are separate measures: ``effective_rank``
centres the rows, ``effective_rank_uncentred`` is Roy and Vetterli's definition on the matrix as
given; ``spectral_entropy`` is the entropy of the centred covariance spectrum,
``von_neumann_entropy`` is Kim et al.'s (2023) VNE of row-normalised, uncentred rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, as_numpy, check_array, check_int
from repscope.measures._finite_sample import finite_sample_check, participation_ratio_of
from repscope.measures.dimension._core import participation_ratio_from_eigenvalues
from repscope.measures.spectrum.stream import (
    CovarianceAccumulator,
    check_state,
    covariance_eigenvalues,
    degenerate,
    entropy,
    moments_of,
)
from repscope.registry import Streaming, register
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = [
    "effective_rank",
    "effective_rank_from_eigenvalues",
    "effective_rank_uncentred",
    "power_law_alpha",
    "power_law_fit",
    "spectral_entropy",
    "spectrum",
    "stable_rank",
    "von_neumann_entropy",
]

_INV = {"rotation", "translation", "scale", "permutation"}


def _finite(fn: str, state: Moments, ev: np.ndarray) -> dict[str, Any]:
    """The finite-sample record (and warning) for a spectrum of ``state.n`` rows."""
    return finite_sample_check(fn, state.n, state.d, participation_ratio_of(ev))


# ----------------------------------------------------------------------------- spectrum
def _spectrum(state: Moments, *, method: str = "exact", n_components: int | None = None,
              device: str | None = None, seed: int = 0) -> Estimate:
    check_state(state, "spectrum")
    ev = covariance_eigenvalues(state, method=method, n_components=n_components, device=device,
                                seed=seed, fn="spectrum")  # (d,) or (n_components,)
    total = float(np.trace(state.m2) / (state.n - 1))
    m2 = state.m2
    pr = float(np.trace(m2) ** 2 / np.sum(m2 * m2)) if total > 0 else float("nan")  # exact, any method
    diag: dict[str, Any] = {"eigenvalues": ev, "total_variance": total,
                            "rank_limit": min(state.n - 1, state.d),
                            **finite_sample_check("spectrum", state.n, state.d, pr)}
    if total > 0:
        diag["explained_variance_ratio"] = ev / total
        diag["cumulative_explained_variance"] = np.cumsum(ev) / total
        diag["participation_ratio"] = float(participation_ratio_from_eigenvalues(ev)) if method == "exact" else float("nan")
    return Estimate(
        measure="spectrum", value=total, n_samples=state.n,
        params={"method": method, "n_components": n_components, "device": device, "seed": seed},
        diagnostics=diag,
    )


@register("spectrum", family="spectrum", invariances=_INV - {"scale"}, bounds=(0.0, None),
          default_panel=True, accumulator=Streaming(CovarianceAccumulator, _spectrum))
def spectrum(X: ArrayLike, *, method: str = "exact", n_components: int | None = None,
             device: str | None = None, seed: int = 0) -> Estimate:
    """Eigenvalues of the centred sample covariance; value = total variance ``tr(C)``.

    ``C = (X - mean)^T (X - mean) / (n - 1)`` with eigenvalues ``lambda_1 >= ... >= lambda_d``;
    the value is ``tr(C) = sum_i lambda_i`` (the total variance, which the report pairs with the
    spectrum plot). ``diagnostics``: ``eigenvalues`` (descending, all ``d``, at most ``n - 1``
    non-zero), ``explained_variance_ratio`` ``lambda_i / tr(C)``, its cumulative curve,
    ``participation_ratio`` and ``rank_limit = min(n - 1, d)``.
    ``method="randomized"`` returns only the top ``n_components`` eigenvalues (Halko et al.
    2011), for large ``d``. ``device`` (e.g. ``"cuda"``) runs the covariance product and the
    eigendecomposition there, in float64. Not comparable across widths (total variance grows with d).
    """
    return _spectrum(moments_of(X, "spectrum", device=device), method=method, n_components=n_components,
                     device=device, seed=seed)


# ----------------------------------------------------------------------------- power law
def power_law_fit(ev: np.ndarray, rank_min: int = 1, rank_max: int | None = None,
                  fn: str = "power_law_fit") -> dict[str, Any]:
    """Least-squares fit of ``log lambda_r = c - alpha log r`` over ranks ``[rank_min, rank_max]``.

    Ranks are 1-based. ``rank_max=None`` uses every rank whose eigenvalue exceeds
    ``1e-12 lambda_1`` (numerically non-zero). Returns alpha, its OLS standard error, R^2,
    the intercept and the resolved range.
    """
    ev = np.asarray(ev, dtype=np.float64)
    n_pos = int(np.sum(ev > ev[0] * 1e-12)) if ev.size and ev[0] > 0 else 0
    rank_min = check_int(rank_min, "rank_min", fn, low=1)
    hi = n_pos if rank_max is None else check_int(rank_max, "rank_max", fn, low=rank_min + 2)
    hi = min(hi, n_pos)
    if hi - rank_min + 1 < 3:
        return {"alpha": degenerate(fn, f"fewer than 3 positive eigenvalues in ranks "
                                        f"[{rank_min}, {hi}]"),
                "stderr": float("nan"), "r2": float("nan"), "intercept": float("nan"),
                "fit_range": (rank_min, hi)}
    r = np.arange(rank_min, hi + 1, dtype=np.float64)  # (m,)
    x, y = np.log(r), np.log(ev[rank_min - 1: hi])  # (m,), (m,)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    se = float(np.sqrt((resid**2).sum() / (x.size - 2) / ((x - x.mean()) ** 2).sum()))
    return {"alpha": float(-slope), "stderr": se, "r2": r2, "intercept": float(intercept),
            "fit_range": (rank_min, hi)}


def _power_law_alpha(state: Moments, *, rank_min: int = 1, rank_max: int | None = None) -> Estimate:
    check_state(state, "power_law_alpha")
    ev = covariance_eigenvalues(state, fn="power_law_alpha")  # (d,)
    fit = power_law_fit(ev, rank_min, rank_max, fn="power_law_alpha")
    lo, hi = fit["fit_range"]
    return Estimate(
        measure="power_law_alpha", value=fit["alpha"], n_samples=state.n, stderr=fit["stderr"],
        params={"rank_min": rank_min, "rank_max": rank_max},
        diagnostics={"eigenvalues": ev, "r2": fit["r2"], "intercept": fit["intercept"],
                     "fit_range": (int(lo), int(hi)),
                     **_finite("power_law_alpha", state, ev)},
    )


@register("power_law_alpha", family="spectrum", invariances=_INV, default_panel=True,
          accumulator=Streaming(CovarianceAccumulator, _power_law_alpha))
def power_law_alpha(X: ArrayLike, *, rank_min: int = 1, rank_max: int | None = None) -> Estimate:
    """Power-law decay exponent alpha of the covariance spectrum, ``lambda_r ~ r^(-alpha)``.

    Fitted by ordinary least squares of ``log lambda_r`` on ``log r`` over the 1-based ranks
    ``[rank_min, rank_max]`` (Stringer, Pachitariu et al. 2019, "High-dimensional geometry of
    population responses in visual cortex", Nature; they fit ranks 11-500 of neural data).
    ``rank_max=None`` fits every numerically non-zero eigenvalue, which includes the
    noise-dominated tail when n is not much larger than d: set the range explicitly for data
    with a noise floor. ``stderr`` is the OLS standard error of the slope;
    ``diagnostics["r2"]`` the goodness of fit and ``diagnostics["fit_range"]`` the ranks used.
    Comparable across widths only over the same rank range.
    """
    return _power_law_alpha(moments_of(X, "power_law_alpha"), rank_min=rank_min, rank_max=rank_max)


# ----------------------------------------------------------------------------- effective rank
def effective_rank_from_eigenvalues(ev: np.ndarray) -> float:
    """Roy-Vetterli effective rank from covariance eigenvalues (singular values = sqrt(ev))."""
    s = np.sqrt(np.clip(np.asarray(ev, dtype=np.float64), 0, None))  # (d,)
    if s.sum() <= 0:
        return degenerate("effective_rank", "the covariance is zero: constant data")
    return float(np.exp(entropy(s / s.sum())))


def _effective_rank(state: Moments) -> Estimate:
    check_state(state, "effective_rank")
    ev = covariance_eigenvalues(state, fn="effective_rank")  # (d,)
    return Estimate(measure="effective_rank", value=effective_rank_from_eigenvalues(ev),
                    n_samples=state.n, params={"convention": "centred"},
                    diagnostics={"eigenvalues": ev,
                                 **_finite("effective_rank", state, ev)})


@register("effective_rank", family="spectrum", invariances=_INV, bounds=(1.0, None),
          default_panel=True, accumulator=Streaming(CovarianceAccumulator, _effective_rank))
def effective_rank(X: ArrayLike) -> Estimate:
    """Effective rank of the centred data matrix (Roy and Vetterli 2007, EUSIPCO).

    With ``sigma_i`` the singular values of ``X - mean`` (``sigma_i ~ sqrt(lambda_i)``) and
    ``p_i = sigma_i / sum_j sigma_j``: ``erank = exp(-sum_i p_i log p_i)``, in ``[1, min(n, d)]``.
    An isotropic Gaussian gives nearly ``d``; ``r`` equal directions plus small noise give
    ``r``. Note that it uses singular values, not eigenvalues; ``spectral_entropy`` is the
    eigenvalue form. A count of dimensions: comparable across widths as an absolute number.
    NaN with a warning for constant data. Roy and Vetterli define it on a matrix as given,
    without centring: that is :func:`effective_rank_uncentred` (a common offset then counts as
    one dominant direction and lowers the value).
    """
    return _effective_rank(moments_of(X, "effective_rank"))


# ----------------------------------------------------------------------------- spectral entropy
def _spectral_entropy(state: Moments, *, normalized: bool = False) -> Estimate:
    check_state(state, "spectral_entropy")
    ev = covariance_eigenvalues(state, fn="spectral_entropy")  # (d,)
    total = ev.sum()
    if total <= 0:
        value = degenerate("spectral_entropy", "the covariance is zero: constant data")
        h = value
    else:
        h = entropy(ev / total)
        value = h / np.log(state.d) if normalized and state.d > 1 else h
    return Estimate(measure="spectral_entropy", value=float(value), n_samples=state.n,
                    params={"normalized": normalized, "convention": "centred_covariance"},
                    diagnostics={"eigenvalues": ev, "entropy_nats": float(h),
                                 "exp_entropy": float(np.exp(h)),
                                 **_finite("spectral_entropy", state, ev)})


@register("spectral_entropy", family="spectrum", invariances=_INV, bounds=(0.0, None),
          accumulator=Streaming(CovarianceAccumulator, _spectral_entropy))
def spectral_entropy(X: ArrayLike, *, normalized: bool = False) -> Estimate:
    """Von Neumann entropy of the trace-normalised covariance, in nats.

    ``rho = C / tr(C)`` has eigenvalues ``p_i = lambda_i / sum_j lambda_j``;
    ``S(rho) = -sum_i p_i log p_i`` in ``[0, log d]`` (von Neumann 1932; used for
    representations e.g. by Giraldo, Rao and Principe 2014 as matrix-based entropy with
    alpha -> 1). ``normalized=True`` divides by ``log d`` (then in ``[0, 1]``).
    ``diagnostics["exp_entropy"]`` is ``exp(S)``, an eigenvalue-based effective dimension.
    NaN with a warning for constant data. Centred (translation invariant): the "VNE" of Kim et
    al. 2023 normalises rows and does not centre; that is :func:`von_neumann_entropy`.
    """
    return _spectral_entropy(moments_of(X, "spectral_entropy"), normalized=normalized)


# ----------------------------------------------------------------------------- stable rank
def _stable_rank(state: Moments) -> Estimate:
    check_state(state, "stable_rank")
    ev = covariance_eigenvalues(state, fn="stable_rank")  # (d,)
    value = ev.sum() / ev[0] if ev[0] > 0 else degenerate("stable_rank", "constant data")
    return Estimate(measure="stable_rank", value=float(value), n_samples=state.n, params={},
                    diagnostics={"eigenvalues": ev,
                                 **_finite("stable_rank", state, ev)})


@register("stable_rank", family="spectrum", invariances=_INV, bounds=(1.0, None),
          accumulator=Streaming(CovarianceAccumulator, _stable_rank))
def stable_rank(X: ArrayLike) -> Estimate:
    """Stable (numerical) rank of the centred data: ``||Xc||_F^2 / ||Xc||_2^2 = sum_i lambda_i / lambda_1``.

    In ``[1, rank]``; a continuous, perturbation-robust lower bound on the rank (Rudelson and
    Vershynin 2007, "Sampling from large matrices", J. ACM). Counts dimensions, so it is
    comparable across widths as an absolute number. NaN with a warning for constant data.
    """
    return _stable_rank(moments_of(X, "stable_rank"))



# ----------------------------------------------------------------------------- uncentred variants
def _second_moment_eigenvalues(state: Moments, fn: str) -> np.ndarray:
    """Descending eigenvalues of ``X^T X / n = (m2 + n mu mu^T) / n`` (uncentred), float64."""
    M = (state.m2 + state.n * np.outer(state.mean, state.mean)) / state.n  # (d, d)
    ev = torch.linalg.eigvalsh(torch.from_numpy((M + M.T) / 2)).flip(0).clamp_min(0.0)
    return np.ascontiguousarray(ev.numpy())


def _effective_rank_uncentred(state: Moments) -> Estimate:
    fn = "effective_rank_uncentred"
    check_state(state, fn)
    ev = _second_moment_eigenvalues(state, fn)  # (d,) squared singular values of X / n
    s = np.sqrt(ev)  # (d,)
    value = (float(np.exp(entropy(s / s.sum()))) if s.sum() > 0
             else degenerate(fn, "every row is zero"))
    return Estimate(measure=fn, value=value, n_samples=state.n,
                    params={"convention": "roy_vetterli2007"},
                    diagnostics={"singular_values": s * np.sqrt(state.n),
                                 **_finite(fn, state, ev)})


@register("effective_rank_uncentred", family="spectrum", invariances={"rotation", "scale",
                                                                      "permutation"},
          bounds=(1.0, None),
          accumulator=Streaming(CovarianceAccumulator, _effective_rank_uncentred))
def effective_rank_uncentred(X: ArrayLike) -> Estimate:
    """Effective rank of the data matrix as given, without centring (Roy and Vetterli 2007).

    Roy and Vetterli's definition ("The effective rank: a measure of effective
    dimensionality", EUSIPCO 2007) for a matrix ``X``: with ``sigma_i`` its singular values
    and ``p_i = sigma_i / sum_j sigma_j``, ``erank = exp(-sum_i p_i log p_i)``. Here ``X`` is
    the (n, d) representation itself, so a common offset (the mean row) is one more, usually
    dominant, direction: on offset data this reads lower than :func:`effective_rank`, which
    centres first. Not translation invariant. Streamable (from the same Moments). NaN with a
    warning when every row is zero.
    """
    return _effective_rank_uncentred(moments_of(X, "effective_rank_uncentred"))


@register("von_neumann_entropy", family="spectrum", invariances={"rotation", "scale",
                                                                 "permutation"},
          bounds=(0.0, None))
def von_neumann_entropy(X: ArrayLike) -> Estimate:
    """Von Neumann entropy of row-normalised, uncentred representations (Kim et al. 2023, VNE).

    Kim, Kang, Hwang, Shin and Rhee 2023, "VNE: An effective method for improving deep
    representation by manipulating eigenvalue distribution" (CVPR): ``z_i = x_i / ||x_i||``,
    the autocorrelation ``rho = 1/n sum_i z_i z_i^T`` (trace 1, NOT centred) with eigenvalues
    ``lambda_j``, and ``VNE = -sum_j lambda_j log lambda_j`` in nats, in ``[0, log min(n, d)]``.
    Unlike :func:`spectral_entropy` (the centred covariance spectrum) a common mean direction
    counts as a direction, and every row weighs the same whatever its norm. Invariant to
    rotations and to rescaling each row, not to translation. Rows of zero norm raise a
    ValueError. ``diagnostics``: ``eigenvalues`` of ``rho`` and ``exp_entropy``.
    """
    fn = "von_neumann_entropy"
    X = as_numpy(check_array(X, fn, min_samples=2), np.float64)  # (n, d)
    norms = np.linalg.norm(X, axis=1)  # (n,)
    if np.any(norms == 0):
        raise ValueError(f"{fn} needs rows with non-zero norm (they are normalised to unit "
                         f"length); got {int(np.sum(norms == 0))} zero row(s), the first at row "
                         f"{int(np.argmax(norms == 0))}.")
    Z = torch.from_numpy(X / norms[:, None])  # (n, d)
    n, d = Z.shape
    rho = Z.T @ Z / n if d <= n else Z @ Z.T / n  # same non-zero spectrum, smaller side
    ev = torch.linalg.eigvalsh(rho).flip(0).clamp_min(0.0).numpy()  # (min(n, d),) sums to 1
    h = entropy(ev / ev.sum())
    return Estimate(measure=fn, value=float(h), n_samples=int(n),
                    params={"convention": "kim2023"},
                    diagnostics={"eigenvalues": np.ascontiguousarray(ev),
                                 "exp_entropy": float(np.exp(h)),
                                 **finite_sample_check(fn, int(n), int(d),
                                                       participation_ratio_of(ev))})
