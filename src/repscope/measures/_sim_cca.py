"""Canonical correlation analysis family: mean CCA, SVCCA, PWCCA.

The canonical correlations ``rho_1 >= rho_2 >= ...`` of X and Y are the singular values of
``Qx^T Qy``, where ``Qx`` (n, r_x) is an orthonormal basis of the column space of the centred
X. Here ``Qx = Xc V diag(lam)^(-1/2)`` from the eigendecomposition ``Xc^T Xc = V diag(lam) V^T``
(d x d, O(n d^2)); directions with ``lam <= 1e-12 lam_max`` (constant or collinear columns)
are dropped. The basis is computed once per representation (see ``similarity_matrix``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from repscope._validate import ArrayLike, check_float
from repscope.measures._sim_common import (
    centred,
    check_pair,
    make_estimate,
    resolve_device,
    zero_variance,
)
from repscope.registry import register
from repscope.results import Estimate

__all__ = ["CCAState", "cca_mean", "pwcca", "svcca"]

_RTOL = 1e-12


@dataclass(frozen=True)
class CCAState:
    """Per-representation whitening, prepared once."""

    Xc: torch.Tensor
    "(n, d) float64 centred rows."
    Q: torch.Tensor
    "(n, r) orthonormal basis of the retained subspace of the centred data."
    lam: torch.Tensor
    "(r,) retained eigenvalues of ``Xc^T Xc``, descending."
    n_zero_variance: int
    "Constant columns found in X."


def prepare_cca(X: ArrayLike, device: torch.device, fn: str, name: str, *,
                variance_kept: float | None = None) -> CCAState:
    """Centre, eigendecompose and whiten one representation (optionally keep top PCs)."""
    Xc = centred(X, device)  # (n, d)
    G = Xc.T @ Xc  # (d, d)
    nz = zero_variance(Xc, fn, name, warn=True, col_sq=torch.diagonal(G))
    lam, V = torch.linalg.eigh(G)  # ascending
    lam, V = lam.flip(0), V.flip(1)
    r = int((lam > lam[0] * _RTOL).sum())
    if variance_kept is not None:
        frac = torch.cumsum(lam[:r], 0) / lam[:r].sum()
        r = min(r, int(torch.searchsorted(frac, torch.tensor(variance_kept, dtype=frac.dtype,
                                                             device=frac.device))) + 1)
    Q = Xc @ (V[:, :r] / torch.sqrt(lam[:r]))  # (n, r)
    return CCAState(Xc, Q, lam[:r], nz)


def _refuse(fn: str, n: int, dims: dict[str, int], what: str) -> None:
    """Refuse n <= d: the canonical correlations are then trivially 1."""
    for name, d in dims.items():
        if n <= d:
            raise ValueError(
                f"{fn} needs more samples than {what} (n_samples={n} <= {d} for '{name}'): "
                f"with n <= d the canonical correlations are trivially 1. Use more rows, "
                f"reduce the dimension first (svcca), or a Procrustes/CKA measure."
            )


def _warn_overlap(fn: str, n: int, r_x: int, r_y: int) -> None:
    """Warn when the two retained subspaces must intersect (some correlations are 1)."""
    total = r_x + r_y
    if total > n - 1:
        warnings.warn(
            f"{fn}: the retained dimensions ({total} in total) exceed n_samples - 1 = {n - 1}, "
            f"so {total - n + 1} canonical correlation(s) equal 1 by construction.",
            UserWarning, stacklevel=3,
        )


def canonical(sx: CCAState, sy: CCAState) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical correlations (descending, clipped to [0, 1]) and X-side rotation U (r_x, r)."""
    U, rho, _ = torch.linalg.svd(sx.Q.T @ sy.Q, full_matrices=False)  # (r_x, r), (r,)
    return rho.clamp(0.0, 1.0), U


def compare_cca_mean(sx: CCAState, sy: CCAState, params: dict[str, Any],
                     name: str = "cca_mean") -> Estimate:
    rho, _ = canonical(sx, sy)
    n = sx.Q.shape[0]
    diag = {"correlations": rho.cpu().numpy(), "rank_x": sx.Q.shape[1], "rank_y": sy.Q.shape[1],
            "n_zero_variance_x": sx.n_zero_variance, "n_zero_variance_y": sy.n_zero_variance}
    return make_estimate(name, float(rho.mean()), n, params, diag)


