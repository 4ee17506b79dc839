"""Streaming moments and resampling statistics shared by every measure.

:class:`Moments` is the sufficient statistic of every covariance-based measure. It follows the
init / update / merge / compute pattern: the batch measure is ``Moments.init(d).update(X)``,
a stream is ``update`` per batch, and partial results from many workers ``merge`` with the
pairwise update of Chan, Golub and LeVeque (1979), accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_float, check_int

__all__ = [
    "Moments",
    "PairedResult",
    "ResamplingResult",
    "bootstrap",
    "bootstrap_ci",
    "merge_comoment",
    "paired_test",
    "permutation_test",
]


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


# ---------------------------------------------------------------------------------------------
# Resampling tests for any registered measure (issue 5): permutation nulls, bootstrap
# intervals over inputs, and the paired "is A closer to B than to C" test.
# ---------------------------------------------------------------------------------------------
from typing import Any  # noqa: E402

from repscope.results import Estimate, result_type  # noqa: E402


@result_type
@dataclass(frozen=True)
class ResamplingResult(Estimate):
    """A measure's observed value with a permutation null or a bootstrap distribution.

    ``value`` is the measure on the original data; ``diagnostics['null']`` (permutation) or
    ``diagnostics['replicates']`` (bootstrap) holds the resampled values.
    """

    method: str = ""
    "'permutation' or 'bootstrap'."
    p_value: float | None = None
    "Permutation p-value ``(1 + #{null at least as extreme}) / (n_resamples + 1)``."
    alternative: str = ""
    "'greater' (similarities: larger is more similar) or 'less' (distances)."
    null_mean: float | None = None
    "Mean of the permutation null (the chance level of the measure on these data)."
    null_std: float | None = None
    "Standard deviation of the permutation null."
    calibrated: float | None = None
    "``value - null_mean``: the score above (or, for distances, below) chance."
    n_resamples: int = 0
    "Permutations or bootstrap resamples drawn."


@result_type
@dataclass(frozen=True)
class PairedResult(Estimate):
    """Paired bootstrap test of "A is closer to B than to C" on the same inputs.

    ``value`` is the advantage ``D = s(A, B) - s(A, C)`` for a similarity (``d(A, C) - d(A, B)``
    for a distance), so D > 0 means A is closer to B; ``ci`` is its percentile interval.
    """

    value_ab: float | None = None
    "The measure between A and B on the original rows."
    value_ac: float | None = None
    "The measure between A and C on the original rows."
    p_value: float | None = None
    "One-sided bootstrap p-value of H0: D <= 0, ``(1 + #{D* <= 0}) / (n_boot + 1)``."
    n_resamples: int = 0
    "Bootstrap resamples drawn."


def _resolve_measure(measure: Any, params: dict[str, Any] | None, fn: str,
                     ) -> tuple[str, Callable[..., float], bool | None, dict[str, Any]]:
    """(name, f(*arrays) -> float, higher_is_better, resolved params) for a name or callable."""
    if isinstance(measure, str):
        from repscope import registry

        spec = registry.get(measure)
        resolved = spec.resolve_params(params)

        def call(*arrays: Any) -> float:
            return float(spec.fn(*arrays, **resolved).value)

        return spec.name, call, spec.higher_is_better, resolved
    if callable(measure):
        kwargs = dict(params or {})

        def call_fn(*arrays: Any) -> float:
            out = measure(*arrays, **kwargs)
            return float(out.value if isinstance(out, Estimate) else out)

        return getattr(measure, "__name__", "callable"), call_fn, None, kwargs
    raise ValueError(f"The 'measure' parameter of {fn} must be a registered measure name or a "
                     f"callable. Got {measure!r} instead.")


def _prepared_pair(name: str, X: Any, Y: Any, params: dict[str, Any]) -> Any:
    """(compare, state_x, state_y) when the measure's per-side work can be prepared once and
    re-ordered (see ``repscope.measures.similarity.permute_state``); else None."""
    from repscope.measures._sim_common import check_pair, resolve_device
    from repscope.measures.similarity import PREPARED, permute_state

    prepared = PREPARED.get(name)
    if prepared is None:
        return None
    from repscope import registry

    X, Y = check_pair(X, Y, name, min_samples=registry.get(name).min_samples)
    device = resolve_device(X, params.get("device"))
    sy = prepared.prepare(Y, device, params, "Y")
    if permute_state(sy, np.arange(Y.shape[0])) is None:
        return None
    return prepared.compare, prepared.prepare(X, device, params, "X"), sy


def _take(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a numpy array or torch tensor."""
    if hasattr(X, "detach"):
        import torch

        return X[torch.as_tensor(idx, device=X.device)]
    return np.asarray(X)[idx]


def _alternative(alternative: str, higher: bool | None, fn: str) -> str:
    from repscope._validate import check_choice

    check_choice(alternative, "alternative", fn, ("auto", "greater", "less"))
    if alternative != "auto":
        return alternative
    return "less" if higher is False else "greater"


