"""Resampling tests for any registered measure: permutation nulls, bootstrap intervals over
inputs, and the paired "is A closer to B than to C" test.

This module sits above the measures: it looks measures up in the registry and uses their
prepared capability (:class:`repscope.registry.Prepared`) when they have one, so a
permutation test prepares X and Y once and only re-orders Y's prepared state per shuffle. The
row bootstrap itself is the plain :func:`repscope.stats.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope import registry
from repscope._arrays import take_rows
from repscope._validate import (
    ArrayLike,
    check_array,
    check_choice,
    check_int,
    check_paired,
    resolve_device,
)
from repscope.results import Estimate, result_type
from repscope.stats import bootstrap

__all__ = ["PairedResult", "ResamplingResult", "bootstrap_ci", "paired_test", "permutation_test"]


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


def _alternative(alternative: str, higher: bool | None, fn: str) -> str:
    check_choice(alternative, "alternative", fn, ("auto", "greater", "less"))
    if alternative != "auto":
        return alternative
    return "less" if higher is False else "greater"


def _prepared_null(spec: registry.MeasureSpec, X: Any, Y: Any, params: dict[str, Any],
                   perms: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Observed value and null through the measure's prepared path: X and Y prepared once,
    Y's state re-ordered per shuffle (or Y's shuffled rows prepared, without ``permute``)."""
    p = spec.prepared
    X = check_array(X, spec.name, name="X", min_samples=spec.min_samples)
    Y = check_array(Y, spec.name, name="Y", min_samples=spec.min_samples)
    check_paired(X, Y, spec.name)
    device = resolve_device(X, params.get("device"))
    sx, sy = p.prepare(X, device, params, "X"), p.prepare(Y, device, params, "Y")

    def shuffled(perm: np.ndarray) -> Any:
        if p.permute is not None:
            return p.permute(sy, perm)
        return p.prepare(take_rows(Y, perm), device, params, "Y")

    observed = float(p.compare(sx, sy, params).value)
    null = np.array([p.compare(sx, shuffled(perm), params).value for perm in perms], dtype=float)
    return observed, null


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
    ``alternative="auto"`` takes 'greater' for similarities and 'less' for distances. A
    registered measure with a prepared path prepares X and Y once.

    Parameters
    ----------
    measure : a registered pair measure name, or any callable ``f(X, Y) -> Estimate | float``.
    X, Y : (n, d_x) and (n, d_y) representations of the same n inputs.
    n_perm : number of shuffles (>= 1).
    seed : seed of the shuffles.
    params : the measure's parameters (registered measures: checked against its signature).
    alternative : 'auto', 'greater' or 'less'.

    Returns
    -------
    ResamplingResult
        The observed value, ``p_value``, ``null_mean``, ``null_std``, ``calibrated`` and the
        null values in ``diagnostics['null']``.
    """
    fn = "permutation_test"
    n_perm = check_int(n_perm, "n_perm", fn, low=1)
    name, call, higher, resolved = _resolve_measure(measure, params, fn)
    alt = _alternative(alternative, higher, fn)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    spec = registry.get(name) if isinstance(measure, str) else None
    if spec is not None and spec.prepared is not None:
        perms = [rng.permutation(n) for _ in range(n_perm)]
        observed, null = _prepared_null(spec, X, Y, resolved, perms)
    else:
        observed = call(X, Y)
        null = np.array([call(X, take_rows(Y, rng.permutation(n))) for _ in range(n_perm)])
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
    (via :func:`repscope.stats.bootstrap`). Resampling duplicates rows: measures built on
    neighbours or pairwise distances see zero distances between copies, so their intervals are
    only indicative; covariance-based measures (CKA, CCA, Procrustes) are not affected that way.

    Parameters
    ----------
    measure : a registered measure name (single or pair), or a callable returning an
        ``Estimate`` or a float.
    X : (n, d) representation; Y : (n, d_y) second representation for pair measures.
    n_boot : resamples; ci_level : level of the percentile interval; seed : their seed.
    params : the measure's parameters.

    Returns
    -------
    ResamplingResult
        The observed value with ``stderr``, ``ci`` and ``diagnostics['replicates']``.
    """
    fn = "bootstrap_ci"
    name, call, _, resolved = _resolve_measure(measure, params, fn)
    arrays = (X,) if Y is None else (X, Y)
    observed = call(*arrays)
    stderr, ci, reps = bootstrap(lambda idx: call(*(take_rows(A, idx) for A in arrays)),
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

    Parameters
    ----------
    measure : a registered pair measure name, or a callable ``f(X, Y)``.
    A, B, C : representations of the same n inputs.
    n_boot : resamples; ci_level : level of the interval; seed : their seed.
    params : the measure's parameters.

    Returns
    -------
    PairedResult
        ``value`` = D (sign flipped for distances), ``value_ab``, ``value_ac``, ``ci``,
        ``p_value``.
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
        a, b, c = (A, B, C) if idx is None else (take_rows(A, idx), take_rows(B, idx), take_rows(C, idx))
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
