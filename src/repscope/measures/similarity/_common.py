"""Shared input checks and helpers for the pairwise similarity measures.

Every pair measure compares two representations ``X`` (n, d_x) and ``Y`` (n, d_y) of the
same ``n`` inputs (row ``i`` of both is the same stimulus / token). Computations run in float64
torch on ``device`` (CPU by default, or the device of a tensor input).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, as_torch, check_array, check_paired, resolve_device
from repscope.results import Estimate

log = logging.getLogger("repscope.measures.similarity")

__all__ = [
    "PRECISIONS",
    "block_products",
    "centred",
    "centred_cross",
    "centred_into",
    "check_pair",
    "cross_products",
    "make_estimate",
    "pair_distances",
    "resolve_device",
    "to64",
    "zero_variance",
]


def check_pair(X: ArrayLike, Y: ArrayLike, fn: str, *, min_samples: int = 2) -> tuple[Any, Any]:
    """Validate two (n, d) float matrices describing the same ``n`` inputs."""
    X = check_array(X, fn, name="X", min_samples=min_samples)
    Y = check_array(Y, fn, name="Y", min_samples=min_samples)
    check_paired(X, Y, fn)
    return X, Y


def to64(X: ArrayLike, device: torch.device) -> torch.Tensor:
    """A float64 torch copy (never a view of the caller's array) on ``device``."""
    T = as_torch(X, torch.float64, device)
    if isinstance(X, torch.Tensor) and T.data_ptr() == X.data_ptr():
        T = T.clone()
    elif not isinstance(X, torch.Tensor) and T.dtype == torch.float64:
        T = T.clone()  # from_numpy shares memory with a float64 numpy input
    return T


def centred(X: ArrayLike, device: torch.device) -> torch.Tensor:
    """(n, d) float64 copy of ``X`` with column means removed (input untouched)."""
    Z = torch.empty(X.shape, dtype=torch.float64, device=device)  # (n, d)
    centred_into(Z, X, 0, X.shape[1])
    return Z


PRECISIONS = ("float64", "mixed")
"""Arithmetic of the cross-product kernels: ``"float64"`` products, or ``"mixed"``: float32
products of float64-centred data over ``MIXED_CHUNK``-row chunks, summed in float64."""

MIXED_CHUNK = 512
"Rows per float32 product in the mixed precision: bounds the float32 accumulation length."


def cross_products(A: torch.Tensor, B: torch.Tensor, precision: str) -> torch.Tensor:
    """``A^T B`` (d_a, d_b) in float64 from centred A (n, d_a) and B (n, d_b).

    ``precision="float64"`` (float64 inputs) is one product. ``"mixed"`` (float32 inputs: the
    float64-centred data rounded once) sums float32 products of ``MIXED_CHUNK``-row chunks in
    float64. Float32 products run about twice as fast on CPUs (and far faster on GPUs). The
    rounding of the centred input perturbs a CKA by ~1e-11; the float32 accumulation over at
    most ``MIXED_CHUNK`` terms dominates, with a relative error of order
    ``eps32 sqrt(MIXED_CHUNK)`` per entry that averages down over the ``d_a d_b`` entries of a
    Frobenius norm. Measured linear-CKA differences from float64: ~1e-6 for d <= 5, ~5e-9 for
    d >= 40 (``tests/test_similarity_precision.py``, ``benchmarks/similarity.md``).
    """
    if precision == "float64":
        return A.T @ B
    out = torch.zeros((A.shape[1], B.shape[1]), dtype=torch.float64, device=A.device)
    buf = torch.empty(out.shape, dtype=A.dtype, device=A.device)  # float32 partial product
    for s in range(0, A.shape[0], MIXED_CHUNK):
        torch.mm(A[s:s + MIXED_CHUNK].T, B[s:s + MIXED_CHUNK], out=buf)
        out += buf
    return out


def block_products(Z: torch.Tensor, lo: int, hi: int, precision: str) -> torch.Tensor:
    """Block row ``Z[:, lo:hi]^T Z[:, lo:]`` (hi - lo, D - lo) of the Gram matrix of the
    centred columns ``Z`` (n, D), in float64 (:func:`cross_products`)."""
    return cross_products(Z[:, lo:hi], Z[:, lo:], precision)


def centred_into(Z: torch.Tensor, X: ArrayLike, lo: int, hi: int) -> None:
    """Write ``X`` (n, hi - lo) centred in float64 into the columns ``lo:hi`` of ``Z`` (the
    float64 mean is removed before any rounding to ``Z``'s dtype)."""
    T = as_torch(X, device=Z.device)  # (n, d), a view when possible
    mean = T.mean(dim=0, keepdim=True, dtype=torch.float64)  # (1, d)
    if Z.dtype == torch.float64:
        torch.sub(T.to(torch.float64), mean, out=Z[:, lo:hi])
        return
    step = 8192  # float64 centring in row chunks: no full float64 copy of X
    for s in range(0, T.shape[0], step):
        Z[s:s + step, lo:hi] = T[s:s + step].to(torch.float64) - mean


def centred_cross(X: ArrayLike, Y: ArrayLike, device: torch.device, *, chunk: int = 8192,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Xc^T Yc`` (d_x, d_y) and the centred column sums of squares of X and Y, in float64.

    Two passes over the rows (means, then ``chunk``-row blocks centred on the fly), so no
    centred (n, d) copy is ever made: memory O(chunk d + d_x d_y).
    """
    Xt, Yt = as_torch(X, device=device), as_torch(Y, device=device)
    mx = Xt.mean(dim=0, keepdim=True, dtype=torch.float64)  # (1, d_x)
    my = Yt.mean(dim=0, keepdim=True, dtype=torch.float64)  # (1, d_y)
    S = torch.zeros((Xt.shape[1], Yt.shape[1]), dtype=torch.float64, device=device)
    cx = torch.zeros(Xt.shape[1], dtype=torch.float64, device=device)
    cy = torch.zeros(Yt.shape[1], dtype=torch.float64, device=device)
    for lo in range(0, Xt.shape[0], chunk):
        Xb = Xt[lo:lo + chunk].to(torch.float64) - mx  # (b, d_x)
        Yb = Yt[lo:lo + chunk].to(torch.float64) - my  # (b, d_y)
        S.addmm_(Xb.T, Yb)
        cx += torch.sum(Xb * Xb, dim=0)
        cy += torch.sum(Yb * Yb, dim=0)
    return S, cx, cy


def zero_variance(Xc: torch.Tensor | None, fn: str, name: str, *, warn: bool,
                  col_sq: torch.Tensor | None = None) -> int:
    """Count the zero-variance columns of a centred matrix; refuse when all columns are.

    A column is constant when its centred norm is below 1e-12 times the largest column norm
    (or exactly zero). Returns the count; ``warn`` issues a ``UserWarning`` when it is positive
    (CCA-type measures, whose effective dimension it lowers). ``col_sq`` (the centred column
    sums of squares, e.g. the diagonal of ``Xc^T Xc``) saves a pass over the data when it is
    already known; ``Xc`` may then be None.
    """
    if col_sq is None:
        col_sq = torch.sum(Xc * Xc, dim=0)  # (d,)
    norms = col_sq.clamp_min(0).sqrt()  # (d,)
    d = norms.shape[0]
    top = float(norms.max())
    if top == 0.0:
        raise ValueError(
            f"{fn} got '{name}' whose columns all have zero variance (every row is identical); "
            f"the similarity is undefined."
        )
    count = int((norms <= 1e-12 * top).sum())
    if count and warn:
        warnings.warn(
            f"{fn}: {count} of {d} columns of '{name}' have zero variance; they are "
            f"dropped from the whitening (effective dimension {d - count}).",
            UserWarning, stacklevel=3,
        )
    return count


def pair_distances(X64: torch.Tensor, i: np.ndarray, j: np.ndarray, *,
                   chunk: int = 65_536) -> np.ndarray:
    """Euclidean distances ``||x_i - x_j||`` of listed pairs, gathering ``chunk`` pairs at a time."""
    dev = X64.device
    out = np.empty(i.shape[0])
    for lo in range(0, i.shape[0], chunk):
        a = X64[torch.as_tensor(i[lo:lo + chunk], device=dev)]  # (c, d)
        b = X64[torch.as_tensor(j[lo:lo + chunk], device=dev)]  # (c, d)
        out[lo:lo + chunk] = torch.linalg.vector_norm(a - b, dim=1).cpu().numpy()
    return out


def make_estimate(
    measure: str,
    value: float,
    n: int,
    params: Mapping[str, Any],
    diagnostics: Mapping[str, Any] | None = None,
    cls: type[Estimate] = Estimate,
    **fields: Any,
) -> Estimate:
    """Build the result; ``diagnostics['n_effective']`` defaults to ``n``."""
    diag = {"n_effective": int(n)}
    diag.update(diagnostics or {})
    clean = {k: _plain(v) for k, v in diag.items()}
    return cls(measure=measure, value=float(value), n_samples=int(n), params=dict(params),
               diagnostics=clean, **fields)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.generic):
        return v.item()
    return v
