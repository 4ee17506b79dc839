"""Shape metrics (Williams et al., NeurIPS 2021) and the moment estimator of Pospisil et al.

For centred Xc (n, d_x), Yc (n, d_y) the optimal rotation aligning them gives, with the
nuclear norm ``||.||_*`` (sum of singular values) and zero padding of the smaller side,

    min_Q ||Xc - Yc Q||_F^2 = ||Xc||_F^2 + ||Yc||_F^2 - 2 ||Xc^T Yc||_*.

Everything is computed from the pair moments (``Sxy`` and the traces for Procrustes; ``Sxx``,
``Syy``, ``Sxy`` for the partially whitened ``shape_alpha``) in O(n d^2), no n x n matrix, by
one :class:`~.moment_measure.MomentMeasure` per metric that every path (batch, stream,
prepared, all pairs) calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, as_numpy, check_float, check_int
from repscope.measures.similarity._common import check_pair, make_estimate, zero_variance
from repscope.measures.similarity.cca import whitening
from repscope.measures.similarity.moment_measure import MomentMeasure
from repscope.registry import register
from repscope.results import Estimate, result_type

__all__ = [
    "ShapeMomentEstimate",
    "procrustes_angular",
    "procrustes_euclidean",
    "shape_alpha",
    "shape_mom",
]


def angular_estimate(nuc: float, qx: float, qy: float, n: int, params: dict[str, Any],
                     name: str) -> Estimate:
    """``arccos(nuc / sqrt(qx qy))`` (clipped to [0, pi/2]); the cosine in diagnostics."""
    cos = min(max(nuc / math.sqrt(qx * qy), 0.0), 1.0)
    return make_estimate(name, math.acos(cos), n, params, {"cosine": cos})


def euclidean_estimate(nuc: float, qx: float, qy: float, n: int,
                       params: dict[str, Any]) -> Estimate:
    """``sqrt(max(qx + qy - 2 nuc, 0) / n)``, the RMS Procrustes residual per row."""
    resid = max(qx + qy - 2.0 * nuc, 0.0)
    diag = {"residual_sum_squares": resid, "nuclear_norm": nuc}
    return make_estimate("procrustes_euclidean", math.sqrt(resid / n), n, params, diag)


def _procrustes_side(fn: str) -> Any:
    def side(sxx: torch.Tensor, n: int, params: Mapping[str, Any], name: str) -> float:
        """Refuse an all-constant side; its total sum of squares ``tr(Sxx) = ||Xc||_F^2``."""
        col_sq = torch.diagonal(sxx)  # (d,)
        zero_variance(None, fn, name, warn=False, col_sq=col_sq)
        return float(col_sq.sum())
    return side


def _procrustes_pair(fn: str) -> Any:
    def pair(qx: float, qy: float, sxy: torch.Tensor, n: int,
             params: Mapping[str, Any]) -> Estimate:
        """Either Procrustes metric from the nuclear norm ``||Sxy||_*`` and the two traces."""
        nuc = float(torch.linalg.svdvals(sxy).sum())
        if fn == "procrustes_euclidean":
            return euclidean_estimate(nuc, qx, qy, n, params)
        return angular_estimate(nuc, qx, qy, n, params, fn)
    return pair


PROCRUSTES = {fn: MomentMeasure(fn, _procrustes_side(fn), _procrustes_pair(fn), gram="diagonal")
              for fn in ("procrustes_angular", "procrustes_euclidean")}
"""The Procrustes metrics read ``Sxy`` and the diagonals of ``Sxx``, ``Syy`` only: their batch
functions make just those in one chunked pass (a third of the products of the full pair
moments when d_x = d_y)."""


_SHAPE_INV = {"rotation", "translation", "scale", "permutation"}


@register("procrustes_angular", family="similarity", kind="pair", invariances=_SHAPE_INV,
          higher_is_better=False, bounds=(0.0, math.pi / 2), min_samples=2, symmetric=True,
          default_panel=True, accumulator=PROCRUSTES["procrustes_angular"].streaming(),
          prepared=PROCRUSTES["procrustes_angular"].prepared())
def procrustes_angular(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Angular Procrustes shape distance (Williams et al., NeurIPS 2021), in radians.

    ``theta = arccos(||Xc^T Yc||_* / (||Xc||_F ||Yc||_F))`` in [0, pi/2]: the angle between
    the centred representations after the best rotation (zero padding the smaller d). A
    metric; 0 iff Y is a rotated, scaled, translated copy of X. ``diagnostics['cosine']`` is
    the Procrustes similarity ``cos theta`` that some libraries report instead.
    """
    X, Y = check_pair(X, Y, "procrustes_angular", min_samples=2)
    return PROCRUSTES["procrustes_angular"].batch(X, Y, {"device": device}, device=device)


