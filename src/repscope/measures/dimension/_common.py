"""Shared plumbing of the intrinsic-dimension estimators: the result type, the validated
neighbour table (reused when it fits, duplicates reported once, in the same words everywhere),
parameter checks and caps, bootstrap and weighting helpers, and the registration defaults."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_array, check_choice, check_float, check_int
from repscope.neighbors import POLICIES, Neighbors, knn
from repscope.results import Estimate, result_type
from repscope.stats import bootstrap

__all__ = ["IDEstimate"]

log = logging.getLogger("repscope.measures.dimension")

_EUCLID = {"rotation", "translation", "scale", "permutation"}
_DIM = dict(family="dimension", invariances=_EUCLID, bounds=(0.0, None))
_LOCAL = dict(family="local_dimension", invariances=_EUCLID, bounds=(0.0, None))
#: duplicates warn above this fraction under 'drop' / 'weight' (under 'keep': any)
DUPLICATE_WARN_FRACTION = 0.01


@result_type
@dataclass(frozen=True)
class IDEstimate(Estimate):
    """An intrinsic-dimension estimate and the scale it refers to.

    ``params["interval"]`` says what ``stderr`` and ``ci`` cover: ``"sampling"`` (resampling
    or likelihood uncertainty of this estimator, with its bias left out), ``"sampling +
    estimator bias"`` (:func:`repscope.measures.dimension.intrinsic_dimension`) or ``"none"``.
    """

    scale: float | None = None
    "Length scale of the estimate: median distance to the largest neighbour rank used (kNN), or the RMS radius of the data (PCA-based)."
    rank: int | None = None
    "Largest neighbour rank the estimate uses (None for PCA-based estimates)."

    def __post_init__(self) -> None:
        if "interval" not in self.params:  # what an interval covers, recorded on every result
            covers = "none" if self.ci is None and self.stderr is None else "sampling"
            object.__setattr__(self, "params", {**self.params, "interval": covers})


@dataclass(frozen=True)
class _Table:
    nb: Neighbors
    lengths: np.ndarray  # (m, k) Euclidean or chord lengths
    weights: np.ndarray  # (m,) multiplicities ('weight') or ones


def _table(X: ArrayLike, k: int, fn: str, *, metric: str, duplicates: str,
           neighbors: Neighbors | None, device: Any, takes_k: bool = True) -> _Table:
    """Validated neighbour table with ``k`` columns, reusing ``neighbors`` when compatible.

    Warns (once per call, naming ``fn``) when the duplicates policy dropped or kept more than
    1 % duplicated rows, with the one fraction every report gives (exact + near).
    ``takes_k=False``: ``fn`` has no ``k`` parameter, so a table too small after dropping
    duplicates is reported as a duplicates problem, not as a bad ``k``.
    """
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
            raise _knn_error(err, fn, k, takes_k) from None
    _warn_duplicates(nb, fn)
    nb = nb.head(k)
    lengths = nb.lengths()
    w = nb.duplicates.multiplicity.astype(np.float64) if duplicates == "weight" else np.ones(nb.n)
    return _Table(nb, lengths, w)


def _knn_error(err: ValueError, fn: str, k: int, takes_k: bool) -> ValueError:
    msg = str(err)
    found = re.search(r"n_unique=(\d+)\) after the duplicates policy '(\w+)' kept \d+ of (\d+)", msg)
    if found and not takes_k:
        unique, policy, n = found.groups()
        return ValueError(
            f"{fn} needs at least {k + 1} distinct rows, but only {unique} of the {n} rows of X "
            f"are distinct: the others duplicate them (exactly or within the tolerance) and "
            f"duplicates={policy!r} dropped them.")
    return ValueError(msg.replace("of knn", f"of {fn}"))


def _warn_duplicates(nb: Neighbors, fn: str) -> None:
    rep = nb.duplicates
    if rep.policy == "keep" and rep.fraction > 0:
        warnings.warn(
            f"{fn}: duplicates='keep' kept {rep.describe()}: exact ones give zero distances "
            "(those points are excluded), near ones shrink distance ratios and inflate the "
            "estimate. Use duplicates='drop' (default).", RuntimeWarning, stacklevel=4)
    elif rep.policy in ("drop", "weight") and rep.fraction > DUPLICATE_WARN_FRACTION:
        done = "dropped" if rep.policy == "drop" else "merged into weighted representatives"
        warnings.warn(
            f"{fn}: {rep.describe()} were {done}; the estimate uses the {rep.n_kept} distinct "
            "rows.", RuntimeWarning, stacklevel=4)


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


def _cap(value: int, name: str, fn: str, cap: int, why: str) -> int:
    """Refuse a cost parameter above its cap with a one-line error naming both."""
    if value > cap:
        raise ValueError(f"The '{name}' parameter of {fn} must be <= {cap} ({why}). "
                         f"Got {value!r} instead.")
    return value


def _ci_level(ci_level: float, fn: str) -> float:
    return check_float(ci_level, "ci_level", fn, low=0.0, high=1.0, low_inclusive=False,
                       high_inclusive=False)


def _z(ci_level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + ci_level / 2)


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
            "n_exact_duplicates": int(rep.n_exact),
            "neighbor_strategy": t.nb.strategy, "neighbor_rank": int(t.nb.rank),
            "neighbor_fallback_fraction": float(t.nb.fallback_fraction),
            "neighbor_float64_fraction": float(t.nb.float64_fraction),
            "neighbor_direct_fraction": float(t.nb.direct_fraction)}


def _expand(local: np.ndarray, t: _Table) -> np.ndarray:
    """Per-kept-row values -> one value per input row (duplicates share their group's value)."""
    return local[t.nb.duplicates.inverse]


def _wmean(v: np.ndarray, w: np.ndarray) -> float:
    return float((v * w).sum() / w.sum())


def _kept_rows(X: ArrayLike, t: _Table, device: Any = None) -> torch.Tensor:
    """(m, d) float64 rows of X the table is over (unit rows under the cosine metric)."""
    from repscope._validate import as_torch

    rows = as_torch(X, device=device).to(torch.float64)[torch.as_tensor(t.nb.duplicates.kept)]
    if t.nb.metric == "cosine":
        rows = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows


def _unit_rows(X: ArrayLike) -> Any:
    if isinstance(X, torch.Tensor):
        return X / torch.linalg.vector_norm(X, dim=1, keepdim=True)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    """Weighted quantile, inverted-CDF definition (smallest v with cumulative weight >= q)."""
    if w[0] == 1 and (w == 1).all():
        return float(np.quantile(v, q, method="inverted_cdf"))  # O(n) partition
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cw, q * cw[-1] - 1e-12)])
