"""Unit matching across networks by activation correlation (Li et al. 2015, "Convergent learning").

The units (columns) of two representations of the same inputs are compared by their Pearson
correlation over the rows, ``C[a, b] = corr(X[:, a], Y[:, b])``. Li, Yosinski, Clune, Lipson
and Hopcroft ("Convergent learning: do different neural networks learn the same
representations?", ICLR 2016; arXiv 1511.07543, 2015) match units two ways:

* **one-to-one** (bipartite matching): the assignment maximising the summed correlation
  (Hungarian algorithm, :func:`repscope.stats.max_weight_matching`, the routine SAE dictionary
  matching uses), ``min(d_x, d_y)`` pairs;
* **semi-matching**: every unit of X paired with its most correlated unit of Y (several may
  share a partner).

The value is the mean correlation over the one-to-one pairs; the semi-matching, the fraction
of units with a close partner and the assignment are in ``diagnostics``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_float
from repscope.measures.similarity._common import check_pair, make_estimate
from repscope.registry import register
from repscope.results import Estimate
from repscope.stats import max_weight_matching

__all__ = ["unit_correlations", "unit_matching"]


def _standardised(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) columns centred and scaled to unit norm (constant columns left at zero) and the
    (d,) mask of constant columns."""
    Z = X - X.mean(0)
    norms = np.linalg.norm(Z, axis=0)
    scale = np.abs(X).max(0) * np.sqrt(X.shape[0]) * 1e-12  # below this: rounding of a constant
    const = norms <= scale
    return Z / np.where(const, 1.0, norms), const


def unit_correlations(X: ArrayLike, Y: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d_x, d_y) Pearson correlations between the units of X and Y (float64; 0 for a constant
    unit), and the masks of constant units of X and Y."""
    Zx, cx = _standardised(as_numpy(X).astype(np.float64))
    Zy, cy = _standardised(as_numpy(Y).astype(np.float64))
    return np.clip(Zx.T @ Zy, -1.0, 1.0), cx, cy


@register("unit_matching", family="similarity", kind="pair",
          invariances={"translation", "scale", "per_feature_scale", "permutation"},
          higher_is_better=True, bounds=(-1.0, 1.0), min_samples=3, symmetric=True, prepared=None)
def unit_matching(X: ArrayLike, Y: ArrayLike, *, threshold: float = 0.5,
                  absolute: bool = False) -> Estimate:
    """One-to-one unit matching by correlation (Li et al. 2015): mean matched correlation.

    ``C[a, b]`` is the Pearson correlation of unit ``a`` of X and unit ``b`` of Y over the rows.
    The one-to-one matching maximises ``sum C[a, pi(a)]`` (Hungarian; ``min(d_x, d_y)`` pairs);
    the value is the mean of the matched correlations. ``absolute=True`` matches on ``|C|``
    (a unit and its negation count as the same feature). ``diagnostics``: ``pairs_x``,
    ``pairs_y`` (the assignment), ``matched_corr``; ``semi_x``/``semi_corr_x`` (each X unit's
    best Y partner, the semi-matching) and ``semi_y``/``semi_corr_y``; ``close_fraction_x`` /
    ``close_fraction_y``, the fraction of units whose best partner has correlation at least
    ``threshold``; ``constant_units_x`` / ``_y`` (constant units correlate 0 with everything).
    Invariant to per-unit affine rescaling and to permuting units; not to rotations (units are
    the coordinates).
    """
    fn = "unit_matching"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    threshold = check_float(threshold, "threshold", fn, low=-1.0, high=1.0)
    if not isinstance(absolute, bool):
        raise ValueError(f"The 'absolute' parameter of {fn} must be a bool. Got {absolute!r} instead.")
    C, cx, cy = unit_correlations(X, Y)  # (d_x, d_y)
    if cx.any() or cy.any():
        warnings.warn(f"{fn}: {int(cx.sum())} unit(s) of X and {int(cy.sum())} of Y are constant; "
                      f"they correlate 0 with every unit.", RuntimeWarning, stacklevel=2)
    W = np.abs(C) if absolute else C
    rows, cols = max_weight_matching(W)
    matched = W[rows, cols]
    semi_x, semi_y = W.argmax(1), W.argmax(0)
    best_x, best_y = W.max(1), W.max(0)
    diag: dict[str, Any] = {
        "pairs_x": rows, "pairs_y": cols, "matched_corr": matched,
        "semi_x": semi_x, "semi_corr_x": best_x, "semi_y": semi_y, "semi_corr_y": best_y,
        "close_fraction_x": float((best_x >= threshold).mean()),
        "close_fraction_y": float((best_y >= threshold).mean()),
        "semi_mean_x": float(best_x.mean()), "semi_mean_y": float(best_y.mean()),
        "constant_units_x": int(cx.sum()), "constant_units_y": int(cy.sum()),
        "n_units": (int(C.shape[0]), int(C.shape[1])),
    }
    params = {"threshold": threshold, "absolute": absolute}
    return make_estimate(fn, float(np.clip(matched.mean(), -1.0, 1.0)), X.shape[0], params, diag)
