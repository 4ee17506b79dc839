"""Pure maths shared by every measure: streaming moments and the row bootstrap.

:class:`Moments` is the sufficient statistic of every covariance-based measure. It follows the
init / update / merge / compute pattern: the batch measure is ``Moments.init(d).update(X)``,
a stream is ``update`` per batch, and partial results from many workers ``merge`` with the
pairwise update of Chan, Golub and LeVeque (1979), accumulated in float64.
:func:`bootstrap` resamples row indices for any statistic.

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

__all__ = ["Moments", "bootstrap", "merge_comoment"]

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
