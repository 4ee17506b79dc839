"""Information imbalance between two representations of the same rows (Glielmo et al. 2022).

``Delta(A -> B) = (2 / n) <r^B | r^A = 1>``: for every row ``i``, take its nearest neighbour
``j(i)`` in A and the rank ``r^B_i`` of that row among the neighbours of ``i`` in B
(1 = nearest); Delta is ``2 / n`` times the mean rank (Glielmo, Zeni, Cheng, Csanyi and Laio,
"Ranking the information content of distance measures", PNAS Nexus 1(2), 2022, eq. 1; used
layer by layer by Cheng et al., "Emergence of a high-dimensional abstraction phase in language
transformers", ICLR 2025). About 0 when A's neighbourhoods predict B's (A is at least as
informative), about 1 when they say nothing about B (ranks uniform over the ``n - 1`` others).
It is asymmetric: ``Delta(A -> B)`` small and ``Delta(B -> A)`` large means A holds B's
information and more.

The paper's value has a finite-sample floor of ``2 / n`` (every rank 1). repscope's value is the
same statistic with the ranks shifted and rescaled, ``Delta* = (<r> - 1) / (n / 2 - 1)``, so
that identical neighbourhoods give exactly 0 and independent ones exactly 1 in expectation at
every ``n`` (``Delta = 2 / n + (1 - 2 / n) Delta*``; the two differ by less than ``2 / n``).
The paper's values are in ``diagnostics["delta_paper_ab"]`` / ``["delta_paper_ba"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_choice, check_float
from repscope.measures.similarity._common import check_pair, make_estimate
from repscope.neighbors import knn, neighbor_ranks
from repscope.registry import Prepared, register
from repscope.results import Estimate

__all__ = ["information_imbalance"]

METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class ImbalanceState:
    """One representation, prepared once: its rows and each row's nearest neighbour."""

    X: np.ndarray
    "(n, d) float64 rows (ranks are computed from them)."
    nn: np.ndarray
    "(n,) int64 nearest other row (ties broken by index)."


def _nearest(X: np.ndarray, metric: str) -> np.ndarray:
    nb = knn(X, 1, metric=metric, duplicates="keep")
    return np.asarray(nb.indices[:, 0], dtype=np.int64)


def _prepare(X: ArrayLike, device: Any, params: Mapping[str, Any], which: str) -> ImbalanceState:
    check_choice(params["metric"], "metric", "information_imbalance", METRICS)
    A = as_numpy(X).astype(np.float64)
    return ImbalanceState(A, _nearest(A, params["metric"]))


def _permute(state: ImbalanceState, perm: np.ndarray) -> ImbalanceState:
    """The state of ``Y[perm]``: rows re-ordered, neighbours re-labelled."""
    perm = np.asarray(perm)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.shape[0])
    return ImbalanceState(state.X[perm], inv[state.nn[perm]])


def _normalised(ranks: np.ndarray, n: int) -> np.ndarray:
    """Per-row terms of Delta* = (mean rank - 1) / (n / 2 - 1): 0 when every rank is 1, and
    expectation exactly 1 when ranks are uniform over the n - 1 other rows."""
    return (ranks - 1.0) / (n / 2.0 - 1.0)


def _compare(sa: ImbalanceState, sb: ImbalanceState, params: Mapping[str, Any]) -> Estimate:
    n = sa.X.shape[0]
    metric, ci_level = params["metric"], params["ci_level"]
    r_ab = neighbor_ranks(sb.X, sa.nn, metric=metric)  # rank in B of A's nearest neighbour
    r_ba = neighbor_ranks(sa.X, sb.nn, metric=metric)
    terms, terms_ba = _normalised(r_ab, n), _normalised(r_ba, n)  # (n,) each; Delta* = mean
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n))
    z = NormalDist().inv_cdf(0.5 + ci_level / 2)
    back = float(terms_ba.mean())
    se_back = float(terms_ba.std(ddof=1) / np.sqrt(n))
    diag = {"delta_ab": value, "delta_ba": back, "stderr_ba": se_back,
            "ci_ba": (back - z * se_back, back + z * se_back),
            "delta_paper_ab": float(2.0 * r_ab.mean() / n),
            "delta_paper_ba": float(2.0 * r_ba.mean() / n),
            "ranks_ab": r_ab, "ranks_ba": r_ba, "null_value": 1.0}
    out = {"metric": metric, "ci_level": ci_level, "uncertainty": "analytic (mean of per-row terms)"}
    return make_estimate("information_imbalance", value, n, out, diag, stderr=se,
                         ci=(value - z * se, value + z * se))


@register("information_imbalance", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation"},
          higher_is_better=False, bounds=(0.0, 2.0), min_samples=3, symmetric=False,
          prepared=Prepared(_prepare, _compare, _permute))
def information_imbalance(X: ArrayLike, Y: ArrayLike, *, metric: str = "euclidean",
                          ci_level: float = 0.95) -> Estimate:
    """Information imbalance Delta(X -> Y): how well X's nearest neighbours predict Y's.

    Glielmo et al. (PNAS Nexus 2022) define ``Delta(X -> Y) = (2 / n) <r>``, the mean over rows
    ``i`` of the rank ``r_i`` of ``j(i)`` (row ``i``'s nearest neighbour in X) among row ``i``'s
    neighbours in Y. The value is its floor-corrected form ``Delta* = (<r> - 1) / (n / 2 - 1)``:
    exactly 0 when X's nearest neighbours are Y's, 1 in expectation when X says nothing about
    Y (see the module docstring; the paper's values are ``diagnostics["delta_paper_ab"]`` and
    ``["delta_paper_ba"]``). ``diagnostics`` also hold ``delta_ba`` (``Y -> X``, with its
    stderr and CI) and the per-row ranks of both directions. Uncertainty: standard error of
    the mean of the per-row terms and a normal CI at ``ci_level``
    (rows treated as independent). Ranks are exact (the nearest neighbour from the certified
    table, ranks by float64 distances); rows tied with ``j(i)`` count as farther.
    """
    fn = "information_imbalance"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    check_choice(metric, "metric", fn, METRICS)
    ci_level = check_float(ci_level, "ci_level", fn, low=0.0, high=1.0, low_inclusive=False,
                           high_inclusive=False)
    params = {"metric": metric, "ci_level": ci_level}
    return _compare(_prepare(X, None, params, "X"), _prepare(Y, None, params, "Y"), params)
