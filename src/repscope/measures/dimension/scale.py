"""ID-vs-scale curves: an estimator re-run over growing neighbourhoods or nested subsamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope import registry
from repscope._arrays import take_rows
from repscope._validate import (
    ArrayLike,
    check_choice,
    check_int,
)
from repscope.measures.dimension._common import (
    _check_X,
)
from repscope.neighbors import Neighbors, knn

__all__ = ["ScaleCurve", "id_scale_curve"]


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


def id_scale_curve(estimator: str, X: ArrayLike, *, by: str = "rank",
                   values: list[int] | None = None, seed: int = 0,
                   neighbors: Neighbors | None = None, **params: Any) -> ScaleCurve:
    """The ID of ``X`` by ``estimator`` as the scale grows.

    ``by="rank"``: vary the neighbourhood size, the estimator's registered
    :class:`~repscope.registry.ScaleParam` (``k`` for MLE/ESS/local estimators, ``n1`` with
    ``n2 = 2 n1`` for GRIDE, and for TwoNN its generalisation GRIDE, since TwoNN is GRIDE at
    ``n1 = 1``); one neighbour table serves every point of the curve. Default ranks: powers of 2.
    ``by="subsample"``: re-estimate on nested random subsets of ``n, n/2, n/4, ...`` rows
    (seeded), the decimation protocol of Facco et al. 2017: the typical neighbour distance
    grows as the sample shrinks. ``params`` are passed to the estimator.
    """
    fn = "id_scale_curve"
    curves = {s.name: s.scale_param for s in registry.specs() if s.scale_param is not None}
    check_choice(estimator, "estimator", fn, sorted(curves))
    check_choice(by, "by", fn, ("rank", "subsample"))
    X = _check_X(X, fn, 4)
    n = X.shape[0]
    if by == "rank":
        sp = curves[estimator]
        target = registry.get(sp.via or estimator)
        if values is None:  # powers of two: n1 = 1, 2, 4, ... or k = 4, 8, 16, ...
            cap = n // (4 * sp.reach)
            values = [v for v in (2**i for i in range(12)) if sp.start <= v <= max(sp.start, cap)]
        values = [check_int(v, "values", fn, low=1, high=n, high_name="n_samples") for v in values]
        need = max(sp.reach * v for v in values)
        if sp.param != "k" and "k" in target.defaults:
            params.setdefault("k", need)
        shared = "neighbors" in target.defaults
        nb = neighbors
        if shared and (nb is None or nb.k < need):
            nb = knn(X, need, metric=params.get("metric", "euclidean"),
                     duplicates=params.get("duplicates", "drop"), device=params.get("device"))
        res = []
        for v in values:
            kw = {**params, sp.param: v}
            if shared:
                kw["neighbors"] = nb
            res.append(target.fn(X, **kw))
        return _curve(estimator, by, np.array(values), res, sp.param)
    if values is None:
        values = [n // 2**i for i in range(12) if n // 2**i >= 64] or [n]
    values = [check_int(v, "values", fn, low=4, high=n, high_inclusive=True, high_name="n_samples")
              for v in values]
    order = np.random.default_rng(seed).permutation(n)
    fn_est = registry.get(estimator).fn
    res = []
    for size in values:
        rows = np.sort(order[:size])  # nested subsets
        sub = take_rows(X, rows)
        res.append(fn_est(sub, **params))
    return _curve(estimator, by, np.array(values), res, None)


def _curve(name, by, x, res, pname) -> ScaleCurve:
    se = np.array([np.nan if r.stderr is None else r.stderr for r in res], dtype=float)
    return ScaleCurve(name, by, x, np.array([r.scale for r in res], dtype=float),
                      np.array([r.value for r in res], dtype=float), se, pname)
