"""Spread and isotropy: mean cosine (anisotropy), IsoScore, and the common-mean share.

All three are dimensionless and bounded, so they can be compared across models of different
width d (see ``docs/spectrum.md`` for which measures can and cannot). All are streamable.
"""

from __future__ import annotations

import numpy as np

from repscope._validate import ArrayLike, check_array
from repscope.measures._finite_sample import finite_sample_check, participation_ratio_of
from repscope.measures.spectrum.stream import (
    CovarianceAccumulator,
    UnitSum,
    UnitSumAccumulator,
    check_state,
    covariance_eigenvalues,
    degenerate,
    moments_of,
)
from repscope.registry import Streaming, register
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = ["anisotropy", "common_mean_share", "isoscore", "isoscore_from_eigenvalues"]


# ----------------------------------------------------------------------------- anisotropy
def _anisotropy(state: UnitSum) -> Estimate:
    if state.n < 2:
        raise ValueError(f"anisotropy needs at least 2 samples (rows); got n_samples={state.n}.")
    n = state.n
    s2 = float(state.total @ state.total)  # ||sum_i u_i||^2
    value = (s2 - n) / (n * (n - 1))
    return Estimate(measure="anisotropy", value=float(np.clip(value, -1.0, 1.0)), n_samples=n,
                    params={}, diagnostics={"mean_unit_vector_norm": float(np.sqrt(s2) / n)})


@register("anisotropy", family="spread", invariances={"rotation", "scale", "permutation"},
          bounds=(-1.0, 1.0), default_panel=True,
          accumulator=Streaming(UnitSumAccumulator, _anisotropy))
def anisotropy(X: ArrayLike) -> Estimate:
    """Anisotropy: the mean cosine similarity between distinct rows (Ethayarajh 2019, EMNLP).

    ``A = 1/(n(n-1)) sum_{i != j} cos(x_i, x_j) = (||sum_i u_i||^2 - n) / (n(n-1))`` with
    ``u_i = x_i / ||x_i||``: exact over all pairs in O(n d) time and O(d) memory (no n x n
    matrix). About 0 for a centred isotropic distribution, near 1 when all rows share a
    direction. Uncentred by definition, so not translation invariant. Dimensionless and
    comparable across widths (its sampling spread under isotropy shrinks like 1/sqrt(d)).
    Rows of zero norm raise a ValueError.
    """
    X = check_array(X, "anisotropy", min_samples=2)
    return UnitSumAccumulator.empty("anisotropy", X.shape[1]).update(X).compute()


# ----------------------------------------------------------------------------- IsoScore
def isoscore_from_eigenvalues(ev: np.ndarray) -> float:
    """IsoScore from the variances of the PCA-reoriented data (= covariance eigenvalues)."""
    ev = np.asarray(ev, dtype=np.float64)
    d = ev.size
    norm = np.linalg.norm(ev)
    if norm <= 0:
        return degenerate("isoscore", "the covariance is zero: constant data")
    sigma = np.sqrt(d) * ev / norm  # (d,) with ||sigma|| = sqrt(d)
    delta = np.linalg.norm(sigma - 1.0) / np.sqrt(2 * (d - np.sqrt(d)))
    k = (d - delta**2 * (d - np.sqrt(d))) ** 2 / d**2
    return float(np.clip((d * k - 1) / (d - 1), 0.0, 1.0))


def _isoscore(state: Moments) -> Estimate:
    check_state(state, "isoscore")
    if state.d < 2:
        raise ValueError(f"isoscore needs at least 2 features (columns); got n_features={state.d}.")
    ev = covariance_eigenvalues(state, fn="isoscore")  # (d,)
    fs = finite_sample_check("isoscore", state.n, state.d, participation_ratio_of(ev))
    return Estimate(measure="isoscore", value=isoscore_from_eigenvalues(ev), n_samples=state.n,
                    params={}, diagnostics={"eigenvalues": ev, **fs})


@register("isoscore", family="spread", invariances={"rotation", "translation", "scale",
                                                      "permutation"},
          bounds=(0.0, 1.0), default_panel=True,
          accumulator=Streaming(CovarianceAccumulator, _isoscore))
def isoscore(X: ArrayLike) -> Estimate:
    """IsoScore: the fraction of dimensions used isotropically (Rudman et al. 2022, ACL Findings).

    With ``lambda`` the variances of the PCA-reoriented data (the covariance eigenvalues),
    ``s = sqrt(d) lambda / ||lambda||``, ``delta = ||s - 1|| / sqrt(2 (d - sqrt(d)))``,
    ``k = (d - delta^2 (d - sqrt(d)))^2 / d^2`` and ``IsoScore = (d k - 1) / (d - 1)``:
    1 for isotropic data, 0 when all variance lies in one direction. In ``[0, 1]`` and
    comparable across widths as a fraction; zero-variance directions (including the
    ``d - n + 1`` forced ones when n <= d) lower it: isotropic data at n = d/2 reads about 0.33
    (a FiniteSampleWarning says so). NaN with a warning for constant data.
    """
    return _isoscore(moments_of(X, "isoscore"))


# ----------------------------------------------------------------------------- common mean share
def _common_mean_share(state: Moments) -> Estimate:
    check_state(state, "common_mean_share")
    mean_sq = float(state.mean @ state.mean)  # ||mu||^2
    var = float(np.trace(state.m2)) / state.n  # tr of the population covariance
    total = mean_sq + var  # mean squared norm E||x||^2
    value = mean_sq / total if total > 0 else degenerate("common_mean_share", "all rows are zero")
    return Estimate(measure="common_mean_share", value=float(value), n_samples=state.n, params={},
                    diagnostics={"mean_norm": float(np.sqrt(mean_sq)), "total_variance": var})


@register("common_mean_share", family="spread", invariances={"rotation", "scale", "permutation"},
          bounds=(0.0, 1.0), default_panel=True,
          accumulator=Streaming(CovarianceAccumulator, _common_mean_share))
def common_mean_share(X: ArrayLike) -> Estimate:
    """Share of the mean squared norm carried by the common mean vector.

    ``||mu||^2 / E||x||^2 = ||mu||^2 / (||mu||^2 + tr(Sigma))`` with ``Sigma`` the population
    (ddof = 0) covariance: 0 for centred data, 1 when every row is the same vector. It isolates
    the part of anisotropy due to a shared offset (the "common direction" of Mu and Viswanath
    2018, "All-but-the-top"); for high-dimensional data with roughly equal row norms the mean
    cosine is approximately this share. Dimensionless, in ``[0, 1]``, comparable across widths.
    """
    return _common_mean_share(moments_of(X, "common_mean_share"))
