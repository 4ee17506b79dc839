"""Pure maths shared by every measure: streaming moments and the row bootstrap.

:class:`Moments` is the sufficient statistic of every covariance-based measure. It follows the
init / update / merge / compute pattern: the batch measure is ``Moments.init(d).update(X)``,
a stream is ``update`` per batch, and partial results from many workers ``merge`` with the
pairwise update of Chan, Golub and LeVeque (1979), accumulated in float64.
:func:`bootstrap` resamples row indices for any statistic; :func:`half_sampling` draws halves
of the rows without replacement (the delete-n/2 jackknife); :func:`group_labels` and
:func:`jackknife` are the delete-a-group jackknife (bias correction and standard error).
:func:`max_weight_matching` is the one-to-one (Hungarian) assignment shared by
dictionary and unit matching.

This module sits below the measures and imports none of them. The resampling tests of
registered measures (``permutation_test``, ``bootstrap_ci``, ``paired_test``) live in
:mod:`repscope.inference`; importing them from here still works but is deprecated.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_float, check_int

__all__ = ["Moments", "bootstrap", "group_labels", "half_sampling", "jackknife",
           "max_weight_matching", "merge_comoment", "t_quantile"]

_MOVED = frozenset({"PairedResult", "ResamplingResult", "bootstrap_ci", "paired_test",
                    "permutation_test"})


def __getattr__(name: str) -> Any:
    """The resampling tests moved to :mod:`repscope.inference` (above the measures); the old
    names resolve there with a DeprecationWarning, imported on use (no upward import)."""
    if name in _MOVED:
        warnings.warn(f"repscope.stats.{name} moved to repscope.inference.{name}; import it "
                      f"from there.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("repscope.inference"), name)
    raise AttributeError(f"module 'repscope.stats' has no attribute {name!r}")


def max_weight_matching(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the rows and columns of ``C`` (a, b) maximising the summed
    weight (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``): ``min(a, b)``
    pairs ``(rows[i], cols[i])``, rows ascending."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(C, dtype=np.float64), maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


def merge_comoment(n_a: int, m_a: np.ndarray, n_b: int, m_b: np.ndarray,
                   delta_x: np.ndarray, delta_y: np.ndarray) -> np.ndarray:
    """Centred co-moment sum of two merged partial states (Chan, Golub and LeVeque 1979).

    ``M = M_a + M_b + (n_a n_b / n) delta_x delta_y^T`` with ``n = n_a + n_b`` and
    ``delta = mean_b - mean_a`` of each side; ``M_a``, ``M_b`` are the (d_x, d_y) sums
    ``sum_i (x_i - mean_x)(y_i - mean_y)^T`` of the two parts (``x = y`` for :class:`Moments`).
    """
    return m_a + m_b + np.outer(delta_x, delta_y) * (n_a * n_b / (n_a + n_b))


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred cross-product sum of a stream of rows, in float64.

    ``m2`` is ``sum_i (x_i - mean)(x_i - mean)^T``; the sample covariance is
    ``m2 / (n - ddof)``. Immutable: ``update`` and ``merge`` return new objects.
    """

    n: int
    "Rows seen so far."
    mean: np.ndarray
    "(d,) running mean."
    m2: np.ndarray
    "(d, d) centred sum of outer products."

    @classmethod
    def init(cls, d: int) -> Moments:
        """The empty state for ``d`` features."""
        d = check_int(d, "d", "Moments.init", low=1)
        return cls(0, np.zeros(d), np.zeros((d, d)))

    @property
    def d(self) -> int:
        return self.mean.shape[0]

    def update(self, X: ArrayLike) -> Moments:
        """Add a batch of rows ``X`` of shape ``(b, d)``."""
        X = as_numpy(X, np.float64)  # (b, d)
        if X.ndim != 2 or X.shape[1] != self.d:
            raise ValueError(
                f"Moments.update expects a batch of shape (b, {self.d}); got {X.shape}."
            )
        if X.shape[0] == 0:
            return self
        mean_b = X.mean(axis=0)  # (d,)
        Xc = X - mean_b  # (b, d)
        return self.merge(Moments(X.shape[0], mean_b, Xc.T @ Xc))

    def merge(self, other: Moments) -> Moments:
        """Combine two partial states (associative and commutative up to rounding)."""
        if other.d != self.d:
            raise ValueError(f"Cannot merge Moments of d={self.d} with d={other.d}.")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean  # (d,)
        mean = self.mean + delta * (other.n / n)
        m2 = merge_comoment(self.n, self.m2, other.n, other.m2, delta, delta)
        return Moments(n, mean, m2)

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """(d, d) covariance ``m2 / (n - ddof)``."""
        if self.n - ddof <= 0:
            raise ValueError(
                f"The covariance needs more than ddof={ddof} rows; got n_samples={self.n}."
            )
        return self.m2 / (self.n - ddof)


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """Bootstrap over rows: ``statistic(indices)`` on ``n_boot`` resamples with replacement.

    Returns ``(stderr, (low, high), replicates)`` with a percentile interval. Replicates that
    come back NaN are dropped; if more than half do, the stderr and interval are NaN.
    """
    n_boot = check_int(n_boot, "n_boot", "bootstrap", low=2)
    ci_level = check_float(ci_level, "ci_level", "bootstrap", low=0, high=1,
                           low_inclusive=False, high_inclusive=False)
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)], dtype=float)
    ok = reps[np.isfinite(reps)]
    if ok.size < n_boot / 2:
        return float("nan"), (float("nan"), float("nan")), reps
    alpha = (1 - ci_level) / 2
    lo, hi = np.quantile(ok, [alpha, 1 - alpha])
    return float(ok.std(ddof=1)), (float(lo), float(hi)), reps


