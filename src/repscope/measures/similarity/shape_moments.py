"""The method-of-moments shape estimator of Pospisil, Larsen, Harvey and Williams (ICLR 2024).

``shape_mom`` estimates the population Procrustes similarity from unbiased estimates of the
spectral moments of the cross-covariance (cycle sums over increasing index chains, as in the
authors' ``estimate_eigenmoments``) and a fixed-degree polynomial approximation of the square
root. Its conditions, and why ``procrustes_angular_jackknife`` supersedes it here:

* the polynomial step's bias (bounded by ``bias_bound``) does not shrink with n: with the
  default degree the error stays near +0.04 at d = 64 from n = 1,000 to 5,000 and +0.02 at
  20,000, above the plug-in's own (``tests/test_similarity_corrected.py``);
* the chain sums run over increasing indices, so the authors' estimator changes when the rows
  are re-ordered; here the rows are first put in a canonical order that depends only on their
  values the measure is invariant to (:func:`canonical_order`: seeded positions of the ranks of
  the centred row norms), so the value is a function of the set of rows, not of their order,
  and keeps its invariances (an order fixed independently of the data keeps the moment
  estimates exactly unbiased; this one is scrambled with respect to the norms);
* it is meant for the small-n regime it was built for (n and d of a few hundred at most).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from repscope._validate import ArrayLike, as_numpy, check_int
from repscope.measures.similarity._common import check_pair, make_estimate
from repscope.registry import register
from repscope.results import Estimate, result_type
from repscope.stats import group_labels

__all__ = ["ShapeMomentEstimate", "canonical_order", "cycle_moments", "shape_mom",
           "sqrt_polynomial"]

_SHAPE_INV = {"rotation", "translation", "scale", "permutation"}

GRAM_ROWS = 3000
"Up to this many rows the cycle sums use n x n Gram products (O(P n^3)); beyond, a row loop."

@result_type
@dataclass(frozen=True)
class ShapeMomentEstimate(Estimate):
    """Moment estimate of the Procrustes similarity with its bias bound."""

    bias_bound: float | None = None
    "Bound on |E[estimate] - true similarity| from the polynomial approximation of sqrt."
    plugin: float | None = None
    "The plug-in (sample) Procrustes similarity ``cos theta`` on the same data, for contrast."


def canonical_order(Xc: np.ndarray, Yc: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n,) row order that depends on the rows only through values the measure is invariant to.

    Rows are ranked by ``a_i / sum(a) + b_i / sum(b)`` with ``a_i``, ``b_i`` the squared norms
    of the centred rows (invariant to rotation, translation and scale of either side, and
    symmetric in X and Y), and the ranks are sent to positions by a seeded permutation
    (:func:`repscope.stats.group_labels` with one group per row), so the order looks random
    with respect to the norms. Re-ordering the input re-orders the rows back to the same
    sequence; rows with equal keys tie (stable)."""
    a, b = np.sum(Xc * Xc, 1), np.sum(Yc * Yc, 1)  # (n,)
    key = a / max(a.sum(), 1e-300) + b / max(b.sum(), 1e-300)
    position = group_labels(key, max(Xc.shape[0], 2), seed=seed)  # (n,) distinct positions
    return np.argsort(position, kind="stable")


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
    and Valiant, 2017, with alternating links). The sum over all C(n, 2p) tuples is
    ``tr((Uy Ux)^(p-1) Uy Kx)`` with the Gram matrices ``Kx = X X^T``, ``Ky = Y Y^T`` and their
    strictly upper triangles ``Ux``, ``Uy`` (O(P n^3), used up to :data:`GRAM_ROWS` rows), or
    one pass over the rows with d x d partial-chain matrices (O(n P d^2)) beyond.
    """
    n = X.shape[0]
    counts = np.array([math.comb(n, 2 * p) for p in range(1, P + 1)], dtype=float)
    if n <= GRAM_ROWS:
        Kx, Ky = X @ X.T, Y @ Y.T  # (n, n)
        Ux, Uy = np.triu(Kx, 1), np.triu(Ky, 1)
        chain = Uy  # (n, n): chains i_1 < ... < i_2p-1 ending with a y link
        total = np.empty(P)
        for p in range(P):
            total[p] = np.sum(chain * Kx)  # tr(chain Kx), Kx symmetric: closes the cycle
            if p + 1 < P:
                chain = chain @ Ux @ Uy
        return total / counts
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
    return total[1:] / counts


@register("shape_mom", family="similarity", kind="pair", invariances=_SHAPE_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=8, symmetric=True, prepared=None)
def shape_mom(X: ArrayLike, Y: ArrayLike, *, n_moments: int = 4) -> ShapeMomentEstimate:
    """Method-of-moments estimate of the Procrustes similarity (Pospisil et al., ICLR 2024).

    Superseded by ``procrustes_angular_jackknife`` (converging with n); kept for comparison
    with the authors' estimator and its conditions (module docstring). Rows are put in
    :func:`canonical_order` first, so the value does not depend on the order of the rows.

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
    Cost O(P n^3) up to 3,000 rows, O(n P d^2) beyond: meant for the small-n regime.
    """
    fn = "shape_mom"
    n_moments = check_int(n_moments, "n_moments", fn, low=1, high=12, high_inclusive=True)
    X, Y = check_pair(X, Y, fn, min_samples=max(8, 2 * n_moments))
    Xc = as_numpy(X, np.float64) - as_numpy(X, np.float64).mean(0)  # (n, d_x)
    Yc = as_numpy(Y, np.float64) - as_numpy(Y, np.float64).mean(0)  # (n, d_y)
    order = canonical_order(Xc, Yc)  # (n,) independent of the input order
    Xc, Yc = Xc[order], Yc[order]
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
