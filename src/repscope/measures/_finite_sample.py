"""Finite-sample bias of sample-covariance spectra: one check, one warning, one record.

The eigenvalues of a sample covariance from n rows are spread around the population ones
(Marchenko and Pastur 1967): the large ones are inflated, the small ones deflated, and with
n <= d at most n - 1 of the d eigenvalues are non-zero. Every measure of how variance spreads
over directions (IsoScore, participation ratio, effective rank, spectral and von Neumann
entropy, stable rank, the power-law exponent) is therefore biased when n is not large compared
with the number of directions the data uses.

A scale for "large": for Gaussian rows ``E tr(S^2) ~ tr(Sigma^2) + tr(Sigma)^2 / n``, so the
sample participation ratio reads ``PR / (1 + PR / n)``: its relative downward bias is about
``PR_hat / n`` (``PR_hat`` the sample value). :func:`finite_sample_check` flags a result when
``n <= d`` or ``n < 10 PR_hat`` (bias above about 10 %), records the numbers in the result's
diagnostics (keys ``finite_sample_*``, flat so that streamed and batch results compare key by
key) and emits a :class:`FiniteSampleWarning`. The measured bias of
each measure on isotropic data is tabulated in ``docs/spectrum.md``
(``benchmarks/spectral_conventions.py``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["ROWS_PER_DIM", "FiniteSampleWarning", "finite_sample_check", "participation_ratio_of"]

ROWS_PER_DIM = 10.0
"Fewer rows than this many per effective dimension (participation ratio) is flagged."


class FiniteSampleWarning(RuntimeWarning):
    """A spectral value computed where its finite-sample bias is large (see the message)."""


def participation_ratio_of(ev: np.ndarray) -> float:
    """``(sum ev)^2 / sum ev^2`` of non-negative eigenvalues; NaN when they are all 0."""
    ev = np.asarray(ev, dtype=np.float64)
    s2 = float(np.sum(ev**2))
    return float(np.sum(ev) ** 2 / s2) if s2 > 0 else float("nan")


def finite_sample_check(fn: str, n: int, d: int, effective_dim: float, *,
                        warn: bool = True) -> dict[str, Any]:
    """Flag (and warn about) a spectrum from too few rows; returns the diagnostics entries.

    ``effective_dim`` is the participation ratio of the sample spectrum the value comes from
    (NaN for a zero spectrum: then only ``n <= d`` is checked). The entries are
    ``finite_sample_biased`` (the flag), ``finite_sample_rank_deficient`` (``n <= d``),
    ``finite_sample_d``, ``finite_sample_effective_dim``, ``finite_sample_rows_per_dim`` and
    ``finite_sample_pr_bias`` (about ``effective_dim / n``, the participation ratio's relative
    downward bias).
    """
    rank_deficient = n <= d
    finite = bool(np.isfinite(effective_dim) and effective_dim > 0)
    per_dim = n / effective_dim if finite else float("nan")
    few = finite and per_dim < ROWS_PER_DIM
    rec = {"finite_sample_biased": bool(rank_deficient or few),
           "finite_sample_rank_deficient": bool(rank_deficient), "finite_sample_d": int(d),
           "finite_sample_effective_dim": float(effective_dim),
           "finite_sample_rows_per_dim": float(per_dim),
           "finite_sample_pr_bias": float(effective_dim / n) if finite else float("nan")}
    if warn and rec["finite_sample_biased"]:
        why = []
        if rank_deficient:
            why.append(f"n <= d: at most n - 1 = {n - 1} of the {d} eigenvalues can be non-zero")
        if few:
            why.append(f"{per_dim:.1f} rows per effective dimension (participation ratio "
                       f"{effective_dim:.1f}), fewer than {ROWS_PER_DIM:g}: the participation "
                       f"ratio alone reads about {100 * effective_dim / n:.0f}% low")
        warnings.warn(f"{fn}: n={n} rows, d={d} features; {'; '.join(why)}. Spectral values are "
                      f"biased here (isotropic data at n = d/2 reads IsoScore about 1/3 instead of 1); "
                      f"see docs/spectrum.md, 'Finite-sample bias'.", FiniteSampleWarning,
                      stacklevel=3)
    return rec