def half_sampling(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    n_draws: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """Half-sampling: ``statistic(indices)`` on ``n_draws`` halves of the rows, no replacement.

    The delete-d jackknife of Shao and Wu (1989, Ann. Statist. 17:1176) with ``d = n - r``
    rows left out and ``r = n // 2`` kept, evaluated on seeded random subsets. Its standard
    error ``sqrt(r / d) std(values)`` is consistent for smooth and for non-smooth statistics
    (sample quantiles, neighbour overlaps) when ``d / n`` stays away from 0 and 1, and the
    halves hold no duplicated rows, so statistics built on pairwise distances or U-statistics
    see no artificial ties. Returns ``(stderr, (lo, hi), values)`` where ``(lo, hi)`` are the
    ``ci_level`` quantiles of the scaled deviations ``sqrt(r / d) (values - median)``: an
    interval is ``estimate + (lo, hi)`` and always contains the estimate (``lo <= 0 <= hi``).
    Values that come back NaN are dropped; if more than half do, everything is NaN.
    """
    n_draws = check_int(n_draws, "n_draws", "half_sampling", low=2)
    ci_level = check_float(ci_level, "ci_level", "half_sampling", low=0, high=1,
                           low_inclusive=False, high_inclusive=False)
    r = n // 2
    if r < 2:
        raise ValueError(f"half_sampling needs at least 4 rows; got n_samples={n}.")
    rng = np.random.default_rng(seed)
    vals = np.array([statistic(np.sort(rng.choice(n, size=r, replace=False)))
                     for _ in range(n_draws)], dtype=float)
    ok = vals[np.isfinite(vals)]
    if ok.size < n_draws / 2:
        return float("nan"), (float("nan"), float("nan")), vals
    scale = np.sqrt(r / (n - r))
    dev = scale * (ok - np.median(ok))
    alpha = (1 - ci_level) / 2
    lo, hi = np.quantile(dev, [alpha, 1 - alpha])
    return float(scale * ok.std(ddof=1)), (float(min(lo, 0.0)), float(max(hi, 0.0))), vals


def group_labels(key: ArrayLike, groups: int, *, seed: int = 0) -> np.ndarray:
    """(n,) group of each row, ``0 .. g-1`` with ``g = min(groups, n)``, from a row ``key``.

    Rows are ranked by ``key`` (one number per row, e.g. its squared centred norm) and the
    ranks are dealt to groups through a seeded permutation of the rank positions. The groups
    are a pseudo-random partition with sizes differing by at most one that depends on the
    rows only through the ranks of their keys: re-ordering the rows moves each row's group
    with it, and a key that is invariant to a transformation of the data (rotation, scale)
    gives a grouping invariant to it too.
    """
    key = as_numpy(key, np.float64).ravel()
    n = key.shape[0]
    g = check_int(groups, "groups", "group_labels", low=2)
    g = min(g, n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(key, kind="stable")] = np.arange(n)
    position = np.random.default_rng(seed).permutation(n)  # (n,) rank -> dealing position
    return position[rank] % g


def jackknife(theta: float, values: ArrayLike, sizes: ArrayLike, n: int) -> tuple[float, float]:
    """Bias-corrected estimate and standard error of the delete-a-group jackknife.

    ``theta`` is the statistic on all ``n`` rows, ``values[k]`` on the rows without group
    ``k`` of ``sizes[k]`` rows. With ``h_k = n / m_k`` and pseudo-values
    ``p_k = h_k theta - (h_k - 1) values[k]`` (the delete-m_k jackknife for unequal groups of
    Busing, Meijer and van der Leeden, 1999, Stat. Comput. 9:3), the corrected estimate is
    ``g theta - sum_k (1 - m_k / n) values[k]`` and its variance
    ``(1/g) sum_k (p_k - corrected)^2 / (h_k - 1)``. Equal groups give Quenouille's
    ``g theta - (g - 1) mean(values)`` and Tukey's ``(g - 1)/g sum_k (values[k] - mean)^2``;
    groups of one row the delete-1 jackknife. The correction removes the O(1/n) term of the
    bias; the standard error (with ``g - 1`` degrees of freedom) describes the sampling
    variability of ``theta`` and, to first order, of the corrected value.
    """
    v = as_numpy(values, np.float64).ravel()
    m = as_numpy(sizes, np.float64).ravel()
    g = v.shape[0]
    if g < 2 or m.shape[0] != g:
        raise ValueError(f"jackknife needs at least 2 groups with one size each; got {g} "
                         f"values and {m.shape[0]} sizes.")
    h = n / m  # (g,)
    corrected = g * theta - float(np.sum((1.0 - m / n) * v))
    pseudo = h * theta - (h - 1.0) * v  # (g,)
    var = float(np.mean((pseudo - corrected) ** 2 / (h - 1.0)))
    return corrected, float(np.sqrt(var))


def t_quantile(ci_level: float, df: int) -> float:
    """Two-sided ``ci_level`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + ci_level / 2, df))
