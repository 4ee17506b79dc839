"""Outlier dimensions (coordinates with extreme variance or magnitude) and norm-outlier rows.

Both use the same two-part rule, robust to the masking that many outliers cause in a plain
mean +/- k std rule: an item is an outlier when its statistic ``s`` has a robust z-score
``(s - median(s)) / (1.4826 MAD(s)) > threshold`` AND ``s > min_ratio * median(s)``. The
z-score part is the "k standard deviations" rule of Kovaleva et al. (2021) made robust; the
ratio part keeps the statistical noise of many equal coordinates (whose MAD shrinks like
1/sqrt(n)) from being flagged.
"""

from __future__ import annotations

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_array, check_choice, check_float
from repscope.measures.spectrum.stream import (
    CovarianceAccumulator,
    check_state,
    moments_of,
)
from repscope.registry import Streaming, register
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = ["norm_outliers", "outlier_dimensions", "robust_outliers"]


def robust_outliers(s: np.ndarray, threshold: float, min_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-scores of ``s`` and the indices flagged by the two-part rule, largest first."""
    med = float(np.median(s))
    mad = 1.4826 * float(np.median(np.abs(s - med)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (s - med) / mad if mad > 0 else np.where(s > med, np.inf, 0.0)  # (m,)
    flagged = (z > threshold) & (s > min_ratio * med)
    idx = np.flatnonzero(flagged)
    return z, idx[np.argsort(-s[idx], kind="stable")].astype(np.int64)


def _outlier_dimensions(state: Moments, *, criterion: str = "variance", threshold: float = 3.0,
                        min_ratio: float = 5.0) -> Estimate:
    fn = "outlier_dimensions"
    check_state(state, fn)
    criterion = check_choice(criterion, "criterion", fn, ["variance", "second_moment"])
    threshold = check_float(threshold, "threshold", fn, low=0.0)
    min_ratio = check_float(min_ratio, "min_ratio", fn, low=1.0)
    var = np.diag(state.m2) / (state.n - 1)  # (d,)
    s = var if criterion == "variance" else np.diag(state.m2) / state.n + state.mean**2  # (d,)
    z, idx = robust_outliers(s, threshold, min_ratio)
    total_var, total_s = float(var.sum()), float(s.sum())
    return Estimate(
        measure=fn, value=float(idx.size), n_samples=state.n,
        params={"criterion": criterion, "threshold": threshold, "min_ratio": min_ratio},
        diagnostics={
            "indices": idx,
            "variance_share": float(var[idx].sum() / total_var) if total_var > 0 else 0.0,
            "statistic_share": float(s[idx].sum() / total_s) if total_s > 0 else 0.0,
            "statistic": s, "z": np.nan_to_num(z, posinf=np.finfo(np.float64).max),
            "median": float(np.median(s)),
        },
    )


@register("outlier_dimensions", family="outliers",
          invariances={"translation", "scale", "permutation"}, bounds=(0.0, None),
          default_panel=True,
          accumulator=Streaming(CovarianceAccumulator, _outlier_dimensions))
def outlier_dimensions(X: ArrayLike, *, criterion: str = "variance", threshold: float = 3.0,
                       min_ratio: float = 5.0) -> Estimate:
    """Number of outlier dimensions: coordinates whose variance (or magnitude) dwarfs the rest.

    Per coordinate j the statistic is ``s_j = Var(x_j)`` (``criterion="variance"``) or the
    second moment ``E[x_j^2]`` (``"second_moment"``, which also catches large constant
    offsets). ``j`` is an outlier when ``(s_j - median(s)) / (1.4826 MAD(s)) > threshold``
    and ``s_j > min_ratio * median(s)`` (Kovaleva et al. 2021, "BERT busters", Findings of ACL:
    > 3 sigma; Puccetti et al. 2022, "Outlier dimensions that disrupt transformers are driven
    by frequency"). ``diagnostics``: ``indices`` (largest first), ``variance_share`` (share
    of the total variance in the outlier coordinates), per-coordinate ``statistic`` and ``z``.
    The default ``min_ratio=5`` keeps only coordinates that dwarf the typical one (on the
    bundled MiniLM, blocks 1-5 have 1-54 coordinates above 2x the median variance but 0-2
    above 10x). A count: compare across widths as a share (``variance_share``), not the count.
    """
    return _outlier_dimensions(moments_of(X, "outlier_dimensions"), criterion=criterion,
                               threshold=threshold, min_ratio=min_ratio)


@register("norm_outliers", family="outliers", invariances={"rotation", "scale", "permutation"},
          bounds=(0.0, 1.0))
def norm_outliers(X: ArrayLike, *, threshold: float = 3.0, min_ratio: float = 3.0) -> Estimate:
    """Fraction of rows whose Euclidean norm is an outlier (attention-sink style rows).

    With ``r_i = ||x_i||``, row ``i`` is flagged when
    ``(r_i - median(r)) / (1.4826 MAD(r)) > threshold`` and ``r_i > min_ratio * median(r)``.
    Massive-norm rows (e.g. the first token of a sequence, "attention sinks": Xiao et al.
    2024; Sun et al. 2024, "Massive activations in large language models") dominate means,
    covariances and cosines, so they are worth finding before any other geometry.
    ``diagnostics``: ``indices`` (largest first), ``norms`` (per row), ``z``, ``median_norm``
    and ``norm_share`` (share of the summed squared norm in flagged rows). Rotation and scale
    invariant, not translation invariant. Comparable across widths (a fraction of rows).
    """
    fn = "norm_outliers"
    X = check_array(X, fn, min_samples=2)
    threshold = check_float(threshold, "threshold", fn, low=0.0)
    min_ratio = check_float(min_ratio, "min_ratio", fn, low=1.0)
    r = np.linalg.norm(as_numpy(X, np.float64), axis=1)  # (n,)
    z, idx = robust_outliers(r, threshold, min_ratio)
    sq = r**2
    return Estimate(
        measure=fn, value=float(idx.size / r.size), n_samples=int(r.size),
        params={"threshold": threshold, "min_ratio": min_ratio},
        diagnostics={"indices": idx, "norms": r, "median_norm": float(np.median(r)),
                     "z": np.nan_to_num(z, posinf=np.finfo(np.float64).max),
                     "norm_share": float(sq[idx].sum() / sq.sum()) if sq.sum() > 0 else 0.0},
    )
