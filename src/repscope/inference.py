"""Resampling tests for any registered measure: permutation nulls, bootstrap intervals over
inputs, jackknife intervals, and the paired "is A closer to B than to C" test.

This module sits above the measures: it looks measures up in the registry and uses their
prepared capability (:class:`repscope.registry.Prepared`) when they have one, so a
permutation test prepares X and Y once and only re-orders Y's prepared state per shuffle (or,
with a batched ``null``, computes many shuffles in one product), and a jackknife interval uses
the measure's own leave-out path. The resampling primitives are in :mod:`repscope.stats`.

Intervals of pair measures (``docs/similarity.md``, "Intervals"): resampling rows WITH
replacement duplicates rows, which shrinks the effective sample and adds plug-in bias, so the
percentile bootstrap of a similarity sits beside, not around, its estimate. ``jackknife_ci``
(delete-1 where the measure has it in closed form, else delete-a-group) and ``bootstrap_ci``'s
default for pair measures, half-sampling without replacement, give intervals centred on the
estimate that describe its sampling variability.
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
    as_numpy,
    check_array,
    check_choice,
    check_float,
    check_int,
    check_paired,
    resolve_device,
)
from repscope.results import Estimate, result_type
from repscope.stats import bootstrap, group_labels, half_sampling, jackknife, t_quantile

__all__ = ["PairedResult", "ResamplingResult", "adjusted_score", "bootstrap_ci", "jackknife_ci",
           "paired_test", "permutation_test"]

INTERVALS = ("auto", "half_sampling", "percentile")
"``bootstrap_ci`` methods: ``auto`` = half-sampling for pair measures, percentile otherwise."


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
    adjusted: float | None = None
    """``(value - null_mean) / (best - null_mean)`` (:func:`adjusted_score`): 0 at chance, 1 at
    the measure's best value, comparable across widths and sample sizes."""
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


def adjusted_score(value: float, null_mean: float, best: float | None) -> float:
    """Chance-adjusted score ``(value - null_mean) / (best - null_mean)``.

    The correction-for-chance form of Hubert and Arabie's adjusted Rand index (J. Classif. 2,
    1985) and of Cohen's kappa: ``index - expected index`` over ``maximum - expected index``,
    with the expectation taken under the permutation null (rows of Y randomly re-paired with
    those of X). It is 0 in expectation for unrelated representations, 1 at the measure's
    best value (its upper bound for a similarity, its lower bound for a distance: the sign
    takes care of both), and, for a plug-in whose bias shrinks as ``(1 - s)`` times its chance
    level (biased CKA), it recovers the population value ``s`` to first order, whatever the
    widths and n. NaN when the measure has no finite best value or the null sits at it.
    """
    if best is None or not np.isfinite(best) or best == null_mean:
        return float("nan")
    return float((value - null_mean) / (best - null_mean))


def _best(spec: registry.MeasureSpec | None) -> float | None:
    """The best value of a registered measure: upper bound (similarity) or lower (distance)."""
    if spec is None or spec.higher_is_better is None:
        return None
    lo, hi = spec.bounds
    return hi if spec.higher_is_better else lo


def _prepared_states(spec: registry.MeasureSpec, X: Any, Y: Any, params: dict[str, Any]
                     ) -> tuple[Any, Any, Any]:
    """Validate X, Y and prepare both once: ``(device, state_x, state_y)``."""
    p = spec.prepared
    X = check_array(X, spec.name, name="X", min_samples=spec.min_samples)
    Y = check_array(Y, spec.name, name="Y", min_samples=spec.min_samples)
    check_paired(X, Y, spec.name)
    device = resolve_device(X, params.get("device"))
    return device, p.prepare(X, device, params, "X"), p.prepare(Y, device, params, "Y")


