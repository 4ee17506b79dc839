"""DANCo (Ceruti, Bassis, Rozza, Lombardi, Casiraghi and Campadelli 2014, "DANCo: an intrinsic
dimensionality estimator exploiting angle and norm concentration", Pattern Recognition 47):
the dimension whose uniform reference ball, sampled with the same ``n`` and ``k``, looks most
like the data, in the distribution of normalised nearest-neighbour distances (MiND) and of the
angles between neighbours (von Mises).

For every point, with its ``k`` nearest neighbours:

* ``rho = r_1 / r_{k+1}``; all of them give the MiND_MLk estimate ``d_ML``
  (:mod:`repscope.measures.dimension.mind`);
* the ``k (k - 1) / 2`` angles ``theta`` between the vectors to pairs of neighbours, fitted by a
  von Mises distribution: ``nu = arctan(sum sin theta / sum cos theta)`` and
  ``tau = A^{-1}(eta)``, ``eta = sqrt(mean(cos theta)^2 + mean(sin theta)^2)``, with the
  approximation of ``A^{-1}`` of Best and Fisher (1981) the paper uses; ``nu``, ``tau`` are the
  means over points.

The same three numbers are computed on ``n`` points uniform in the unit ``m``-ball for
``m = 1..max_dim`` (seeded, cached: :mod:`repscope.measures.dimension._calibration`), and the estimate
minimises ``KL(g_{d_ML} || g_{d_ML(m)}) + KL(vM(nu, tau) || vM(nu(m), tau(m)))``: the exact
Kullback-Leibler divergences between the MiND densities ``g(rho; k, d)`` and between von Mises
densities (closed forms below).

MiND_KL (Rozza et al. 2012), the calibrated member of the MiND family, lives here too: it
compares the distribution of ``rho`` alone with that of the same reference balls.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.special import comb, i0e, i1e, psi

from repscope._validate import ArrayLike, check_int
from repscope.measures.dimension._calibration import (
    MAX_QUERIES,
    cached,
    query_neighbors,
    reference_sample,
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
    _kept_rows,
    _table,
    _valid_rows,
)
from repscope.measures.dimension.mind import mind_fit, mind_rho
from repscope.neighbors import Neighbors
from repscope.registry import register

__all__ = ["a_inverse", "danco", "danco_reference", "kl_mind", "kl_von_mises", "kl_nn_1d",
           "mind_kl", "neighbour_angles"]

#: largest k (the closed-form KL sums binomial coefficients of k), and largest max_dim
MAX_K = 30
MAX_DIM = 256
#: calibration work n_queries * n * sum_{m <= max_dim} m above which danco refuses (~10 min)
MAX_CALIBRATION_WORK = 4e12


def a_inverse(eta: np.ndarray) -> np.ndarray:
    """Approximate inverse of ``A(tau) = I_1(tau) / I_0(tau)`` (Best and Fisher 1981), as in
    DANCo: ``2 eta + eta^3 + 5 eta^5 / 6`` below 0.53, ``-0.4 + 1.39 eta + 0.43 / (1 - eta)``
    below 0.85, ``1 / (eta^3 - 4 eta^2 + 3 eta)`` above. ``eta`` is clipped below 1 so that
    collinear neighbourhoods (1-D data) give a large finite concentration."""
    e = np.clip(np.asarray(eta, dtype=np.float64), 0.0, 1.0 - 1e-9)
    with np.errstate(divide="ignore"):
        return np.where(e < 0.53, 2 * e + e**3 + 5 * e**5 / 6,
                        np.where(e < 0.85, -0.4 + 1.39 * e + 0.43 / (1 - e),
                                 1 / (e**3 - 4 * e**2 + 3 * e)))


def neighbour_angles(rows: torch.Tensor, idx: np.ndarray, k: int,
                     queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per point: von Mises ``(nu, tau)`` of the angles between the vectors from the point to
    each pair of its ``k`` nearest neighbours. ``rows`` (n, d) float64; ``idx`` (m, >= k) the
    neighbours of ``rows[queries]`` (default: of every row)."""
    centre = rows if queries is None else rows[torch.as_tensor(queries)]
    m, d = centre.shape
    iu = torch.triu_indices(k, k, 1)
    nu, tau = np.empty(m), np.empty(m)
    step = max(1, 2**22 // (k * d + k * k))
    ix = torch.as_tensor(idx[:, :k])
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        V = rows[ix[lo:hi]] - centre[lo:hi, None, :]  # (b, k, d)
        V = V / torch.linalg.vector_norm(V, dim=2, keepdim=True)
        cos = torch.bmm(V, V.transpose(1, 2))[:, iu[0], iu[1]].clamp(-1.0, 1.0)  # (b, P)
        sin = torch.sqrt(1.0 - cos * cos)  # theta in [0, pi]: sin >= 0
        c, s = cos.sum(1).numpy(), sin.sum(1).numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            nu[lo:hi] = np.arctan(s / c)
        p = cos.shape[1]
        tau[lo:hi] = a_inverse(np.sqrt((c / p) ** 2 + (s / p) ** 2))
    return nu, tau


def kl_mind(d1: float, d2: float, k: int) -> float:
    """``KL(g(.; k, d1) || g(.; k, d2))`` for the MiND density ``k d rho^(d-1) (1 - rho^d)^(k-1)``.

    With ``q = d2 / d1`` and ``u = rho^d1 ~ Beta(1, k)``:
    ``KL = H_k q - log q - H_k - (k - 1)/k - (k - 1) E[log(1 - u^q)]`` and
    ``E[log(1 - u^q)] = sum_{j=0}^{k} (-1)^j C(k, j) psi(1 + j / q)`` (``H_k`` the harmonic
    number); DANCo's formula, with the terms that do not depend on ``d2`` kept so that the
    divergence is 0 at ``d1 = d2``.
    """
    q = d2 / d1
    j = np.arange(k + 1)
    terms = (-1.0) ** j * comb(k, j) * psi(1 + j / q)
    h = float(np.sum(1.0 / np.arange(1, k + 1)))
    return float(h * q - math.log(q) - h - (k - 1) / k - (k - 1) * math.fsum(terms))


def kl_von_mises(nu1: float, tau1: float, nu2: float, tau2: float) -> float:
    """``KL(vM(nu1, tau1) || vM(nu2, tau2)) = log(I0(tau2) / I0(tau1)) + A(tau1) (tau1 - tau2
    cos(nu1 - nu2))``, ``A = I1 / I0``, with exponentially scaled Bessel functions."""
    log_ratio = math.log(i0e(tau2)) + tau2 - math.log(i0e(tau1)) - tau1
    return float(log_ratio + i1e(tau1) / i0e(tau1) * (tau1 - tau2 * math.cos(nu1 - nu2)))


def danco_reference(n: int, k: int, max_dim: int, seed: int) -> dict[str, np.ndarray]:
    """``d_ML``, ``nu``, ``tau`` on ``n`` points uniform in the unit ``m``-ball, ``m = 1..max_dim``
    (statistics over ``min(n, 2500)`` query points; seeded per ``m``; cached on disk in blocks
    of :data:`_BLOCK` dimensions, so calls with different ``max_dim`` share them), and the
    query points' ``rho = r_1 / r_{k+1}`` (``(max_dim, n_queries)``, for MiND_KL)."""
    q = min(n, MAX_QUERIES)

    def block(lo: int) -> dict[str, np.ndarray]:
        out, rho = np.empty((_BLOCK, 3)), np.empty((_BLOCK, q))
        for m in range(lo, lo + _BLOCK):
            rng = np.random.default_rng([seed, m])
            Y = reference_sample("ball", n, m, rng)
            rows = np.sort(rng.choice(n, q, replace=False))
            idx, dist = query_neighbors(Y, rows, k + 1)
            out[m - lo] = _statistics(torch.from_numpy(Y), rows, idx, dist, k, np.ones(q))
            rho[m - lo] = dist[:, 0] / dist[:, k]
        return {"stats": out, "rho": rho}

    parts = [cached("danco", {"n": n, "k": k, "seed": seed, "n_queries": q,
                              "dims": [lo, lo + _BLOCK - 1], "arrays": ["stats", "rho"]},
                    lambda lo=lo: block(lo)) for lo in range(1, max_dim + 1, _BLOCK)]
    stats = np.concatenate([p["stats"] for p in parts])[:max_dim]
    rho = np.concatenate([p["rho"] for p in parts])[:max_dim]
    stats.setflags(write=False)
    rho.setflags(write=False)
    return {"d_ml": stats[:, 0], "nu": stats[:, 1], "tau": stats[:, 2], "rho": rho}


_BLOCK = 16


def _statistics(rows: torch.Tensor, q: np.ndarray, idx: np.ndarray, lengths: np.ndarray,
                k: int, w: np.ndarray) -> tuple[float, float, float]:
    """(d_ML, mean nu, mean tau) of the query rows ``q`` with neighbours ``idx`` / ``lengths``."""
    log_rho, ok = mind_rho(lengths, k)
    nu, tau = neighbour_angles(rows, idx, k, q)
    d_ml = mind_fit(log_rho[ok], w[ok], k)[0]
    return d_ml, float(np.average(nu, weights=w)), float(np.average(tau, weights=w))


def _kl_curve(stats: tuple[float, float, float], ref: dict[str, np.ndarray], k: int) -> np.ndarray:
    d_ml, nu, tau = stats
    return np.array([kl_mind(d_ml, ref["d_ml"][i], k)
                     + kl_von_mises(nu, tau, ref["nu"][i], ref["tau"][i])
                     for i in range(ref["d_ml"].size)])


def _argmin(kl: np.ndarray, fractal: bool) -> float:
    i = int(np.argmin(kl))
    if not fractal or i == 0 or i == kl.size - 1:
        return float(i + 1)
    a, b, c = kl[i - 1], kl[i], kl[i + 1]  # parabola through the minimum and its neighbours
    den = a - 2 * b + c
    return float(i + 1 + (0.5 * (a - c) / den if den > 0 else 0.0))


@register("danco", **_DIM, min_samples=4)
def danco(X: ArrayLike, *, k: int = 10, max_dim: int | None = None, fractal: bool = False,
          n_boot: int = 0, seed: int = 0, metric: str = "euclidean", duplicates: str = "drop",
          ci_level: float = 0.95, neighbors: Neighbors | None = None,
          device: Any = None) -> IDEstimate:
    """DANCo (Ceruti et al. 2014): the dimension ``m`` whose uniform ``m``-ball, sampled with the
    same ``n`` and ``k``, is closest to the data in Kullback-Leibler divergence of the
    normalised nearest-neighbour distances (MiND) plus that of the neighbour angles (von Mises).

    ``m`` ranges over ``1..max_dim`` (default: the number of columns of X, at most 100); the
    value is an integer, or with ``fractal=True`` the minimum of the parabola through the best
    integer and its neighbours. The reference balls are simulated with ``seed`` at the number
    of distinct rows and cached on disk (``repscope.data.models.cache_dir()/id-calibration``).
    An estimate at ``max_dim`` is censored there (a warning says so).
    Uncertainty (``n_boot > 0``): bootstrap over points of the per-point statistics, the
    reference fixed (sampling only).
    Cost: the neighbour table (``k + 1`` columns), ``O(n k^2 d)`` for the angles, and once per
    ``(n, k, max_dim, seed)`` the calibration, ``~ min(n, 2500) n max_dim^2 / 2`` multiply-adds
    (n = 2500, max_dim = 100: about a minute on one core). Caps: ``k <= 30``,
    ``max_dim <= 256`` and that calibration work ``<= 4e12``.
    """
    fn = "danco"
    X = _check_X(X, fn, 4)
    n, d_amb = X.shape
    k = check_int(k, "k", fn, low=2, high=n - 1, high_name="n_samples - 1")
    _cap(k, "k", fn, MAX_K, "the KL closed form sums binomial coefficients of k")
    max_dim = min(d_amb, 100) if max_dim is None else check_int(max_dim, "max_dim", fn, low=2)
    _cap(max_dim, "max_dim", fn, MAX_DIM, "calibration cost grows as max_dim^2")
    if not isinstance(fractal, bool):
        raise ValueError(f"The 'fractal' parameter of {fn} must be a bool. Got {fractal!r} instead.")
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k + 1, fn, metric=metric, duplicates=duplicates, neighbors=neighbors,
               device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    m = t.nb.n
    work = min(m, MAX_QUERIES) * m * max_dim * (max_dim + 1) / 2
    if work > MAX_CALIBRATION_WORK:
        raise ValueError(
            f"The 'max_dim' parameter of {fn} must be lower for n={m} rows: the calibration would "
            f"take {work:.2g} multiply-adds, above the cap {MAX_CALIBRATION_WORK:.0e}. Got "
            f"{max_dim} instead; or subsample X.")
    rows = _kept_rows(X, t, device).cpu()
    log_rho, usable = mind_rho(t.lengths, k)
    nu, tau = neighbour_angles(rows, t.nb.indices, k)
    ok &= usable & np.isfinite(nu)
    lr, nu, tau, w = log_rho[ok], nu[ok], tau[ok], t.weights[ok]
    ref = danco_reference(m, k, max_dim, seed)

    def estimate(i: np.ndarray) -> float:
        stats = (mind_fit(lr[i], w[i], k)[0], float(np.average(nu[i], weights=w[i])),
                 float(np.average(tau[i], weights=w[i])))
        return _argmin(_kl_curve(stats, ref, k), fractal)

    full = np.arange(lr.size)
    stats = (mind_fit(lr, w, k)[0], float(np.average(nu, weights=w)),
             float(np.average(tau, weights=w)))
    kl = _kl_curve(stats, ref, k)
    value = _argmin(kl, fractal)
    if value >= max_dim:
        warnings.warn(f"{fn}: the estimate reached max_dim={max_dim}; it is censored there. "
                      "Increase max_dim.", RuntimeWarning, stacklevel=2)
    se, ci = _boot(estimate, full.size, n_boot, seed, ci_level)
    params = {"k": k, "max_dim": max_dim, "fractal": fractal, "n_boot": n_boot, "seed": seed,
              "ci_level": ci_level, "uncertainty": "bootstrap" if n_boot else "none",
              "calibration": "uniform balls, same n and k", **_common(t, metric, device)}
    diag = {"d_ml": stats[0], "nu": stats[1], "tau": stats[2], "kl": kl,
            "kl_min": float(kl.min()), **_dup_diag(t)}
    return IDEstimate(fn, value, int(ok.sum()), se, ci, params, diag,
                      scale=float(np.median(t.lengths[ok, k])), rank=k + 1)


# ============================================================================ MiND_KL


def kl_nn_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Nearest-neighbour estimate of ``KL(p_a || p_b)`` from samples ``a`` (N) and ``b`` (M) on
    the line (Wang, Kulkarni and Verdu 2009, k = 1, dimension 1):
    ``mean_i log(nu_i / s_i) + log(M / (N - 1))``, ``s_i`` the distance from ``a_i`` to the
    nearest other ``a``, ``nu_i`` to the nearest ``b``. Points at distance 0 are left out."""
    sa, sb = np.sort(a), np.sort(b)
    gaps = np.diff(sa)
    s = np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))  # (N,) in sorted order
    j = np.searchsorted(sb, sa)
    left = np.abs(sa - sb[np.clip(j - 1, 0, sb.size - 1)])
    right = np.abs(sb[np.clip(j, 0, sb.size - 1)] - sa)
    nu = np.minimum(left, right)
    ok = (s > 0) & (nu > 0)
    return float(np.mean(np.log(nu[ok] / s[ok])) + math.log(b.size / (a.size - 1)))


@register("mind_kl", **_DIM, min_samples=4)
def mind_kl(X: ArrayLike, *, k: int = 10, max_dim: int | None = None, seed: int = 0,
            metric: str = "euclidean", duplicates: str = "drop",
            neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """MiND_KL (Rozza et al. 2012): the dimension ``m`` in ``1..max_dim`` whose uniform
    ``m``-ball, sampled with the same ``n`` and ``k``, has the distribution of
    ``rho = r_1 / r_{k+1}`` closest to the data's, in a nearest-neighbour estimate of the
    Kullback-Leibler divergence (:func:`kl_nn_1d`).

    The reference balls are DANCo's (seeded, cached; ``max_dim`` default: the number of columns,
    at most 100). An integer; no uncertainty. Cost: the neighbour table (``k + 1`` columns),
    ``O(n log n)`` per candidate dimension, and DANCo's calibration (shared with it).
    """
    fn = "mind_kl"
    X = _check_X(X, fn, 4)
    n, d_amb = X.shape
    k = check_int(k, "k", fn, low=1, high=n - 1, high_name="n_samples - 1")
    _cap(k, "k", fn, MAX_K, "as DANCo, whose reference it shares")
    max_dim = min(d_amb, 100) if max_dim is None else check_int(max_dim, "max_dim", fn, low=2)
    _cap(max_dim, "max_dim", fn, MAX_DIM, "calibration cost grows as max_dim^2")
    t = _table(X, k + 1, fn, metric=metric, duplicates=duplicates, neighbors=neighbors,
               device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    rho = t.lengths[ok, 0] / t.lengths[ok, k]
    ref = danco_reference(t.nb.n, k, max_dim, seed)
    kl = np.array([kl_nn_1d(rho, ref["rho"][m]) for m in range(max_dim)])
    value = float(np.argmin(kl) + 1)
    if value >= max_dim:
        warnings.warn(f"{fn}: the estimate reached max_dim={max_dim}; it is censored there. "
                      "Increase max_dim.", RuntimeWarning, stacklevel=2)
    params = {"k": k, "max_dim": max_dim, "seed": seed, "uncertainty": "none",
              "calibration": "uniform balls, same n and k", **_common(t, metric, device)}
    diag = {"kl": kl, **_dup_diag(t)}
    return IDEstimate(fn, value, int(ok.sum()), None, None, params, diag,
                      scale=float(np.median(t.lengths[ok, k])), rank=k + 1)
