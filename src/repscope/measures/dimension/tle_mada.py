"""Cheap local estimators: TLE (Amsaleg et al. 2019) and MADA (Farahmand et al. 2007).

Both give one estimate per point from its ``k`` nearest neighbours (``diagnostics["local"]``,
one value per input row as for :func:`~repscope.measures.dimension.local_mle`), summarised by
the mean (their papers' global estimate) or the median.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_float, check_int
from repscope.measures.dimension._common import (
    _LOCAL,
    IDEstimate,
    _cap,
    _check_X,
    _ci_level,
    _common,
    _k,
    _kept_rows,
    _table,
    _valid_rows,
)
from repscope.measures.dimension.local import _local_result
from repscope.neighbors import Neighbors
from repscope.registry import ScaleParam, register

__all__ = ["mada", "mada_local", "tle", "tle_local"]

MAX_TLE_K = 200  # cost O(n k^2 d)


def mada_local(lengths: np.ndarray, k: int) -> np.ndarray:
    """MADA per point: ``ln 2 / ln(r_k / r_{ceil(k/2)})`` (Farahmand et al. 2007, eq. 1)."""
    half = math.ceil(k / 2)
    with np.errstate(divide="ignore"):
        return math.log(2.0) / np.log(lengths[:, k - 1] / lengths[:, half - 1])


def _scaled(a: np.ndarray, b: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``w x / l``: a distance ``x`` (with ``x^2 = a``) from a point at distance ``u_i`` from the
    centre, rescaled by ``l``, the length of the ray from that point through the other one to
    the sphere of radius ``w``. ``b = u_i^2 + x^2 - u_j^2``, ``c = w^2 - u_i^2 >= 0``; the two
    algebraically equal forms are chosen so that neither cancels."""
    root = np.sqrt(b * b + 4.0 * a * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = 2.0 * w * a / (root + b)  # stable for b >= 0 (and exact at c = 0)
        neg = w * (root - b) / (2.0 * c)  # stable for b < 0 (then c > 0)
    return np.where(b >= 0, pos, neg)


def tle_local(u: np.ndarray, G: np.ndarray, central: bool = False,
              eps: float = 1e-5) -> np.ndarray:
    """TLE per point (Amsaleg, Chelly, Houle, Kawarabayashi, Radovanovic and Treeratanajaru
    2019, "Intrinsic dimensionality estimation within tight localities").

    ``u`` (b, k): distances from each point ``q`` to its ``k`` neighbours ``v_i`` (``w = u_k``);
    ``G`` (b, k, k): squared distances ``v_ij^2`` between the neighbours. For each ordered pair
    ``i != j``: ``s_ij`` rescales ``v_ij`` by the ray from ``v_i`` through ``v_j`` to the sphere
    of radius ``w`` around ``q`` (:func:`_scaled`), and ``t_ij`` does the same for the reflection
    ``2 q - v_j`` (``z_ij^2 = 2 u_i^2 + 2 u_j^2 - v_ij^2``). Under local uniformity these are
    distances within a ball of radius ``w``, so the maximum likelihood is
    ``-N / sum log(x / w)`` over the ``N = 2 k (k - 1)`` measurements (minus those dropped:
    ``v_ij = 0``, or ``s`` or ``t`` below ``eps w``). ``central=True`` adds the ``u_j``
    themselves, twice each (the authors' ``idtlec`` variant).
    """
    b, k = u.shape
    w = u[:, -1][:, None, None]  # (b, 1, 1)
    ui, uj = u[:, :, None] ** 2, u[:, None, :] ** 2  # (b, k, 1), (b, 1, k)
    c = np.maximum(w * w - ui, 0.0)
    v2 = np.maximum(G, 0.0)
    z2 = np.maximum(2 * ui + 2 * uj - v2, 0.0)
    S = _scaled(v2, ui + v2 - uj, c, w)  # (b, k, k)
    T = _scaled(z2, ui + z2 - uj, c, w)
    with np.errstate(invalid="ignore"):
        keep = (v2 > 0) & (S >= eps * w) & (T >= eps * w) & np.isfinite(S) & np.isfinite(T)
    keep[:, np.arange(k), np.arange(k)] = False
    logs = np.where(keep, np.log(np.where(keep, S * T, 1.0) / (w * w)), 0.0)
    total = logs.sum((1, 2))  # (b,)
    count = 2.0 * keep.sum((1, 2))
    if central:
        cen = u > eps * u[:, -1:]
        total = total + 2 * np.where(cen, np.log(np.where(cen, u, 1.0) / u[:, -1:]), 0.0).sum(1)
        count = count + 2.0 * cen.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total < 0, -count / total, np.nan)


