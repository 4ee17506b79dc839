"""Centred kernel alignment (CKA): linear (biased / debiased HSIC), RBF exact and Nystroem.

CKA (Kornblith et al., ICML 2019) is the normalised Hilbert-Schmidt independence criterion

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

between the sample Gram matrices ``K`` of X and ``L`` of Y. For the linear kernel the biased
HSIC ``tr(K H L H) / (n-1)^2`` equals ``||Xc^T Yc||_F^2 / (n-1)^2`` (Xc, Yc column-centred), so
linear CKA is computed in feature space in O(n d^2) time and O(d^2) memory, batch by batch,
never forming an n x n matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_float, check_int
from repscope.measures.similarity._common import (
    PRECISIONS,
    centred,
    check_pair,
    make_estimate,
    pair_distances,
    resolve_device,
    zero_variance,
)
from repscope.measures.similarity.moment_measure import MomentMeasure
from repscope.measures.similarity.moments import PairMomentsAccumulator
from repscope.registry import Prepared, register
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = [
    "LinearCKAAccumulator",
    "cka_linear",
    "cka_linear_debiased",
    "cka_rbf",
    "cka_rbf_nystroem",
    "cka_ratio",
    "median_distance",
]

_INV = {"rotation", "translation", "scale", "permutation"}


def cka_ratio(hxy: float, hxx: float, hyy: float, *, low: float = 0.0) -> float:
    """CKA's normalisation ``hxy / sqrt(hxx hyy)``, clipped to ``[low, 1]`` (every CKA variant)."""
    return min(max(hxy / math.sqrt(hxx * hyy), low), 1.0)


# ---------------------------------------------------------------------------- linear CKA ----
def _linear_check(params: Mapping[str, Any]) -> dict[str, Any]:
    fn = "cka_linear"
    out = dict(params)
    if "batch_size" in out:
        out["batch_size"] = check_int(out["batch_size"], "batch_size", fn, low=1)
    check_choice(out.get("precision", "float64"), "precision", fn, PRECISIONS)
    return out


def _linear_side(sxx: torch.Tensor, n: int, params: Mapping[str, Any], name: str) -> float:
    """Refuse an all-constant side; its HSIC term ``||Sxx||_F^2``."""
    zero_variance(None, "cka_linear", name, warn=False, col_sq=torch.diagonal(sxx))
    return float(torch.sum(sxx * sxx))


def _linear_pair(hxx: float, hyy: float, sxy: torch.Tensor, n: int,
                 params: Mapping[str, Any]) -> Estimate:
    """Linear CKA ``||Sxy||_F^2 / (||Sxx||_F ||Syy||_F)``."""
    hxy = float(torch.sum(sxy * sxy))
    diag = {"hsic_xy": hxy / (n - 1) ** 2, "hsic_xx": hxx / (n - 1) ** 2,
            "hsic_yy": hyy / (n - 1) ** 2}
    return make_estimate("cka_linear", cka_ratio(hxy, hxx, hyy), n, params, diag)


LINEAR_CKA = MomentMeasure("cka_linear", _linear_side, _linear_pair, _linear_check,
                           options=("precision",))
"Linear CKA from the pair moments: the one implementation of every ``cka_linear`` path."


@dataclass(frozen=True)
class LinearCKAAccumulator(PairMomentsAccumulator):
    """Streaming linear CKA: the shared :class:`PairMomentsAccumulator` of ``cka_linear``.

    ``init(d_x, d_y, precision)``, then ``update(X_batch, Y_batch)`` per batch, ``merge``
    partial states from other workers, and ``compute()`` the :class:`Estimate`. The joint
    centred cross-product ``m2`` holds ``Xc^T Xc``, ``Yc^T Yc`` and ``Xc^T Yc`` as blocks;
    ``precision="mixed"`` computes each batch's product in float32 (merging stays float64).
    """

    @classmethod
    def init(cls, d_x: int, d_y: int, precision: str = "float64") -> LinearCKAAccumulator:
        d_x = check_int(d_x, "d_x", "LinearCKAAccumulator.init", low=1)
        d_y = check_int(d_y, "d_y", "LinearCKAAccumulator.init", low=1)
        check_choice(precision, "precision", "LinearCKAAccumulator.init", PRECISIONS)
        return cls("cka_linear", Moments.init(d_x + d_y), d_x, precision)


@register("cka_linear", family="similarity", kind="pair", invariances=_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=2, default_panel=True,
          symmetric=True, accumulator=LINEAR_CKA.streaming(),
          prepared=LINEAR_CKA.prepared(all_pairs=True))
