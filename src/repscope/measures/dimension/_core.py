"""Pure maths of the intrinsic-dimension estimators, on neighbour distances and spectra.

Everything here takes arrays that are already validated (lengths > 0, weights > 0) and returns
numbers; :mod:`repscope.measures.dimension` wraps them into registered measures.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "broken_stick_rank",
    "ess_local_statistic",
    "ess_calibration",
    "gride_mle",
    "marchenko_pastur_rank",
    "mle_inverse_local",
    "participation_ratio_from_eigenvalues",
    "twonn_linear_fit",
    "variance_threshold_rank",
]


# ---------------------------------------------------------------------------- spectra


def participation_ratio_from_eigenvalues(ev: np.ndarray) -> float:
    """Participation ratio ``PR = (sum_i l_i)^2 / sum_i l_i^2`` of a spectrum.

    ``PR`` is 1 for a single direction and ``d`` for an isotropic spectrum (Gao et al. 2017,
    "A theory of multineuronal dimensionality"; Recanatesi et al. 2019). Negative round-off
    eigenvalues are clipped to 0; an all-zero spectrum raises.
    """
    ev = np.clip(np.asarray(ev, dtype=np.float64).ravel(), 0.0, None)  # (d,)
    if ev.size == 0 or not np.isfinite(ev).all():
        raise ValueError(f"participation_ratio_from_eigenvalues needs finite eigenvalues; got {ev!r}.")
    s2 = float((ev * ev).sum())
    if s2 == 0.0:
        raise ValueError("participation_ratio_from_eigenvalues got an all-zero spectrum (constant data).")
    return float(ev.sum()) ** 2 / s2


def variance_threshold_rank(ev: np.ndarray, variance: float) -> int:
    """Smallest ``m`` whose top-``m`` eigenvalues explain at least ``variance`` of the total."""
    ratio = np.cumsum(ev) / ev.sum()  # (d,)
    return int(np.searchsorted(ratio, variance - 1e-12) + 1)


def broken_stick_rank(ev: np.ndarray) -> int:
    """Components kept by the broken-stick rule (Frontier 1976; Jackson 1993).

    Component ``i`` (1-based) is kept while its share of variance exceeds the broken-stick
    expectation ``b_i = (1/d) sum_{j=i}^{d} 1/j``; the count stops at the first failure.
    """
    d = ev.size
    b = np.cumsum(1.0 / np.arange(d, 0, -1))[::-1] / d  # (d,) b_1 >= b_2 >= ...
    share = ev / ev.sum()
    fail = np.nonzero(share <= b)[0]
    return int(fail[0]) if fail.size else d


def marchenko_pastur_rank(ev: np.ndarray, n: int) -> tuple[int, float]:
    """Eigenvalues above the Marchenko-Pastur bulk edge of isotropic noise.

    Noise of variance ``s2`` in ``p`` dimensions sampled ``n`` times has covariance eigenvalues
    below ``s2 (1 + sqrt(p / n))^2`` (Marchenko and Pastur 1967). Iterate: count eigenvalues
    above the edge (``r``), re-estimate ``s2`` as the mean of the other ``d - r``, until ``r`` is
    stable. Eigenvalues under ``d * eps`` of the largest are exact zeros (noise-free data) and
    never count. Returns ``(r, s2)``.
    """
    d = ev.size
    zero = ev <= ev[0] * d * 1e-13
    r, s2 = 0, float(ev.mean())
    for _ in range(100):
        rest = ev[r:]
        s2 = float(rest.mean())
        edge = s2 * (1.0 + math.sqrt((d - r) / n)) ** 2
        new = int(((ev > edge) & ~zero).sum())
        if new == r or new >= d:
            r = min(new, d)
            break
        r = new
    return r, s2


# ---------------------------------------------------------------------------- TwoNN / GRIDE


def twonn_linear_fit(log_mu: np.ndarray, w: np.ndarray, discard_fraction: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Facco et al. (2017) TwoNN fit: ``-log(1 - F(mu)) = d log(mu)`` through the origin.

    ``F`` is the empirical CDF of ``mu = r2 / r1`` (``F_i = i / N`` after sorting; weighted:
    cumulative weights over the total); the largest ``discard_fraction`` of the ratios is
    dropped before the least-squares fit. Returns ``(d, x, y)`` with the fitted points.
    """
    order = np.argsort(log_mu, kind="stable")
    return twonn_linear_fit_sorted(log_mu[order], w[order], discard_fraction)


def twonn_linear_fit_sorted(x: np.ndarray, w: np.ndarray, discard_fraction: float) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`twonn_linear_fit` on ratios ``x = log mu`` already sorted (weights ``w`` in the
    same order): lets a bootstrap sort once and build each resample's sorted order in O(N)."""
    F = np.cumsum(w) / w.sum()  # (N,)
    keep = int(math.floor(x.size * (1.0 - discard_fraction)))
    keep = max(1, min(keep, x.size - 1))
    x, y = x[:keep], -np.log1p(-F[:keep])
    return float((x * y).sum() / (x * x).sum()), x, y


