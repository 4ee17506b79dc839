"""Canonical correlation analysis family: mean CCA, SVCCA, PWCCA.

The canonical correlations ``rho_1 >= rho_2 >= ...`` of X and Y are the singular values of
``Qx^T Qy``, where ``Qx`` (n, r_x) is an orthonormal basis of the column space of the centred
X. With ``Qx = Xc Wx`` for a whitening map ``Wx`` (d_x, r_x) built from ``Sxx = Xc^T Xc``
alone (:func:`whitening`), ``Qx^T Qy = Wx^T Sxy Wy``: every measure here is a function of the
pair moments ``(n, Sxx, Syy, Sxy)``, one :class:`~.moment_measure.MomentMeasure` (whitening per
side, canonical correlations per pair) that the batch functions, the streaming accumulators,
the prepared and the all-pairs matrix paths share.
Directions with ``lam <= 1e-12 lam_max`` (constant or collinear columns) are dropped.

Numerics: forming ``Sxx`` squares the condition number of Xc. Equilibrating (unit-diagonal
``R = D^-1 Sxx D^-1``) removes what feature scales contribute; what remains is the conditioning
of the correlation matrix, and a direction with eigenvalue ``lam`` of R carries a relative
error of order ``eps / lam`` (so ``cond(R) <= 1e6`` gives canonical correlations to ~1e-10).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from repscope._validate import ArrayLike, check_float
from repscope.measures.similarity._common import check_pair, make_estimate, zero_variance
from repscope.measures.similarity.moment_measure import MomentMeasure
from repscope.registry import register
from repscope.results import Estimate

__all__ = ["Whitening", "cca_mean", "pwcca", "svcca", "whitening"]

_RTOL = 1e-12


@dataclass(frozen=True)
class Whitening:
    """A whitening map of one representation, computed from its ``Sxx = Xc^T Xc`` alone."""

    W: torch.Tensor
    "(d, r) with ``W^T Sxx W = I_r``: ``Xc W`` is an orthonormal basis of the retained subspace."
    lam: torch.Tensor
    "(r,) retained eigenvalues, descending (of the equilibrated Sxx, or of Sxx for SVCCA)."
    n_zero_variance: int
    "Constant columns (dropped)."


def whitening(sxx: torch.Tensor, *, variance_kept: float | None = None) -> Whitening:
    """Whitening map from the centred cross-product ``sxx`` (d, d), float64.

    Zero-variance columns (centred norm <= 1e-12 times the largest, the rule of
    :func:`~repscope.measures.similarity._common.zero_variance`) are dropped. Without
    ``variance_kept`` (CCA), the rest is first equilibrated, ``R = D^-1 Sxx D^-1`` with
    ``D = diag(Sxx)^(1/2)``: CCA is invariant to per-feature scale, and this removes the
    ill-conditioning that feature scales alone cause (features spread over 1e-3..1e3 give
    ``cond(Sxx) ~ 1e12`` but a well-conditioned ``R``); ``W = D^-1 V lam^(-1/2)`` over the
    eigenpairs of R with ``lam > 1e-12 lam_max`` (collinear directions are dropped). With
    ``variance_kept`` (SVCCA) the principal components of Sxx itself are used (SVCCA's SVD
    step is scale dependent) and only the leading ones explaining ``variance_kept`` of the
    variance are kept.
    """
    col_sq = torch.diagonal(sxx).clamp_min(0)  # (d,)
    norms = col_sq.sqrt()
    live = norms > 1e-12 * norms.max()  # (d,)
    n_zero = int((~live).sum())
    idx = torch.nonzero(live).flatten()
    if variance_kept is None:
        s = 1.0 / norms[idx]  # (d_live,)
        R = sxx[idx][:, idx] * s[:, None] * s[None, :]  # (d_live, d_live)
    else:
        R = sxx[idx][:, idx]
    lam, V = torch.linalg.eigh(R)  # ascending
    lam, V = lam.flip(0), V.flip(1)
    r = int((lam > lam[0] * _RTOL).sum())
    if variance_kept is not None:
        frac = torch.cumsum(lam[:r], 0) / lam[:r].sum()
        kept = torch.tensor(variance_kept, dtype=frac.dtype, device=frac.device)
        r = min(r, int(torch.searchsorted(frac, kept)) + 1)
    Wl = V[:, :r] / torch.sqrt(lam[:r])  # (d_live, r)
    if variance_kept is None:
        Wl = Wl * s[:, None]
    W = torch.zeros((sxx.shape[0], r), dtype=sxx.dtype, device=sxx.device)  # (d, r)
    W[idx] = Wl
    return Whitening(W, lam[:r], n_zero)


def whiten_side(sxx: torch.Tensor, fn: str, name: str, *, variance_kept: float | None = None
                ) -> Whitening:
    """Warn about constant columns (refuse when all are), then :func:`whitening`."""
    zero_variance(None, fn, name, warn=True, col_sq=torch.diagonal(sxx))
    return whitening(sxx, variance_kept=variance_kept)


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


def canonical(wx: Whitening, wy: Whitening, sxy: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical correlations (descending, clipped to [0, 1]) and X-side rotation U (r_x, r).

    They are the singular values of ``Qx^T Qy = Wx^T Sxy Wy`` (r_x, r_y), with the
    orthonormal bases ``Qx = Xc Wx``, ``Qy = Yc Wy``.
    """
    M = wx.W.T @ sxy @ wy.W  # (r_x, r_y)
    U, rho, _ = torch.linalg.svd(M, full_matrices=False)  # (r_x, r), (r,)
    return rho.clamp(0.0, 1.0), U


