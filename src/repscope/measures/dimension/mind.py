"""MiND_ML (Rozza, Lombardi, Ceruti, Casiraghi and Campadelli 2012, "Novel high intrinsic
dimensionality estimators", Machine Learning 89): maximum likelihood on the normalised
nearest-neighbour distance ``rho = r_1 / r_{k+1}``.

Given its ``k + 1``-th neighbour distance, the ``k`` nearer neighbours of a point of a locally
uniform ``d``-dimensional density are uniform in that ball, so ``rho^d`` is the smallest of
``k`` uniforms and ``rho`` has density ``g(rho; k, d) = k d rho^(d-1) (1 - rho^d)^(k-1)``. The
log-likelihood ``N log(k d) + (d - 1) sum log rho + (k - 1) sum log(1 - rho^d)`` is concave in
``d``; MiND_MLk maximises it over real ``d``, MiND_MLi over the integers ``1..D``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repscope._validate import ArrayLike, check_choice, check_int
from repscope.measures.dimension._common import (
    _DIM,
    IDEstimate,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _table,
    _valid_rows,
    _z,
)
from repscope.measures.dimension._core import _newton_bracketed
from repscope.neighbors import Neighbors
from repscope.registry import ScaleParam, register

__all__ = ["mind_fit", "mind_loglik", "mind_ml"]


def mind_loglik(d: float, log_rho: np.ndarray, w: np.ndarray, k: int) -> float:
    """Weighted MiND log-likelihood ``sum w [log(k d) + (d-1) log rho + (k-1) log(1 - rho^d)]``."""
    return float((w * (math.log(k * d) + (d - 1) * log_rho
                       + (k - 1) * np.log(-np.expm1(d * log_rho)))).sum())


def mind_fit(log_rho: np.ndarray, w: np.ndarray, k: int) -> tuple[float, float]:
    """MiND_MLk: the real ``d`` maximising :func:`mind_loglik`, and ``1 / sqrt(information)``.

    The score ``W/d + sum w log rho - (k-1) sum w rho^d log rho / (1 - rho^d)`` decreases in
    ``d``; it is positive at ``W / -sum(w log rho)`` (the ``k = 1`` solution) and its root is
    bracketed by doubling, then found by safeguarded Newton steps. ``log_rho < 0``.
    """
    W, S = float(w.sum()), float((w * log_rho).sum())

    def ratio(d: float) -> np.ndarray:  # rho^d / (1 - rho^d), without overflow
        t = d * log_rho
        return np.exp(t) / -np.expm1(t)

    def score(d: float) -> float:
        return W / d + S - (k - 1) * float((w * log_rho * ratio(d)).sum())

    def info(d: float) -> float:  # minus the second derivative
        t = d * log_rho
        return W / d**2 + (k - 1) * float((w * log_rho**2 * np.exp(t) / np.expm1(t) ** 2).sum())

    lo = W / -S
    if k == 1:
        return lo, lo / math.sqrt(W)
    hi = 2 * lo
    for _ in range(200):
        if score(hi) <= 0:
            break
        lo, hi = hi, 2 * hi
    d = _newton_bracketed(score, info, lo, hi)
    return float(d), float(1.0 / math.sqrt(info(d)))


def mind_integer(d_real: float, log_rho: np.ndarray, w: np.ndarray, k: int, max_dim: int) -> int:
    """MiND_MLi: the integer in ``1..max_dim`` with the largest likelihood (the likelihood is
    concave, so it is the floor or the ceiling of the real maximiser, clipped)."""
    cands = {min(max(c, 1), max_dim) for c in (math.floor(d_real), math.ceil(d_real))}
    return max(sorted(cands), key=lambda c: mind_loglik(c, log_rho, w, k))


def mind_rho(lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``log rho = log(r_1 / r_{k+1})`` per row and the mask of usable rows (``0 < rho < 1``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rho = np.log(lengths[:, 0] / lengths[:, k])
    ok = np.isfinite(log_rho) & (log_rho < 0)
    return log_rho, ok


@register("mind_ml", **_DIM, min_samples=4, scale_param=ScaleParam("k", start=2))
def mind_ml(X: ArrayLike, *, k: int = 10, variant: str = "MLk", max_dim: int | None = None,
            metric: str = "euclidean", duplicates: str = "drop", ci_level: float = 0.95,
            neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """MiND_ML (Rozza et al. 2012): maximum likelihood on ``rho = r_1 / r_{k+1}``, which has
    density ``k d rho^(d-1) (1 - rho^d)^(k-1)`` for a locally uniform density.

    ``variant="MLk"``: the real maximiser (``"MLi"``: the best integer in ``1..max_dim``;
    ``max_dim`` defaults to the number of columns of X). ``k = 1`` is the TwoNN maximum
    likelihood. Uncertainty: the analytic standard error from the Fisher information (sampling
    only; neighbourhoods overlap, so it is a lower bound), normal interval.
    Cost: the neighbour table (``k + 1`` columns) plus ``O(n)`` per Newton step.
    Like every neighbour-distance estimator it reads low at ID >= 10 (``docs/dimension.md``);
    DANCo calibrates it on reference balls.
    """
    fn = "mind_ml"
    X = _check_X(X, fn, 4)
    n, d_amb = X.shape
    k = check_int(k, "k", fn, low=1, high=n - 1, high_name="n_samples - 1")
    check_choice(variant, "variant", fn, ("MLk", "MLi"))
    max_dim = d_amb if max_dim is None else check_int(max_dim, "max_dim", fn, low=1)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k + 1, fn, metric=metric, duplicates=duplicates, neighbors=neighbors,
               device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    log_rho, usable = mind_rho(t.lengths, k)
    ok &= usable
    lr, w = log_rho[ok], t.weights[ok]
    d_real, se = mind_fit(lr, w, k)
    d_int = mind_integer(d_real, lr, w, k, max_dim)
    value = float(d_int) if variant == "MLi" else d_real
    z = _z(ci_level)
    ci = None if variant == "MLi" else (d_real - z * se, d_real + z * se)
    params = {"k": k, "variant": variant, "max_dim": max_dim, "ci_level": ci_level,
              "uncertainty": "analytic" if ci else "none", **_common(t, metric, device)}
    diag = {"mle_real": d_real, "mle_integer": d_int, "loglik": mind_loglik(d_real, lr, w, k),
            **_dup_diag(t)}
    return IDEstimate(fn, value, int(ok.sum()), se if ci else None, ci, params, diag,
                      scale=float(np.median(t.lengths[ok, k])), rank=k + 1)
