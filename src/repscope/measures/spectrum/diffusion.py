"""Diffusion spectral entropy (DSE) and mutual information (DSMI), Liao et al. 2023.

Pipeline (Coifman and Lafon 2006 diffusion maps): an affinity matrix ``K`` over the rows
(Gaussian kernel, or an adaptive Gaussian on the k-nearest-neighbour graph from
``repscope.neighbors``), density normalisation ``K~ = Q^-a K Q^-a`` with ``Q = diag(K 1)``,
and the diffusion operator ``P = D^-1 K~`` with ``D = diag(K~ 1)``. ``P`` is similar to the
symmetric ``D^-1/2 K~ D^-1/2``, so its (real) eigenvalues come from ``eigvalsh``.

Memory: the operator is a dense n x n float64 matrix and all n eigenvalues are computed
(O(n^3)); rows beyond ``max_samples`` are subsampled with the given seed (default 2,000 rows,
32 MB). The kNN kernel avoids the n x n distance matrix but not the dense operator.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from repscope._validate import (
    ArrayLike,
    as_numpy,
    check_array,
    check_choice,
    check_float,
    check_int,
)
from repscope.measures.spectrum.stream import entropy
from repscope.registry import register
from repscope.results import Estimate

__all__ = ["diffusion_eigenvalues", "dse", "dsmi"]

log = logging.getLogger(__name__)
_INV = {"rotation", "translation", "scale", "permutation"}


def _subsample(X: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Sorted seeded row subset of size ``max_samples`` (all rows when n <= max_samples)."""
    n = X.shape[0]
    if n <= max_samples:
        return np.arange(n)
    log.info("diffusion: subsampling %d of %d rows (seed %d)", max_samples, n, seed)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def _bandwidth(X: torch.Tensor) -> float:
    """Median pairwise Euclidean distance between distinct rows (the median heuristic)."""
    D = torch.cdist(X, X)  # (n, n)
    off = D[~torch.eye(X.shape[0], dtype=torch.bool, device=X.device)]
    pos = off[off > 0]
    return float(pos.median()) if pos.numel() else 0.0


def _affinity(X: torch.Tensor, kernel: str, sigma: float, k: int) -> torch.Tensor:
    """(n, n) symmetric affinities with unit diagonal."""
    n = X.shape[0]
    if kernel == "gaussian":
        return torch.exp(-torch.cdist(X, X) ** 2 / (2 * sigma**2))  # (n, n)
    from repscope.neighbors import knn

    nb = knn(X.cpu().numpy(), min(k, n - 1), duplicates="keep", dtype=torch.float64)
    dist = torch.from_numpy(nb.distances).to(X.device)  # (n, k)
    idx = torch.from_numpy(nb.indices).to(X.device)  # (n, k)
    scale = dist[:, -1].clamp_min(torch.finfo(torch.float64).tiny)  # (n,) k-th neighbour distance
    w = torch.exp(-dist**2 / (scale[:, None] * scale[idx]))  # (n, k) self-tuning kernel
    W = torch.zeros(n, n, dtype=X.dtype, device=X.device)
    W.scatter_(1, idx, w)
    W = torch.maximum(W, W.T)
    return W.fill_diagonal_(1.0)


