"""Expected simplex skewness (ESS): an angle-based estimator with low bias at high dimension.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from repscope._validate import (
    ArrayLike,
    as_torch,
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
    _Table,
    _table,
    _unit_rows,
    _valid_rows,
    _wmean,
)
from repscope.measures.dimension._core import (
    ess_calibration,
    ess_local_statistic,
)
from repscope.neighbors import Neighbors
from repscope.registry import ScaleParam, register

__all__ = ["ess"]


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


#: ESS caps: its calibration costs ~ n_sim (k+1)^2 max_dim (k = 20: 20 s, k = 100: 5 min, 0.8 GB)
ESS_MAX_K, ESS_MAX_DIM, ESS_MAX_SIM, ESS_MAX_WORK = 64, 256, 20_000, 6e8


@register("ess", **_DIM, min_samples=4, scale_param=ScaleParam("k"))
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

    Cost: the neighbour table, ``O(n k^2 d)`` for the statistic, and once per
    ``(k, max_dim, n_sim, seed)`` in a process the reference curve, ``~ n_sim (k+1)^2 m``
    multiply-adds up to the dimension ``m`` needed (about 20 s at the defaults up to m = 64, one
    core). Caps: ``k <= 64``, ``max_dim <= 256``, ``n_sim <= 20000`` and
    ``n_sim (k+1)^2 max_dim <= 6e8``.
    """
    fn = "ess"
    X = _check_X(X, fn, 4)
    k = _k(k, "k", fn, X.shape[0], low=2)
    _cap(k, "k", fn, ESS_MAX_K, "calibration cost grows as n_sim k^2 max_dim")
    max_dim = check_int(max_dim, "max_dim", fn, low=2)
    _cap(max_dim, "max_dim", fn, ESS_MAX_DIM, "calibration cost grows as max_dim")
    n_sim = check_int(n_sim, "n_sim", fn, low=10)
    _cap(n_sim, "n_sim", fn, min(ESS_MAX_SIM, int(ESS_MAX_WORK // ((k + 1) ** 2 * max_dim))),
         f"calibration work n_sim (k+1)^2 max_dim <= {ESS_MAX_WORK:.0e} at k={k}, "
         f"max_dim={max_dim}; and <= {ESS_MAX_SIM}")
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