def _pair_sqdist(rows: torch.Tensor, idx: np.ndarray, k: int) -> np.ndarray:
    """(m, k, k) squared distances between the ``k`` neighbours of every row."""
    m, d = rows.shape
    out = np.empty((m, k, k))
    ix = torch.as_tensor(idx[:, :k])
    step = max(1, 2**22 // (k * d + k * k))
    for lo in range(0, m, step):
        V = rows[ix[lo:lo + step]]  # (b, k, d)
        V = V - V.mean(1, keepdim=True)
        g = torch.bmm(V, V.transpose(1, 2))  # (b, k, k)
        sq = torch.diagonal(g, dim1=1, dim2=2)
        out[lo:lo + step] = (sq[:, :, None] + sq[:, None, :] - 2 * g).numpy()
    return out


@register("tle", **_LOCAL, min_samples=4, scale_param=ScaleParam("k"))
def tle(X: ArrayLike, *, k: int = 20, central: bool = False, eps: float = 1e-5,
        summary: str = "mean", metric: str = "euclidean", duplicates: str = "drop",
        n_boot: int = 200, seed: int = 0, ci_level: float = 0.95,
        neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """TLE, the tight local ID estimator (Amsaleg et al. 2019): per point, a maximum likelihood
    over the ``2 k (k - 1)`` distances between pairs of its ``k`` neighbours (and their
    reflections through the point), each rescaled to the neighbourhood ball.

    Using the distances among the neighbours, not only to the centre, makes the local estimate
    far less noisy than the local MLE at the same ``k`` (the authors' default variant: without
    central measurements, with reflections; ``central=True`` adds them). Definition:
    :func:`repscope.measures.dimension.tle_mada.tle_local`; ``eps`` is relative to the
    neighbourhood radius (scale invariant). The value is the ``summary`` of the local estimates
    (mean, as in the paper's global use; or median); uncertainty: bootstrap over points.
    Cost: ``O(n k^2 d)`` for the neighbour distances plus ``O(n k^2)``; ``k <= 200``.
    """
    fn = "tle"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=2)
    _cap(k, "k", fn, MAX_TLE_K, "cost grows as n k^2 d")
    if not isinstance(central, bool):
        raise ValueError(f"The 'central' parameter of {fn} must be a bool. Got {central!r} instead.")
    eps = check_float(eps, "eps", fn, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_choice(summary, "summary", fn, ("mean", "median"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    rows = _kept_rows(X, t, device).cpu()
    G = _pair_sqdist(rows, t.nb.indices, k)
    local = tle_local(t.lengths, G, central, eps)
    ok &= np.isfinite(local)
    params = {"k": k, "central": central, "eps": eps, **_common(t, metric, device)}
    return _local_result(fn, local, t, ok, summary, n_boot, seed, ci_level, params, k,
                         float(np.median(t.lengths[ok, k - 1])))


@register("mada", **_LOCAL, min_samples=4, scale_param=ScaleParam("k"))
def mada(X: ArrayLike, *, k: int = 20, summary: str = "mean", metric: str = "euclidean",
         duplicates: str = "drop", n_boot: int = 200, seed: int = 0, ci_level: float = 0.95,
         neighbors: Neighbors | None = None, device: Any = None) -> IDEstimate:
    """MADA, manifold-adaptive dimension estimation (Farahmand, Szepesvari and Audibert 2007):
    per point ``ln 2 / ln(r_k / r_{ceil(k/2)})``, the growth of the neighbour count between two
    radii; the value is the mean of the local estimates (the paper's global estimate) or their
    median. Uncertainty: bootstrap over points. Cost: the neighbour table only (``O(n)`` after it).
    """
    fn = "mada"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=2)
    check_choice(summary, "summary", fn, ("mean", "median"))
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = _ci_level(ci_level, fn)
    t = _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors, device=device)
    ok = _valid_rows(t.lengths, 1, fn)
    local = mada_local(t.lengths, k)
    ok &= np.isfinite(local)
    params = {"k": k, **_common(t, metric, device)}
    return _local_result(fn, local, t, ok, summary, n_boot, seed, ci_level, params, k,
                         float(np.median(t.lengths[ok, k - 1])))