@register("procrustes_euclidean", family="similarity", kind="pair",
          invariances={"rotation", "translation", "permutation"},
          higher_is_better=False, bounds=(0.0, None), min_samples=2, symmetric=True,
          accumulator=PROCRUSTES["procrustes_euclidean"].streaming(),
          prepared=PROCRUSTES["procrustes_euclidean"].prepared())
def procrustes_euclidean(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Euclidean Procrustes distance per sample: ``sqrt(min_Q ||Xc - Yc Q||_F^2 / n)``.

    The root-mean-square residual per row after centring and the optimal rotation (zero
    padding): ``sqrt((||Xc||^2 + ||Yc||^2 - 2 ||Xc^T Yc||_*) / n)`` (Williams et al., 2021,
    Euclidean form, divided by n so it does not grow with the number of rows). In the units
    of the activations: not scale invariant, compare it only between representations of
    similar norm.
    """
    X, Y = check_pair(X, Y, "procrustes_euclidean", min_samples=2)
    return PROCRUSTES["procrustes_euclidean"].batch(X, Y, {"device": device}, device=device)


# ------------------------------------------------------------- generalized shape metric ----
@dataclass(frozen=True)
class AlphaSide:
    """Partial whitening of one representation, from its ``Sxx`` alone."""

    W: torch.Tensor
    "(d, r): ``phi_alpha(X) = Xc W`` up to a rotation of the output."
    sq_norm: float
    """``||Xc W||_F^2 = tr(W^T Sxx W)``, taken as the nuclear norm of ``W^T Sxx W`` (equal for
    this PSD matrix) with the arithmetic of the cross term, so X against X gives exactly 0."""


def alpha_side(sxx: torch.Tensor, n: int, alpha: float, fn: str, name: str) -> AlphaSide:
    """``phi_alpha(X) = Xc (alpha I + (1 - alpha) C)^(-1/2)``, ``C = Sxx / n``, as a map W.

    With ``C = V diag(lam) V^T``, ``W = V diag(alpha + (1 - alpha) lam)^(-1/2)`` over the
    eigenpairs with ``lam > 1e-12 lam_max`` (null directions carry no data and are dropped),
    and ``||Xc W||_F^2 = ||W^T Sxx W||_*``. At ``alpha = 0`` (full
    whitening, invariant to per-feature scale) the equilibrated CCA whitening
    (:func:`~repscope.measures.similarity.cca.whitening`) is used: ``Xc W`` is then orthonormal,
    the same map up to the scale factor sqrt(n) that the angle ignores.
    """
    zero_variance(None, fn, name, warn=alpha < 1, col_sq=torch.diagonal(sxx))
    if alpha == 0.0:
        W = whitening(sxx).W  # (d, r)
    else:
        lam, V = torch.linalg.eigh(sxx / n)
        keep = lam > lam.max() * 1e-12
        W = V[:, keep] / torch.sqrt(alpha + (1.0 - alpha) * lam[keep])  # (d, r)
    return AlphaSide(W, _nuclear(W, sxx, W))


def _nuclear(Wx: torch.Tensor, sxy: torch.Tensor, Wy: torch.Tensor) -> float:
    """``||Wx^T Sxy Wy||_*``."""
    return float(torch.linalg.svdvals((Wx.T @ sxy) @ Wy).sum())


def alpha_estimate(ax: AlphaSide, ay: AlphaSide, sxy: torch.Tensor, n: int,
                   params: Mapping[str, Any]) -> Estimate:
    """Angular distance of the partially whitened sides: ``||Wx^T Sxy Wy||_*`` over norms."""
    nuc = _nuclear(ax.W, sxy, ay.W)
    return angular_estimate(nuc, ax.sq_norm, ay.sq_norm, n, params, "shape_alpha")


def _alpha_check(params: Mapping[str, Any]) -> dict[str, Any]:
    return {**params, "alpha": check_float(params.get("alpha", 0.5), "alpha", "shape_alpha",
                                           low=0.0, high=1.0)}


def _alpha_side(sxx: torch.Tensor, n: int, params: Mapping[str, Any], name: str) -> AlphaSide:
    """Refuse full whitening (alpha = 0) of a side with n <= d, then :func:`alpha_side`."""
    alpha, d = params["alpha"], sxx.shape[0]
    if alpha == 0.0 and n <= d:
        raise ValueError(f"shape_alpha with alpha=0 (full whitening) needs more samples than "
                         f"features; got n_samples={n} and d={d} for '{name}'.")
    return alpha_side(sxx, n, alpha, "shape_alpha", name)


SHAPE_ALPHA = MomentMeasure("shape_alpha", _alpha_side, alpha_estimate, _alpha_check)


@register("shape_alpha", family="similarity", kind="pair",
          invariances={"rotation", "translation", "permutation"},
          higher_is_better=False, bounds=(0.0, math.pi / 2), min_samples=3, symmetric=True,
          accumulator=SHAPE_ALPHA.streaming(), prepared=SHAPE_ALPHA.prepared(all_pairs=True))
def shape_alpha(X: ArrayLike, Y: ArrayLike, *, alpha: float = 0.5,
                device: str | None = None) -> Estimate:
    """Generalized shape metric with partial whitening (Williams et al., NeurIPS 2021), radians.

    Each side is mapped to ``phi_alpha(X) = Xc (alpha I + (1 - alpha) C_X)^(-1/2)`` with the
    covariance ``C_X = Xc^T Xc / n``, then the angular Procrustes distance is taken.
    ``alpha = 1`` is ``procrustes_angular``; ``alpha = 0`` whitens fully and gives the CCA
    angle ``arccos(mean canonical correlation)`` (invariant to invertible linear maps, needs
    n > d). For 0 < alpha < 1 the value depends on the overall scale of the data. Computed
    from the pair moments, like its streaming accumulator (:func:`alpha_side`).
    """
    X, Y = check_pair(X, Y, "shape_alpha", min_samples=3)
    return SHAPE_ALPHA.batch(X, Y, {"alpha": alpha, "device": device}, device=device)


# ------------------------------------------------------------ method of moments -------------
@result_type
@dataclass(frozen=True)
class ShapeMomentEstimate(Estimate):
    """Moment estimate of the Procrustes similarity with its bias bound."""

    bias_bound: float | None = None
    "Bound on |E[estimate] - true similarity| from the polynomial approximation of sqrt."
    plugin: float | None = None
    "The plug-in (sample) Procrustes similarity ``cos theta`` on the same data, for contrast."


@functools.lru_cache(maxsize=32)
def sqrt_polynomial(degree: int) -> tuple[np.ndarray, float]:
    """Minimax polynomial ``q(t) = sum_p c_p t^p`` for ``sqrt(t)`` on [0, 1], and its error.

    Solved as a linear program on a grid clustered at 0; the returned error is the maximum
    of ``|q(t) - sqrt(t)|`` on a much finer grid, so it bounds the approximation honestly.
    """
    from scipy.optimize import linprog

    t = (1 - np.cos(np.linspace(0, np.pi, 600))) / 2  # (g,) Chebyshev-Lobatto points
    A = t[:, None] ** np.arange(degree + 1)[None, :]  # (g, P + 1)
    s = np.sqrt(t)
    ones = np.ones((t.size, 1))
    A_ub = np.vstack([np.hstack([A, -ones]), np.hstack([-A, -ones])])
    b_ub = np.concatenate([s, -s])
    cost = np.zeros(degree + 2)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=[(None, None)] * (degree + 2), method="highs")
    coef = res.x[:-1]
    fine = np.linspace(0, 1, 200_001) ** 2
    err = float(np.max(np.abs(np.polyval(coef[::-1], fine) - np.sqrt(fine))))
    return coef, err


def cycle_moments(X: np.ndarray, Y: np.ndarray, P: int) -> np.ndarray:
    """Unbiased estimates of ``tr((M M^T)^p)``, ``M = E[x y^T]``, for p = 1..P.

    For i.i.d. zero-mean rows, every increasing index tuple ``i_1 < ... < i_2p`` gives the
    unbiased product ``(y_1.y_2)(x_2.x_3)(y_3.y_4)...(x_2p.x_1)`` (the cycle estimator of Kong
    and Valiant, 2017, with alternating links). The sum over all C(n, 2p) tuples is built in one
    pass over the rows with d x d partial-chain matrices: O(n P d^2), no n x n matrix.
    """
    n = X.shape[0]
    L = 2 * P
    A: list[np.ndarray | None] = [None] * L  # A[l]: chains of length l, open end ready
    total = np.zeros(P + 1)
    for j in range(n):
        x, y = X[j], Y[j]
        for p in range(1, P + 1):
            if A[2 * p - 1] is not None:
                total[p] += x @ (A[2 * p - 1] @ y)
        for ell in range(L - 1, 1, -1):
            prev = A[ell - 1]
            if prev is None:
                continue
            if ell % 2 == 0:  # even position: in via y, out via x
                inc = np.outer(prev @ y, x)
            else:  # odd position >= 3: in via x, out via y
                inc = np.outer(prev @ x, y)
            A[ell] = inc if A[ell] is None else A[ell] + inc
        A[1] = np.outer(x, y) if A[1] is None else A[1] + np.outer(x, y)
    counts = np.array([math.comb(n, 2 * p) for p in range(1, P + 1)], dtype=float)
    return total[1:] / counts


@register("shape_mom", family="similarity", kind="pair", invariances=_SHAPE_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=8, symmetric=True, prepared=None)
def shape_mom(X: ArrayLike, Y: ArrayLike, *, n_moments: int = 4) -> ShapeMomentEstimate:
    """Method-of-moments estimate of the Procrustes similarity (Pospisil et al., ICLR 2024).

    The population similarity ``rho = ||Sigma_xy||_* / sqrt(tr Sigma_xx tr Sigma_yy)`` (the
    cosine of the angular shape distance) is estimated without the upward bias of the
    plug-in: after scaling each side to unit total variance, unbiased estimates of the
    spectral moments ``m_p = tr((M M^T)^p)`` (p <= ``n_moments``, see :func:`cycle_moments`)
    enter ``||M||_* = sum_i sqrt(lambda_i) ~ sqrt(B) sum_p c_p m_p / B^p``, where ``q(t) = sum_p
    c_p t^p`` is the minimax polynomial for sqrt on [0, 1] and ``B`` bounds the eigenvalues
    (product of the largest sample covariance eigenvalues). ``bias_bound = r sqrt(B) eps``
    (r = min(d_x, d_y), eps the polynomial error) bounds the bias from the approximation;
    centring with the sample mean adds an O(1/n) bias not in the bound. The value is clipped
    to [0, 1] (the raw number is ``diagnostics['unclipped']``); symmetrised over X <-> Y.
    Cost O(n P d^2) with a Python loop over rows: meant for the small-n regime it fixes.
    """
    fn = "shape_mom"
    n_moments = check_int(n_moments, "n_moments", fn, low=1, high=12, high_inclusive=True)
    X, Y = check_pair(X, Y, fn, min_samples=max(8, 2 * n_moments))
    Xc = as_numpy(X, np.float64) - as_numpy(X, np.float64).mean(0)  # (n, d_x)
    Yc = as_numpy(Y, np.float64) - as_numpy(Y, np.float64).mean(0)  # (n, d_y)
    n = Xc.shape[0]
    tx, ty = np.sum(Xc * Xc) / (n - 1), np.sum(Yc * Yc) / (n - 1)
    if tx == 0 or ty == 0:
        raise ValueError(f"{fn} got a representation whose columns all have zero variance; "
                         f"the similarity is undefined.")
    Xs, Ys = Xc / math.sqrt(tx), Yc / math.sqrt(ty)  # unit total variance
    r = min(Xs.shape[1], Ys.shape[1])
    lx = np.linalg.eigvalsh(Xs.T @ Xs / (n - 1))[-1]
    ly = np.linalg.eigvalsh(Ys.T @ Ys / (n - 1))[-1]
    B = float(lx * ly)
    moments = 0.5 * (cycle_moments(Xs, Ys, n_moments) + cycle_moments(Ys, Xs, n_moments))
    coef, eps = sqrt_polynomial(n_moments)
    scaled = np.concatenate([[r], moments / B ** np.arange(1, n_moments + 1)])
    raw = math.sqrt(B) * float(coef @ scaled)
    plugin = float(np.linalg.svd(Xs.T @ Ys / (n - 1), compute_uv=False).sum())
    bound = r * math.sqrt(B) * eps
    diag = {"unclipped": raw, "moments": moments, "eigenvalue_bound": B,
            "polynomial_error": eps}
    return make_estimate(fn, min(max(raw, 0.0), 1.0), n, {"n_moments": n_moments}, diag,
                         cls=ShapeMomentEstimate, bias_bound=bound, plugin=plugin)