def permutation_test(
    measure: Any,
    X: ArrayLike,
    Y: ArrayLike,
    *,
    n_perm: int = 200,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    alternative: str = "auto",
) -> ResamplingResult:
    """Permutation null for any pair measure: shuffle the rows of Y, recompute, compare.

    Shuffling one side breaks the row correspondence while keeping each representation's
    own geometry, so the null is "X and Y carry no shared information about the inputs".
    ``p = (1 + #{null >= observed}) / (n_perm + 1)`` (``<=`` for distances; Phipson and
    Smyth, 2010), exact-size under the null. ``calibrated = observed - mean(null)`` removes the
    chance level (e.g. biased CKA of unrelated representations is far from 0 at small n).
    ``alternative="auto"`` takes 'greater' for similarities and 'less' for distances.
    """
    fn = "permutation_test"
    n_perm = check_int(n_perm, "n_perm", fn, low=1)
    name, call, higher, resolved = _resolve_measure(measure, params, fn)
    alt = _alternative(alternative, higher, fn)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    fast = _prepared_pair(name, X, Y, resolved) if isinstance(measure, str) else None
    if fast is not None:  # prepare both sides once, then only re-order Y's prepared rows
        from repscope.measures.similarity import permute_state

        compare, sx, sy = fast
        observed = float(compare(sx, sy, resolved).value)
        null = np.array([compare(sx, permute_state(sy, rng.permutation(n)), resolved).value
                         for _ in range(n_perm)], dtype=float)
    else:
        observed = call(X, Y)
        null = np.array([call(X, _take(Y, rng.permutation(n))) for _ in range(n_perm)])
    extreme = null >= observed if alt == "greater" else null <= observed
    p = (1 + int(extreme.sum())) / (n_perm + 1)
    mean, std = float(null.mean()), float(null.std(ddof=1)) if n_perm > 1 else float("nan")
    z = (observed - mean) / std if std and np.isfinite(std) and std > 0 else float("nan")
    return ResamplingResult(
        measure=name, value=observed, n_samples=n,
        params={**resolved, "n_perm": n_perm, "seed": seed, "alternative": alt},
        diagnostics={"null": null, "z": z}, method="permutation", p_value=p, alternative=alt,
        null_mean=mean, null_std=std, calibrated=observed - mean, n_resamples=n_perm,
    )


def bootstrap_ci(
    measure: Any,
    X: ArrayLike,
    Y: ArrayLike | None = None,
    *,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> ResamplingResult:
    """Bootstrap over inputs: resample rows with replacement (the same rows of X and Y).

    Returns the observed value with the bootstrap standard error and percentile interval
    (via :func:`bootstrap`). Resampling duplicates rows: measures built on neighbours or
    pairwise distances see zero distances between copies, so their intervals are only
    indicative; covariance-based measures (CKA, CCA, Procrustes) are not affected that way.
    """
    fn = "bootstrap_ci"
    name, call, _, resolved = _resolve_measure(measure, params, fn)
    arrays = (X,) if Y is None else (X, Y)
    observed = call(*arrays)
    stderr, ci, reps = bootstrap(lambda idx: call(*(_take(A, idx) for A in arrays)),
                                 X.shape[0], n_boot=n_boot, seed=seed, ci_level=ci_level)
    return ResamplingResult(
        measure=name, value=observed, n_samples=X.shape[0], stderr=stderr, ci=ci,
        params={**resolved, "n_boot": n_boot, "ci_level": ci_level, "seed": seed,
                "uncertainty": "bootstrap"},
        diagnostics={"replicates": reps}, method="bootstrap", n_resamples=n_boot,
    )


def paired_test(
    measure: Any,
    A: ArrayLike,
    B: ArrayLike,
    C: ArrayLike,
    *,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> PairedResult:
    """Is A closer to B than to C? A paired bootstrap over the shared inputs.

    All three representations describe the same n inputs. Each resample draws rows with
    replacement and recomputes ``D = s(A, B) - s(A, C)`` on the *same* rows for both terms, so
    the input-to-input variability common to both comparisons cancels. Reports D, its
    percentile interval, and ``p = (1 + #{D* <= 0}) / (n_boot + 1)`` for H0: D <= 0.
    """
    fn = "paired_test"
    n = A.shape[0]
    for name, M in (("B", B), ("C", C)):
        if M.shape[0] != n:
            raise ValueError(f"{fn} compares representations of the same inputs, so 'A' and "
                             f"'{name}' must have the same number of rows; got {n} and "
                             f"{M.shape[0]}.")
    mname, call, higher, resolved = _resolve_measure(measure, params, fn)
    sign = -1.0 if higher is False else 1.0

    def advantage(idx: np.ndarray | None) -> tuple[float, float, float]:
        a, b, c = (A, B, C) if idx is None else (_take(A, idx), _take(B, idx), _take(C, idx))
        ab, ac = call(a, b), call(a, c)
        return sign * (ab - ac), ab, ac

    d, ab, ac = advantage(None)
    stderr, ci, reps = bootstrap(lambda idx: advantage(idx)[0], n, n_boot=n_boot, seed=seed,
                                 ci_level=ci_level)
    ok = reps[np.isfinite(reps)]
    p = (1 + int((ok <= 0).sum())) / (ok.size + 1)
    return PairedResult(
        measure=mname, value=d, n_samples=n, stderr=stderr, ci=ci,
        params={**resolved, "n_boot": n_boot, "ci_level": ci_level, "seed": seed},
        diagnostics={"replicates": reps}, value_ab=ab, value_ac=ac, p_value=p,
        n_resamples=n_boot,
    )