def cka_linear(X: ArrayLike, Y: ArrayLike, *, batch_size: int = 8192,
               precision: str = "float64") -> Estimate:
    """Linear CKA with the biased HSIC, in feature space (Kornblith et al., ICML 2019).

    ``CKA = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc.
    Equals the Gram-matrix form ``tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))`` for
    ``K = X X^T``. Streams ``batch_size`` rows at a time through
    :class:`LinearCKAAccumulator` (memory O(batch_size d + d^2)); in [0, 1], 1 for X vs X.
    ``precision``: ``"float64"`` products (default), or ``"mixed"``: float32 products of the
    float64-centred rows over 512-row chunks summed in float64, about twice as fast on a CPU;
    it differs from the float64 value by ~5e-9 for d >= 40 and up to ~1e-6 for d <= 5
    (:func:`~repscope.measures.similarity._common.cross_products`).
    """
    X, Y = check_pair(X, Y, "cka_linear", min_samples=2)
    params = LINEAR_CKA.checked({"batch_size": batch_size, "precision": precision})
    return LINEAR_CKA.batch(X, Y, params, batch_size=params["batch_size"])


# --------------------------------------------------------------- debiased linear CKA -------
@dataclass(frozen=True)
class DebiasedState:
    """Per-representation statistics of the unbiased linear HSIC (prepared once)."""

    Xc: torch.Tensor
    "(n, d) float64 centred rows."
    sq: torch.Tensor
    "(n,) squared row norms ``a_i = ||x_i - mean||^2``."
    self_hsic: float
    "Unbiased HSIC of X with itself."


def hsic_unbiased_linear(Xc: torch.Tensor, Yc: torch.Tensor, a: torch.Tensor,
                         b: torch.Tensor) -> float:
    """Unbiased HSIC (Song et al., JMLR 2012) of linear kernels on centred rows.

    With ``K~ = K - diag(K)``, ``HSIC_u = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2))
    - 2/(n-2) 1'K~L~1] / (n(n-3))``. For centred rows ``K 1 = 0``, so the terms reduce to
    ``tr(K~L~) = ||Xc^T Yc||_F^2 - a.b``, ``1'K~1 = -sum(a)``, ``1'K~L~1 = a.b`` with squared
    row norms ``a``, ``b``: O(n d_x d_y) and no n x n matrix. (The estimator is translation
    invariant, so centring first changes nothing but the rounding.)
    """
    n = Xc.shape[0]
    cross = torch.sum((Xc.T @ Yc) ** 2)
    ab = torch.dot(a, b)
    total = cross - ab + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)
    return float(total) / (n * (n - 3))


def prepare_debiased(X: ArrayLike, device: torch.device, params: Mapping[str, Any] | None = None,
                     name: str = "X") -> DebiasedState:
    """Centre one representation, refuse it when constant, and its unbiased self-HSIC."""
    Xc = centred(X, device)  # (n, d)
    zero_variance(Xc, "cka_linear_debiased", name, warn=False)
    sq = torch.sum(Xc * Xc, dim=1)  # (n,)
    return DebiasedState(Xc, sq, hsic_unbiased_linear(Xc, Xc, sq, sq))


def compare_debiased(sx: DebiasedState, sy: DebiasedState, params: Mapping[str, Any]) -> Estimate:
    """``HSIC_u(X, Y) / sqrt(HSIC_u(X, X) HSIC_u(Y, Y))`` of two prepared representations."""
    n = sx.Xc.shape[0]
    if sx.self_hsic <= 0 or sy.self_hsic <= 0:
        raise ValueError("cka_linear_debiased: the unbiased self-HSIC of a representation is not "
                         "positive (constant or nearly constant rows); the similarity is undefined.")
    hxy = hsic_unbiased_linear(sx.Xc, sy.Xc, sx.sq, sy.sq)
    diag = {"hsic_xy": hxy, "hsic_xx": sx.self_hsic, "hsic_yy": sy.self_hsic}
    return make_estimate("cka_linear_debiased", cka_ratio(hxy, sx.self_hsic, sy.self_hsic, low=-1.0),
                         n, params, diag)


def permute_debiased(state: DebiasedState, perm: Any) -> DebiasedState:
    """The prepared state of ``Y[perm]``: rows and row norms re-ordered, self-HSIC kept."""
    idx = torch.as_tensor(perm, device=state.Xc.device)
    return replace(state, Xc=state.Xc[idx], sq=state.sq[idx])


@register("cka_linear_debiased", family="similarity", kind="pair", invariances=_INV,
          higher_is_better=True, bounds=(-1.0, 1.0), min_samples=4, symmetric=True,
          prepared=Prepared(prepare_debiased, compare_debiased, permute_debiased))