def gride_mle(log_mu: np.ndarray, w: np.ndarray, n1: int, n2: int) -> tuple[float, float]:
    """GRIDE maximum likelihood (Denti et al. 2022) on ``mu = r_{n2} / r_{n1}``; (d, stderr).

    The ratio has density ``f(mu) = d (mu^d - 1)^(n2-n1-1) / (B(n2-n1, n1) mu^(d(n2-1)+1))``
    (locally uniform density up to ``r_{n2}``), whose log-likelihood is concave in ``d``; its
    score is solved by safeguarded Newton steps inside the bracket ``[W/(n1 S), (n2-n1) W/(n1 S)]``
    (``W`` total weight, ``S = sum w log mu``). ``n1=1, n2=2`` is TwoNN's MLE ``W / S``. The
    standard error is the inverse square root of the observed Fisher information.
    """
    W, S = float(w.sum()), float((w * log_mu).sum())
    a = n2 - n1 - 1

    def score(d: float) -> float:
        g = log_mu / -np.expm1(-d * log_mu)  # log(mu) mu^d / (mu^d - 1)
        return W / d + a * float((w * g).sum()) - (n2 - 1) * S

    def info(d: float) -> float:  # minus the second derivative of the log-likelihood
        t = d * log_mu
        return W / d**2 + a * float((w * log_mu**2 * np.exp(-t) / np.expm1(-t) ** 2).sum())

    lo = W / (n1 * S)
    if a == 0:
        d = lo
    else:
        d = _newton_bracketed(score, info, lo, (n2 - n1) * W / (n1 * S))
    return float(d), float(1.0 / math.sqrt(info(d)))


def _newton_bracketed(f, minus_df, lo: float, hi: float, rtol: float = 1e-13) -> float:
    """Root of a decreasing ``f`` with ``f(lo) >= 0 >= f(hi)``: Newton steps, bisection when a
    step leaves the bracket."""
    x = 0.5 * (lo + hi)
    for _ in range(200):
        fx = f(x)
        if fx > 0:
            lo = x
        else:
            hi = x
        step = fx / minus_df(x)
        x_new = x + step
        if not lo < x_new < hi:
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= rtol * x_new or hi - lo <= rtol * hi:
            return x_new
        x = x_new
    return x


# ---------------------------------------------------------------------------- MLE


def mle_inverse_local(lengths: np.ndarray, k: int, unbiased: bool) -> np.ndarray:
    """Per-point inverse Levina-Bickel (2004) estimate ``S(x) / (k - c)``.

    ``S(x) = sum_{j=1}^{k-1} log(T_k(x) / T_j(x))`` is Gamma(k - 1, d) for a locally uniform
    density, so ``S / (k - 1)`` (``c = 1``) is unbiased for ``1 / d`` (what MacKay and
    Ghahramani (2005) average) and ``(k - 2) / S`` (``c = 2``) is unbiased for ``d``.
    """
    logs = np.log(lengths[:, :k])  # (n, k)
    s = (logs[:, k - 1 : k] - logs[:, : k - 1]).sum(1)  # (n,)
    return s / (k - (2 if unbiased else 1))


# ---------------------------------------------------------------------------- ESS


def ess_local_statistic(G: np.ndarray) -> np.ndarray:
    """Expected-simplex-skewness statistic from centred neighbourhood Gram matrices.

    For vectors ``v_0..v_k`` (a point and its ``k`` neighbours, centred at their mean), with
    Gram matrix ``G`` of shape ``(b, k+1, k+1)``:
    ``s = sum_{a<b} |v_a||v_b| |sin(theta_ab)| / sum_{a<b} |v_a||v_b|``, the mean area of the
    parallelograms spanned by pairs relative to its maximum (Johnsson, Soneson and Fontes 2015,
    ESS version a with 2-vector simplices). Larger in higher dimension.
    """
    diag = np.einsum("bii->bi", G)  # (b, k+1) squared norms
    prod = diag[:, :, None] * diag[:, None, :]  # (b, k+1, k+1)
    area = np.sqrt(np.clip(prod - G * G, 0.0, None)).sum((1, 2))  # diagonal terms are 0
    norm = np.sqrt(prod).sum((1, 2)) - diag.sum(1)  # off-diagonal sum of |v_a||v_b|
    return area / norm


@functools.lru_cache(maxsize=32)
def ess_calibration(k: int, max_dim: int, n_sim: int, seed: int) -> np.ndarray:
    """Mean ESS statistic of ``k`` points uniform in the unit ``m``-ball plus its centre, for
    ``m = 1..max_dim``: the reference curve the observed statistic is inverted through.

    The curve depends only on ``(k, m)``, not on the number of points or the scale. The Gram
    matrices of the ``m``-dimensional samples share Gaussian coordinates (common random
    numbers keep the curve smooth) and are built up one coordinate at a time. Read-only result.
    """
    rng = np.random.default_rng(seed)
    u = rng.random((n_sim, k))  # radii: u^(1/m) is uniform-in-ball
    raw = np.zeros((n_sim, k, k))  # Gram of the Gaussian coordinates seen so far
    out = np.empty(max_dim)
    for m in range(1, max_dim + 1):
        g = rng.standard_normal((n_sim, k))
        raw += g[:, :, None] * g[:, None, :]
        c = u ** (1.0 / m) / np.sqrt(np.einsum("bii->bi", raw))  # (n_sim, k)
        V = np.zeros((n_sim, k + 1, k + 1))
        V[:, 1:, 1:] = raw * c[:, :, None] * c[:, None, :]  # origin is point 0
        V -= V.mean(1, keepdims=True) + V.mean(2, keepdims=True) - V.mean((1, 2), keepdims=True)
        out[m - 1] = ess_local_statistic(V).mean()  # V is now the centred Gram H V H
    out = np.maximum.accumulate(out)
    out.setflags(write=False)
    return out
