"""Semi-NMF of activations, the non-SAE baseline (Ding, Li & Jordan 2010, "Convex and
semi-nonnegative matrix factorizations", IEEE TPAMI 32(1)).

Activations ``X`` (n, d) have mixed signs; semi-NMF finds ``X ~ H W`` with non-negative codes
``H`` (n, k) and unconstrained directions ``W`` (k, d), minimising ``||X - H W||_F^2`` by
alternating the two updates of Ding et al. (their ``F = W^T``, ``G = H``), which never increase
the objective:

    W <- (H^T H)^+ H^T X                                   (least squares)
    H <- H * sqrt(([X W^T]^+ + H [W W^T]^-) / ([X W^T]^- + H [W W^T]^+))

with ``A^+ = (|A| + A) / 2`` and ``A^- = (|A| - A) / 2``. Initialisation as in the paper:
k-means cluster indicators plus 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import as_numpy, as_torch, check_array, check_int

__all__ = ["SemiNMF", "semi_nmf", "semi_nmf_codes"]

_EPS = 1e-12


@dataclass(frozen=True)
class SemiNMF:
    """A fitted semi-NMF; rows of ``W`` have unit norm (their scale moved into ``H``)."""

    W: np.ndarray
    "(k, d) directions, unit rows."
    H: np.ndarray
    "(n, k) non-negative codes of the training rows."
    objective: np.ndarray
    "||X - H W||_F^2 after each iteration (non-increasing)."


def _pos(A: torch.Tensor) -> torch.Tensor:
    return (A.abs() + A) / 2


def _neg(A: torch.Tensor) -> torch.Tensor:
    return (A.abs() - A) / 2


def _update_H(X: torch.Tensor, H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    XW, WW = X @ W.T, W @ W.T  # (n, k), (k, k)
    num = _pos(XW) + H @ _neg(WW)
    den = _neg(XW) + H @ _pos(WW)
    return H * torch.sqrt(num / den.clamp_min(_EPS))


def semi_nmf(X: Any, *, k: int = 16, n_iter: int = 200, tol: float = 1e-7, seed: int = 0) -> SemiNMF:
    """Fit ``X ~ H W`` with ``H >= 0`` (float64). Stops after ``n_iter`` iterations or when the
    relative decrease of the objective falls below ``tol``."""
    from sklearn.cluster import KMeans

    X = check_array(X, "semi_nmf", min_samples=2)
    n = X.shape[0]
    k = check_int(k, "k", "semi_nmf", low=1, high=n, high_inclusive=True, high_name="n_samples")
    check_int(n_iter, "n_iter", "semi_nmf", low=1)
    Xt = as_torch(X, torch.float64)  # (n, d)
    labels = KMeans(k, n_init=1, random_state=seed).fit_predict(as_numpy(Xt))
    H = torch.full((n, k), 0.2, dtype=torch.float64)
    H[torch.arange(n), torch.from_numpy(labels)] += 1.0
    objective = []
    for _ in range(n_iter):
        W = torch.linalg.lstsq(H, Xt).solution  # (k, d)
        H = _update_H(Xt, H, W)
        objective.append(float((Xt - H @ W).pow(2).sum()))
        if len(objective) > 1 and objective[-2] - objective[-1] <= tol * objective[-2]:
            break
    W = torch.linalg.lstsq(H, Xt).solution
    norms = W.norm(dim=1).clamp_min(_EPS)  # (k,)
    return SemiNMF(W=(W / norms[:, None]).numpy(), H=(H * norms).numpy(), objective=np.asarray(objective))


def semi_nmf_codes(X: Any, W: Any, *, n_iter: int = 200, seed: int = 0) -> np.ndarray:
    """Non-negative codes ``H`` (n, k) of new rows ``X`` for fixed directions ``W`` (k, d), by
    the multiplicative ``H`` update from a seeded positive start."""
    X = as_torch(check_array(X, "semi_nmf_codes"), torch.float64)
    W = as_torch(check_array(W, "semi_nmf_codes", name="W"), torch.float64)
    if W.shape[1] != X.shape[1]:
        raise ValueError(f"semi_nmf_codes needs W with d={X.shape[1]} columns; got shape {tuple(W.shape)}.")
    gen = torch.Generator().manual_seed(seed)
    H = torch.rand(X.shape[0], W.shape[0], generator=gen, dtype=torch.float64) + 0.1
    for _ in range(check_int(n_iter, "n_iter", "semi_nmf_codes", low=1)):
        H = _update_H(X, H, W)
    return H.numpy()