def cka_linear_debiased(X: ArrayLike, Y: ArrayLike, *, device: str | None = None) -> Estimate:
    """Linear CKA with the unbiased HSIC estimator (Song et al., JMLR 2012).

    ``HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))`` with linear kernels; the debiased CKA
    used by Kornblith et al. (2019, appendix) and studied by Murphy et al. (2024). Unlike
    the biased estimator it is near 0 for independent representations at small n (it can be
    slightly negative). Needs n >= 4. Feature-space form, O(n d^2), no n x n matrix.
    """
    X, Y = check_pair(X, Y, "cka_linear_debiased", min_samples=4)
    dev = resolve_device(X, device)
    return compare_debiased(prepare_debiased(X, dev, None, "X"), prepare_debiased(Y, dev, None, "Y"),
                            {"device": device})


# ------------------------------------------------------------------------- RBF CKA ---------
def _pair_sample(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j when there are at most ``max_pairs``, else a seeded uniform sample."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    j = (i + rng.integers(1, n, size=max_pairs)) % n  # uniform over j != i
    return i, j


def median_distance(X64: torch.Tensor, *, max_pairs: int = 200_000, seed: int = 0) -> float:
    """Median Euclidean distance between distinct rows (over a seeded pair sample when large)."""
    i, j = _pair_sample(X64.shape[0], max_pairs, seed)
    return float(np.median(pair_distances(X64, i, j)))


def _rbf_block(Xb: torch.Tensor, X: torch.Tensor, sq: torch.Tensor, sqb: torch.Tensor,
               sigma: float) -> torch.Tensor:
    """(b, n) Gaussian kernel block ``exp(-||x_i - x_j||^2 / (2 sigma^2))``."""
    d2 = (sqb[:, None] + sq[None, :] - 2.0 * (Xb @ X.T)).clamp_min_(0.0)  # (b, n)
    return torch.exp(d2 / (-2.0 * sigma * sigma))


def _rbf_hsic_blockwise(X: torch.Tensor, Y: torch.Tensor, sx: float, sy: float,
                        block: int) -> tuple[float, float, float]:
    """Biased HSIC terms (xy, xx, yy) of two RBF Gram matrices, one row block at a time.

    ``tr(K H L H) = sum(K o L) - 2/n sum_i (K1)_i (L1)_i + (1'K1)(1'L1)/n^2``; only (b, n)
    blocks and row sums are ever held.
    """
    n = X.shape[0]
    qx, qy = torch.sum(X * X, 1), torch.sum(Y * Y, 1)  # (n,)
    kk = ll = kl = 0.0
    rk = torch.empty(n, dtype=X.dtype, device=X.device)
    rl = torch.empty_like(rk)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        K = _rbf_block(X[lo:hi], X, qx, qx[lo:hi], sx)  # (b, n)
        L = _rbf_block(Y[lo:hi], Y, qy, qy[lo:hi], sy)  # (b, n)
        kl += float(torch.sum(K * L))
        kk += float(torch.sum(K * K))
        ll += float(torch.sum(L * L))
        rk[lo:hi], rl[lo:hi] = K.sum(1), L.sum(1)
    sk, sl = float(rk.sum()), float(rl.sum())

    def centre(total: float, a: torch.Tensor, b: torch.Tensor, sa: float, sb: float) -> float:
        return total - 2.0 / n * float(torch.dot(a, b)) + sa * sb / n**2

    return centre(kl, rk, rl, sk, sl), centre(kk, rk, rk, sk, sk), centre(ll, rl, rl, sl, sl)


@register("cka_rbf", family="similarity", kind="pair", invariances=_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True, prepared=None)
def cka_rbf(X: ArrayLike, Y: ArrayLike, *, sigma_factor: float = 1.0, max_pairs: int = 200_000,
            block_size: int = 1024, seed: int = 0, device: str | None = None) -> Estimate:
    """Exact RBF-kernel CKA with the biased HSIC (Kornblith et al., ICML 2019).

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma_x^2))`` with ``sigma_x = sigma_factor`` times the
    median distance between distinct rows of X (all pairs when there are at most
    ``max_pairs``, else a seeded sample of pairs), likewise for Y. HSIC is accumulated over
    (block_size, n) kernel blocks: O(n^2 d) time, O(block_size n) memory, no n x n matrix.
    Exact, so meant for n up to ~10^4; use ``cka_rbf_nystroem`` beyond.
    """
    fn = "cka_rbf"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    sigma_factor = check_float(sigma_factor, "sigma_factor", fn, low=0.0, low_inclusive=False)
    max_pairs = check_int(max_pairs, "max_pairs", fn, low=1)
    block_size = check_int(block_size, "block_size", fn, low=1)
    dev = resolve_device(X, device)
    Xc, Yc = centred(X, dev), centred(Y, dev)
    zero_variance(Xc, fn, "X", warn=False)
    zero_variance(Yc, fn, "Y", warn=False)
    sx = sigma_factor * median_distance(Xc, max_pairs=max_pairs, seed=seed)
    sy = sigma_factor * median_distance(Yc, max_pairs=max_pairs, seed=seed)
    if sx == 0 or sy == 0:
        raise ValueError(f"{fn}: the median distance between rows is 0 (more than half the rows "
                         f"are duplicates); the kernel bandwidth is undefined.")
    hxy, hxx, hyy = _rbf_hsic_blockwise(Xc, Yc, sx, sy, block_size)
    params = {"sigma_factor": sigma_factor, "max_pairs": max_pairs, "block_size": block_size,
              "seed": seed, "device": device}
    diag = {"sigma_x": sx, "sigma_y": sy, "approximate": False}
    return make_estimate(fn, cka_ratio(hxy, hxx, hyy), X.shape[0], params, diag)


def _nystroem_features(X64: torch.Tensor, landmarks: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, r) Nystroem features ``Phi = K_nm U_r diag(lam_r)^(-1/2)`` with ``Phi Phi^T ~ K``."""
    L = X64[landmarks]  # (m, d)
    qx, ql = torch.sum(X64 * X64, 1), torch.sum(L * L, 1)
    K_mm = _rbf_block(L, L, ql, ql, sigma)  # (m, m)
    lam, U = torch.linalg.eigh(K_mm)
    keep = lam > lam.max() * 1e-10
    K_nm = _rbf_block(X64, L, ql, qx, sigma)  # (n, m)
    return K_nm @ (U[:, keep] / torch.sqrt(lam[keep]))  # (n, r)


@register("cka_rbf_nystroem", family="similarity", kind="pair", invariances=_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True, prepared=None)
def cka_rbf_nystroem(X: ArrayLike, Y: ArrayLike, *, sigma_factor: float = 1.0,
                     n_landmarks: int = 256, max_pairs: int = 200_000, seed: int = 0,
                     device: str | None = None) -> Estimate:
    """APPROXIMATE RBF CKA through Nystroem features (Williams and Seeger, NIPS 2001).

    The same kernel and bandwidth rule as ``cka_rbf``; both Gram matrices are replaced by the
    rank-m Nystroem approximations ``K ~ K_nm K_mm^+ K_mn`` on ``n_landmarks`` rows drawn with
    ``seed`` (the same rows for X and Y), and linear CKA is computed on the (n, m) features:
    O(n m (d + m)) time, O(n m) memory. ``diagnostics['approximate']`` is True; the gap to the
    exact value shrinks as ``n_landmarks`` grows (exact when it equals n).
    """
    fn = "cka_rbf_nystroem"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    sigma_factor = check_float(sigma_factor, "sigma_factor", fn, low=0.0, low_inclusive=False)
    n_landmarks = check_int(n_landmarks, "n_landmarks", fn, low=2)
    max_pairs = check_int(max_pairs, "max_pairs", fn, low=1)
    dev = resolve_device(X, device)
    n = X.shape[0]
    Xc, Yc = centred(X, dev), centred(Y, dev)
    zero_variance(Xc, fn, "X", warn=False)
    zero_variance(Yc, fn, "Y", warn=False)
    m = min(n_landmarks, n)
    rng = np.random.default_rng(seed)
    idx = torch.as_tensor(np.sort(rng.choice(n, size=m, replace=False)), device=dev)
    sx = sigma_factor * median_distance(Xc, max_pairs=max_pairs, seed=seed)
    sy = sigma_factor * median_distance(Yc, max_pairs=max_pairs, seed=seed)
    if sx == 0 or sy == 0:
        raise ValueError(f"{fn}: the median distance between rows is 0; the bandwidth is undefined.")
    Fx = _nystroem_features(Xc, idx, sx)  # (n, rx)
    Fy = _nystroem_features(Yc, idx, sy)  # (n, ry)
    Fx -= Fx.mean(0, keepdim=True)
    Fy -= Fy.mean(0, keepdim=True)
    hxy = float(torch.sum((Fx.T @ Fy) ** 2))
    hxx, hyy = float(torch.sum((Fx.T @ Fx) ** 2)), float(torch.sum((Fy.T @ Fy) ** 2))
    params = {"sigma_factor": sigma_factor, "n_landmarks": n_landmarks, "max_pairs": max_pairs,
              "seed": seed, "device": device}
    diag = {"sigma_x": sx, "sigma_y": sy, "approximate": True, "n_landmarks_used": m,
            "rank_x": Fx.shape[1], "rank_y": Fy.shape[1]}
    return make_estimate(fn, cka_ratio(hxy, hxx, hyy), n, params, diag)