def _prepared_null(spec: registry.MeasureSpec, X: Any, Y: Any, params: dict[str, Any],
                   perms: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Observed value and null through the measure's prepared path: X and Y prepared once;
    with a batched ``null`` many shuffles cost one larger product (draws within
    :data:`registry.NULL_RTOL` of the observed value are recomputed one by one, so a
    mixed-precision null never moves a p-value); else Y's state re-ordered per shuffle (or
    Y's shuffled rows prepared, without ``permute``)."""
    p = spec.prepared
    device, sx, sy = _prepared_states(spec, X, Y, params)

    def shuffled(perm: np.ndarray) -> Any:
        if p.permute is not None:
            return p.permute(sy, perm)
        return p.prepare(take_rows(Y, perm), device, params, "Y")

    observed = float(p.compare(sx, sy, params).value)
    if p.null is not None and perms:
        null = np.asarray(p.null(sx, sy, np.stack(perms), params), dtype=float)
        close = np.flatnonzero(np.abs(null - observed)
                               <= registry.NULL_RTOL * max(1.0, abs(observed)))
        for k in close:
            null[k] = p.compare(sx, shuffled(perms[k]), params).value
        return observed, null
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
    chance level (e.g. biased CKA of unrelated representations is far from 0 at small n) and
    ``adjusted = (observed - mean(null)) / (best - mean(null))`` (:func:`adjusted_score`) also
    rescales it, so scores of layers of different widths and of different n can be compared.
    ``alternative="auto"`` takes 'greater' for similarities and 'less' for distances. A
    registered measure with a prepared path prepares X and Y once; linear CKA (both variants)
    computes each shuffle as one cross product of the prepared sides (``Prepared.null``: a
    draw at a time on a CPU, batched on an accelerator), 1.0-1.2x the time of the bare
    products (benchmarks/permutations.md).

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
        The observed value, ``p_value``, ``null_mean``, ``null_std``, ``calibrated``,
        ``adjusted`` and the null values in ``diagnostics['null']``.
    """
    fn = "permutation_test"
    n_perm = check_int(n_perm, "n_perm", fn, low=1)
    name, call, higher, resolved = _resolve_measure(measure, params, fn)
    alt = _alternative(alternative, higher, fn)
    X, Y = check_array(X, fn, name="X"), check_array(Y, fn, name="Y")
    check_paired(X, Y, fn)
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
        null_mean=mean, null_std=std, calibrated=observed - mean,
        adjusted=adjusted_score(observed, mean, _best(spec)), n_resamples=n_perm,
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
    method: str = "auto",
) -> ResamplingResult:
    """Resampling interval over inputs (the same rows of X and Y in every draw).

    ``method="half_sampling"`` (the default for pair measures, ``"auto"``) draws ``n_boot``
    halves of the rows WITHOUT replacement (the delete-n/2 jackknife of Shao and Wu, 1989,
    :func:`repscope.stats.half_sampling`) and reports ``value + sqrt(r/(n - r)) (q - median)``
    over the quantiles ``q`` of the half-sample values: no row is ever duplicated, the
    interval is centred on the estimate and always contains it, and it describes the
    sampling variability of the estimate (around its expectation: a plug-in's bias is not
    in it, use a corrected measure for that). ``"percentile"`` (the default for single
    measures) is Efron's percentile bootstrap with replacement: its copies of rows look like
    a smaller sample to a plug-in similarity (CKA, CCA, Procrustes) and like zero distances to
    neighbour and distance measures, so for pair measures it sits beside the estimate (e.g.
    linear CKA 0.395 with [0.421, 0.436] at d = 64, n = 1,000) and is kept only for
    comparison. :func:`jackknife_ci` is the fast alternative for measures with a leave-out path.

    Parameters
    ----------
    measure : a registered measure name (single or pair), or a callable returning an
        ``Estimate`` or a float.
    X : (n, d) representation; Y : (n, d_y) second representation for pair measures.
    n_boot : resamples; ci_level : level of the interval; seed : their seed.
    params : the measure's parameters.
    method : 'auto', 'half_sampling' or 'percentile'.

    Returns
    -------
    ResamplingResult
        The observed value with ``stderr``, ``ci`` and ``diagnostics['replicates']``;
        ``params['interval']`` names the method used.
    """
    fn = "bootstrap_ci"
    method = check_choice(method, "method", fn, INTERVALS)
    name, call, _, resolved = _resolve_measure(measure, params, fn)
    arrays = (X,) if Y is None else (X, Y)
    if method == "auto":
        method = "percentile" if Y is None else "half_sampling"
    observed = call(*arrays)

    def stat(idx: np.ndarray) -> float:
        return call(*(take_rows(A, idx) for A in arrays))

    if method == "percentile":
        stderr, ci, reps = bootstrap(stat, X.shape[0], n_boot=n_boot, seed=seed,
                                     ci_level=ci_level)
    else:
        stderr, (lo, hi), reps = half_sampling(stat, X.shape[0], n_draws=n_boot, seed=seed,
                                               ci_level=ci_level)
        ci = (observed + lo, observed + hi)
    return ResamplingResult(
        measure=name, value=observed, n_samples=X.shape[0], stderr=stderr, ci=ci,
        params={**resolved, "n_boot": n_boot, "ci_level": ci_level, "seed": seed,
                "uncertainty": "bootstrap", "interval": method},
        diagnostics={"replicates": reps}, method="bootstrap", n_resamples=n_boot,
    )


def jackknife_ci(
    measure: str,
    X: ArrayLike,
    Y: ArrayLike,
    *,
    groups: int = 20,
    ci_level: float = 0.95,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> ResamplingResult:
    """Jackknife standard error and t interval of a registered pair measure, around its value.

    Uses the measure's leave-out path (:attr:`repscope.registry.Prepared.jackknife`): the
    exact delete-1 jackknife in closed form for linear CKA and debiased CKA (every
    leave-one-out value from rank-one downdates, about the cost of three evaluations), the
    delete-a-group jackknife with ``groups`` groups for the other moment-based measures (CCA
    family, Procrustes, ``shape_alpha``), and ``groups`` recomputations on the rows without
    each group otherwise. Groups are dealt from the ranks of a row key through a ``seed``-ed
    permutation, so the result does not depend on row order. With ``g`` values and group
    sizes ``m_k``, :func:`repscope.stats.jackknife` gives the standard error (Tukey's, in
    Busing et al.'s form for unequal groups) and the interval is
    ``value +- t_(g-1) stderr`` (Student's t with ``g - 1`` degrees of freedom): it contains
    the value and covers its expectation at about ``ci_level`` (the jackknife variance of
    a smooth function of U-statistics is consistent, Arvesen 1969). The jackknife
    bias estimate ``value - corrected`` is in ``diagnostics['bias_estimate']``; for a plug-in
    with a large bias prefer its corrected variant (the interval is about the sampling
    variability, not the bias).

    Parameters
    ----------
    measure : a registered pair measure name.
    X, Y : (n, d_x) and (n, d_y) representations of the same n inputs.
    groups : groups for the delete-a-group jackknife (ignored by delete-1 paths).
    ci_level : level of the interval; seed : seed of the grouping.
    params : the measure's parameters.

    Returns
    -------
    ResamplingResult
        ``method='jackknife'``, ``stderr``, ``ci`` and ``diagnostics['leave_out']``.
    """
    fn = "jackknife_ci"
    if not isinstance(measure, str):
        raise ValueError(f"The 'measure' parameter of {fn} must be a registered pair measure "
                         f"name. Got {measure!r} instead.")
    spec = registry.get(measure)
    if spec.kind != "pair":
        raise ValueError(f"The 'measure' parameter of {fn} must be a registered pair measure "
                         f"name. Got {measure!r} (a {spec.kind} measure) instead.")
    groups = check_int(groups, "groups", fn, low=2)
    seed = check_int(seed, "seed", fn)
    resolved = spec.resolve_params(params)
    ci_level = check_float(ci_level, "ci_level", fn, low=0, high=1, low_inclusive=False,
                           high_inclusive=False)
    p = spec.prepared
    if p is not None and p.jackknife is not None:
        _, sx, sy = _prepared_states(spec, X, Y, resolved)
        observed = float(p.compare(sx, sy, resolved).value)
        values, sizes = p.jackknife(sx, sy, resolved, groups, seed)
    else:
        X = check_array(X, spec.name, name="X", min_samples=spec.min_samples)
        Y = check_array(Y, spec.name, name="Y", min_samples=spec.min_samples)
        check_paired(X, Y, spec.name)
        observed = float(spec.fn(X, Y, **resolved).value)
        values, sizes = _grouped_leave_out(spec, X, Y, resolved, groups, seed)
    n = X.shape[0]
    values, sizes = np.asarray(values, dtype=float), np.asarray(sizes, dtype=float)
    ok = np.isfinite(values)
    if ok.sum() < 2:
        raise ValueError(f"{fn}: fewer than 2 leave-out values of {spec.name} are finite; "
                         f"use more rows or fewer groups.")
    corrected, se = jackknife(observed, values[ok], sizes[ok], n)
    half = t_quantile(ci_level, int(ok.sum()) - 1) * se
    return ResamplingResult(
        measure=spec.name, value=observed, n_samples=n, stderr=se,
        ci=(observed - half, observed + half),
        params={**resolved, "groups": int(ok.sum()), "ci_level": ci_level, "seed": seed,
                "uncertainty": "jackknife",
                "interval": "delete-1" if np.all(sizes == 1) else "delete-a-group"},
        diagnostics={"leave_out": values, "group_sizes": sizes,
                     "bias_estimate": observed - corrected},
        method="jackknife", n_resamples=int(ok.sum()),
    )


def _grouped_leave_out(spec: registry.MeasureSpec, X: Any, Y: Any, params: dict[str, Any],
                       groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The measure recomputed without each of ``groups`` groups of rows (no leave-out path).

    Rows are grouped from the ranks of their squared centred norms (both sides), so the
    groups follow the rows when they are re-ordered."""
    Xn, Yn = as_numpy(X, np.float64), as_numpy(Y, np.float64)  # (n, d_x), (n, d_y)
    key = (np.sum((Xn - Xn.mean(0)) ** 2, 1) / max(np.sum((Xn - Xn.mean(0)) ** 2), 1e-300)
           + np.sum((Yn - Yn.mean(0)) ** 2, 1) / max(np.sum((Yn - Yn.mean(0)) ** 2), 1e-300))
    labels = group_labels(key, groups, seed=seed)
    g = int(labels.max()) + 1
    values, sizes = np.empty(g), np.empty(g)
    for k in range(g):
        keep = np.flatnonzero(labels != k)
        try:
            values[k] = spec.fn(take_rows(X, keep), take_rows(Y, keep), **params).value
        except ValueError:
            values[k] = np.nan
        sizes[k] = X.shape[0] - keep.shape[0]
    return values, sizes


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