def cca_estimate(wx: Whitening, wy: Whitening, sxy: torch.Tensor, n: int,
                 params: dict[str, Any], name: str) -> Estimate:
    """The mean canonical correlation (``cca_mean``, ``svcca``) and its diagnostics."""
    rho, _ = canonical(wx, wy, sxy)
    diag = {"correlations": rho.cpu().numpy(), "rank_x": wx.W.shape[1], "rank_y": wy.W.shape[1],
            "n_zero_variance_x": wx.n_zero_variance, "n_zero_variance_y": wy.n_zero_variance}
    return make_estimate(name, float(rho.mean()), n, params, diag)


def pwcca_estimate(wx: Whitening, wy: Whitening, sxx: torch.Tensor, sxy: torch.Tensor, n: int,
                   params: dict[str, Any]) -> Estimate:
    """PWCCA: ``alpha_i = sum_j |<h_i, x_j>|`` with ``H^T Xc = U^T Wx^T Sxx`` (r, d_x)."""
    rho, U = canonical(wx, wy, sxy)
    alpha = torch.abs(U.T @ (wx.W.T @ sxx)).sum(dim=1)  # (r,)
    weights = alpha / alpha.sum()
    diag = {"correlations": rho.cpu().numpy(), "weights": weights.cpu().numpy(),
            "rank_x": wx.W.shape[1], "rank_y": wy.W.shape[1]}
    return make_estimate("pwcca", float(torch.dot(weights, rho)), n, params, diag)


# ------------------------------------------------------------ side and pair steps --------
def _cca_side(fn: str) -> Any:
    def side(sxx: torch.Tensor, n: int, params: Mapping[str, Any], name: str) -> Whitening:
        """Refuse n <= d, then warn about constant columns and whiten."""
        _refuse(fn, n, {name: sxx.shape[0]}, "features")
        return whiten_side(sxx, fn, name)
    return side


def _svcca_side(sxx: torch.Tensor, n: int, params: Mapping[str, Any], name: str) -> Whitening:
    """The leading principal components (``variance_kept``), refused when n <= their number."""
    w = whiten_side(sxx, "svcca", name, variance_kept=params["variance_kept"])
    _refuse("svcca", n, {name: w.W.shape[1]}, "kept components")
    return w


def _svcca_check(params: Mapping[str, Any]) -> dict[str, Any]:
    vk = check_float(params.get("variance_kept", 0.99), "variance_kept", "svcca", low=0.0,
                     high=1.0, low_inclusive=False)
    return {**params, "variance_kept": vk}


