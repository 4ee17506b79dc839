"""Local (per-point) intrinsic dimension: Levina-Bickel MLE and TwoNN over each neighbourhood.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from repscope._validate import (
    ArrayLike,
    check_choice,
    check_int,
)
from repscope.measures.dimension._common import (
    _LOCAL,
    IDEstimate,
    _boot,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _expand,
    _k,
    _table,
    _valid_rows,
    _wmean,
    _wquantile,
)
from repscope.measures.dimension._core import (
    mle_inverse_local,
)
from repscope.neighbors import Neighbors
from repscope.registry import ScaleParam, register

__all__ = ["local_mle", "local_twonn"]


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


@register("local_mle", **_LOCAL, min_samples=4, default_panel=True,
          scale_param=ScaleParam("k"))
def local_mle(X: ArrayLike, *, k: int = 20, unbiased: bool = True, summary: str = "median",
              metric: str = "euclidean", duplicates: str = "drop", n_boot: int = 200,
              seed: int = 0, ci_level: float = 0.95, neighbors: Neighbors | None = None,
              device: Any = None) -> IDEstimate:
    """Local intrinsic dimension per point: Levina-Bickel ``m_k(x)`` from its ``k`` neighbours.

    ``m_k(x) = (k - c) / sum_{j=1}^{k-1} log(T_k(x) / T_j(x))`` (``c = 2`` unbiased, else 1;
    Levina and Bickel 2004). ``diagnostics["local"]`` holds one value per input row (duplicates
    share their representative's value), with quantiles, mean and median; the value is the
    ``summary`` (median by default: local estimates are right-skewed). Uncertainty: bootstrap
    over points of the summary. Cost: the neighbour table (``k`` columns) plus ``O(n k)``.
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


@register("local_twonn", **_LOCAL, min_samples=4, scale_param=ScaleParam("k"))
def local_twonn(X: ArrayLike, *, k: int = 20, summary: str = "median", metric: str = "euclidean",
                duplicates: str = "drop", n_boot: int = 200, seed: int = 0,
                ci_level: float = 0.95, neighbors: Neighbors | None = None,
                device: Any = None) -> IDEstimate:
    """Local TwoNN: the TwoNN maximum likelihood over each point's neighbourhood.

    For point ``x`` with neighbours ``N_{k-1}(x)``, ``S = {x} u N_{k-1}(x)`` (``k`` points):
    ``d(x) = (k - 1) / sum_{j in S} log(r2_j / r1_j)`` (the unbiased TwoNN MLE, Facco et al.
    2017, restricted to the neighbourhood, as in DADApy's local estimates). Less sensitive to
    the density than the distance-based local MLE, noisier at small ``k``. ``diagnostics``
    as for ``local_mle``. Cost: the neighbour table (``k - 1`` columns) plus ``O(n k)``.
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