def diffusion_eigenvalues(X: np.ndarray, *, kernel: str = "gaussian", sigma: float | None = None,
                          k: int = 10, density_alpha: float = 1.0,
                          device: Any = None) -> tuple[np.ndarray, float]:
    """Eigenvalues of the diffusion operator (descending by modulus) and the bandwidth used."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)).to(device)  # (n, d)
    Xt = Xt - Xt.mean(0)
    if Xt.shape[0] == 1:
        return np.ones(1), float("nan")
    bw = (_bandwidth(Xt) if sigma is None else sigma) if kernel == "gaussian" else float("nan")
    if kernel == "gaussian" and not bw > 0:
        raise ValueError("dse needs rows that are not all identical (the median pairwise "
                         "distance, the default bandwidth, is 0).")
    K = _affinity(Xt, kernel, bw, k)  # (n, n)
    q = K.sum(1) ** density_alpha  # (n,)
    K = K / (q[:, None] * q[None, :])
    dsq = K.sum(1).sqrt()  # (n,)
    A = K / (dsq[:, None] * dsq[None, :])  # symmetric conjugate of P
    ev = torch.linalg.eigvalsh((A + A.T) / 2).cpu().numpy()  # ascending, in [-1, 1]
    return ev[np.argsort(-np.abs(ev), kind="stable")], bw


def _dse_value(ev: np.ndarray, t: int) -> float:
    w = np.abs(ev) ** t  # (n,)
    return entropy(w / w.sum())


def _check_common(fn: str, kernel: str, sigma: float | None, k: int, t: int, density_alpha: float,
                  max_samples: int) -> None:
    check_choice(kernel, "kernel", fn, ["gaussian", "knn"])
    if sigma is not None:
        check_float(sigma, "sigma", fn, low=0.0, low_inclusive=False)
    check_int(k, "k", fn, low=1)
    check_int(t, "t", fn, low=1)
    check_float(density_alpha, "density_alpha", fn, low=0.0, high=1.0)
    check_int(max_samples, "max_samples", fn, low=2)


@register("dse", family="spectrum", invariances=_INV, bounds=(0.0, None))
def dse(X: ArrayLike, *, kernel: str = "gaussian", sigma: float | None = None, k: int = 10,
        t: int = 1, density_alpha: float = 1.0, max_samples: int = 2000, seed: int = 0,
        device: str | None = None) -> Estimate:
    """Diffusion spectral entropy: the entropy of the diffusion operator's eigenvalue spectrum.

    Liao, Liu, Christensen, Tong, Huguet, Wolf, Nickel, Adelstein and Krishnaswamy 2023,
    "Assessing neural network representations during training using noise-resilient
    diffusion spectral entropy". With ``lambda_i`` the eigenvalues of the diffusion operator ``P`` (module docstring) and
    diffusion time ``t``: ``eta_i = |lambda_i|^t / sum_j |lambda_j|^t`` and
    ``DSE = -sum_i eta_i log eta_i`` (nats, in ``[0, log n]``). ``kernel="gaussian"``:
    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma`` = the median pairwise distance
    when None (so DSE is scale invariant); ``kernel="knn"``: ``K_ij = exp(-d_ij^2 /
    (s_i s_j))`` on the symmetrised ``k``-NN graph, ``s_i`` the distance to the k-th neighbour.
    ``density_alpha`` is the Coifman-Lafon normalisation (1 removes the sampling density).
    Dense n x n operator: rows beyond ``max_samples`` are subsampled (seeded). Depends on n,
    so compare DSE across layers or models only at equal n.
    """
    fn = "dse"
    X = check_array(X, fn, min_samples=2)
    _check_common(fn, kernel, sigma, k, t, density_alpha, max_samples)
    rows = _subsample(as_numpy(X, np.float64), max_samples, seed)
    Xs = as_numpy(X, np.float64)[rows]  # (m, d)
    ev, bw = diffusion_eigenvalues(Xs, kernel=kernel, sigma=sigma, k=k, density_alpha=density_alpha,
                                   device=device)
    return Estimate(
        measure=fn, value=_dse_value(ev, t), n_samples=int(rows.size),
        params={"kernel": kernel, "sigma": sigma, "k": k, "t": t, "density_alpha": density_alpha,
                "max_samples": max_samples, "seed": seed, "device": device},
        diagnostics={"eigenvalues": ev, "bandwidth": bw, "max_entropy": float(np.log(rows.size))},
    )


@register("dsmi", family="classes", invariances=_INV, needs_labels=True)
def dsmi(X: ArrayLike, *, labels: ArrayLike, kernel: str = "gaussian", sigma: float | None = None,
         k: int = 10, t: int = 1, density_alpha: float = 1.0, max_samples: int = 2000,
         seed: int = 0, device: str | None = None) -> Estimate:
    """Diffusion spectral mutual information between a representation and class labels.

    ``DSMI(X; Y) = DSE(X) - sum_y p(y) DSE(X | Y = y)`` (Liao et al. 2023), where the
    conditional entropies are DSEs of the rows of each class, computed with the SAME Gaussian
    bandwidth as the whole set (the median pairwise distance of all rows when ``sigma`` is
    None); ``p(y)`` are the class frequencies. A class with a single row has DSE 0. High when
    the classes occupy separate regions. Parameters as in :func:`dse`; rows beyond
    ``max_samples`` are subsampled (seeded) before the class split.
    """
    from repscope.measures.classes import check_labels

    fn = "dsmi"
    X = check_array(X, fn, min_samples=2)
    codes, classes = check_labels(labels, X.shape[0], fn)
    _check_common(fn, kernel, sigma, k, t, density_alpha, max_samples)
    rows = _subsample(as_numpy(X, np.float64), max_samples, seed)
    Xs, ys = as_numpy(X, np.float64)[rows], codes[rows]  # (m, d), (m,)
    kw = {"kernel": kernel, "k": k, "density_alpha": density_alpha, "device": device}
    ev, bw = diffusion_eigenvalues(Xs, sigma=sigma, **kw)
    h_x = _dse_value(ev, t)
    cond = np.zeros(len(classes))
    p = np.bincount(ys, minlength=len(classes)) / ys.size  # (C,)
    for c in range(len(classes)):
        Xc = Xs[ys == c]
        if Xc.shape[0] >= 2:
            ev_c, _ = diffusion_eigenvalues(Xc, sigma=bw if kernel == "gaussian" else None, **kw)
            cond[c] = _dse_value(ev_c, t)
    return Estimate(
        measure=fn, value=float(h_x - p @ cond), n_samples=int(rows.size),
        params={"kernel": kernel, "sigma": sigma, "k": k, "t": t, "density_alpha": density_alpha,
                "max_samples": max_samples, "seed": seed, "device": device},
        diagnostics={"dse": h_x, "conditional_dse": cond, "class_frequencies": p,
                     "classes": np.asarray([str(c) for c in classes]), "bandwidth": bw},
    )