def _mean_pair(fn: str) -> Any:
    def pair(wx: Whitening, wy: Whitening, sxy: torch.Tensor, n: int,
             params: Mapping[str, Any]) -> Estimate:
        _warn_overlap(fn, n, wx.W.shape[1], wy.W.shape[1])
        return cca_estimate(wx, wy, sxy, n, params, fn)
    return pair


_pwcca_whiten = _cca_side("pwcca")


def _pwcca_side(sxx: torch.Tensor, n: int, params: Mapping[str, Any],
                name: str) -> tuple[Whitening, torch.Tensor]:
    """The CCA side step; PWCCA's weights also read X's own ``Sxx``."""
    return _pwcca_whiten(sxx, n, params, name), sxx


def _pwcca_pair(sx: tuple[Whitening, torch.Tensor], sy: tuple[Whitening, torch.Tensor],
                sxy: torch.Tensor, n: int, params: Mapping[str, Any]) -> Estimate:
    (wx, sxx), (wy, _) = sx, sy
    _warn_overlap("pwcca", n, wx.W.shape[1], wy.W.shape[1])
    return pwcca_estimate(wx, wy, sxx, sxy, n, params)


CCA_MEAN = MomentMeasure("cca_mean", _cca_side("cca_mean"), _mean_pair("cca_mean"))
SVCCA = MomentMeasure("svcca", _svcca_side, _mean_pair("svcca"), _svcca_check)
PWCCA = MomentMeasure("pwcca", _pwcca_side, _pwcca_pair)


_INV_CCA = {"rotation", "translation", "scale", "permutation", "invertible_linear",
            "per_feature_scale"}


@register("cca_mean", family="similarity", kind="pair", invariances=_INV_CCA,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True,
          accumulator=CCA_MEAN.streaming(), prepared=CCA_MEAN.prepared(all_pairs=True))
def cca_mean(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Mean canonical correlation ``(1/r) sum_i rho_i``, ``r = min(rank X, rank Y)``.

    Hotelling (1936); the "mean CCA" similarity of Raghu et al. (NeurIPS 2017). Invariant to
    any invertible linear map of either side. Refuses n <= d (trivially 1); warns when
    ``rank X + rank Y > n - 1``. ``diagnostics['correlations']`` holds every rho_i.
    Computed from the pair moments (``Sxx``, ``Syy``, ``Sxy``; see :func:`whitening`), the
    same code as its streaming accumulator.
    """
    X, Y = check_pair(X, Y, "cca_mean", min_samples=3)
    return CCA_MEAN.batch(X, Y, {"device": device}, device=device)


@register("svcca", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation"},
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True,
          accumulator=SVCCA.streaming(), prepared=SVCCA.prepared(all_pairs=True))
def svcca(X: ArrayLike, Y: ArrayLike, *, variance_kept: float = 0.99,
          device: str | None = None) -> Estimate:
    """SVCCA (Raghu et al., NeurIPS 2017): mean CCA between the top principal subspaces.

    Each side keeps its leading principal components explaining at least ``variance_kept``
    of its variance (the SVD step), then ``cca_mean`` of the two reduced representations.
    The number kept is in ``diagnostics['rank_x' / 'rank_y']``. Unlike mean CCA it is not
    invariant to invertible linear maps (the SVD step depends on the scale of each feature).
    """
    X, Y = check_pair(X, Y, "svcca", min_samples=3)
    return SVCCA.batch(X, Y, {"variance_kept": variance_kept, "device": device}, device=device)


@register("pwcca", family="similarity", kind="pair",
          invariances={"translation", "scale", "permutation"},
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=False,
          accumulator=PWCCA.streaming(), prepared=PWCCA.prepared())
def pwcca(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Projection-weighted CCA (Morcos, Raghu and Bengio, NeurIPS 2018).

    ``sum_i w_i rho_i`` with ``w_i proportional to sum_j |<h_i, x_j>|``: ``h_i`` (unit n-vector)
    is the i-th canonical variate of X and ``x_j`` the j-th centred column (neuron) of X, so
    canonical directions that account for more of X's neurons weigh more. Not symmetric (the
    weights come from X) and, through the per-neuron absolute values, not rotation invariant.
    """
    X, Y = check_pair(X, Y, "pwcca", min_samples=3)
    return PWCCA.batch(X, Y, {"device": device}, device=device)