@register("cca_mean", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation", "invertible_linear",
                       "per_feature_scale"},
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True)
def cca_mean(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Mean canonical correlation ``(1/r) sum_i rho_i``, ``r = min(rank X, rank Y)``.

    Hotelling (1936); the "mean CCA" similarity of Raghu et al. (NeurIPS 2017). Invariant to
    any invertible linear map of either side. Refuses n <= d (trivially 1); warns when
    ``rank X + rank Y > n - 1``. ``diagnostics['correlations']`` holds every rho_i.
    """
    fn = "cca_mean"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    _refuse(fn, X.shape[0], {"X": X.shape[1], "Y": Y.shape[1]}, "features")
    dev = resolve_device(X, device)
    sx, sy = prepare_cca(X, dev, fn, "X"), prepare_cca(Y, dev, fn, "Y")
    _warn_overlap(fn, X.shape[0], sx.Q.shape[1], sy.Q.shape[1])
    return compare_cca_mean(sx, sy, {"device": device}, fn)


@register("svcca", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation"},
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True)
def svcca(X: ArrayLike, Y: ArrayLike, *, variance_kept: float = 0.99,
          device: str | None = None) -> Estimate:
    """SVCCA (Raghu et al., NeurIPS 2017): mean CCA between the top principal subspaces.

    Each side keeps its leading principal components explaining at least ``variance_kept``
    of its variance (the SVD step), then ``cca_mean`` of the two reduced representations.
    The number kept is in ``diagnostics['rank_x' / 'rank_y']``. Unlike mean CCA it is not
    invariant to invertible linear maps (the SVD step depends on the scale of each feature).
    """
    fn = "svcca"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    variance_kept = check_float(variance_kept, "variance_kept", fn, low=0.0, high=1.0,
                                low_inclusive=False)
    dev = resolve_device(X, device)
    sx = prepare_cca(X, dev, fn, "X", variance_kept=variance_kept)
    sy = prepare_cca(Y, dev, fn, "Y", variance_kept=variance_kept)
    _refuse(fn, X.shape[0], {"X": sx.Q.shape[1], "Y": sy.Q.shape[1]}, "kept components")
    _warn_overlap(fn, X.shape[0], sx.Q.shape[1], sy.Q.shape[1])
    return compare_cca_mean(sx, sy, {"variance_kept": variance_kept, "device": device}, fn)


def compare_pwcca(sx: CCAState, sy: CCAState, params: dict[str, Any]) -> Estimate:
    rho, U = canonical(sx, sy)
    H = sx.Q @ U  # (n, r) canonical variates of X, orthonormal
    alpha = torch.abs(H.T @ sx.Xc).sum(dim=1)  # (r,)  sum_j |<h_i, x_j>|
    weights = alpha / alpha.sum()
    n = sx.Q.shape[0]
    diag = {"correlations": rho.cpu().numpy(), "weights": weights.cpu().numpy(),
            "rank_x": sx.Q.shape[1], "rank_y": sy.Q.shape[1]}
    return make_estimate("pwcca", float(torch.dot(weights, rho)), n, params, diag)


@register("pwcca", family="similarity", kind="pair",
          invariances={"translation", "scale", "permutation"},
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=False)
def pwcca(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Projection-weighted CCA (Morcos, Raghu and Bengio, NeurIPS 2018).

    ``sum_i w_i rho_i`` with ``w_i proportional to sum_j |<h_i, x_j>|``: ``h_i`` (unit n-vector)
    is the i-th canonical variate of X and ``x_j`` the j-th centred column (neuron) of X, so
    canonical directions that account for more of X's neurons weigh more. Not symmetric (the
    weights come from X) and, through the per-neuron absolute values, not rotation invariant.
    """
    fn = "pwcca"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    _refuse(fn, X.shape[0], {"X": X.shape[1], "Y": Y.shape[1]}, "features")
    dev = resolve_device(X, device)
    sx, sy = prepare_cca(X, dev, fn, "X"), prepare_cca(Y, dev, fn, "Y")
    _warn_overlap(fn, X.shape[0], sx.Q.shape[1], sy.Q.shape[1])
    return compare_pwcca(sx, sy, {"device": device})
