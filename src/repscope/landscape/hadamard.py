"""The fast Walsh-Hadamard transform (Sylvester order) in torch, for the Fastfood projection.

``fwht(x)`` multiplies the last axis of ``x`` (length ``b = 2**m``) by the unnormalised
Sylvester-Hadamard matrix ``H_b`` (entries +-1, ``H_b H_b = b I``). ``H_b`` is the Kronecker
product of smaller Sylvester matrices, ``H_b = H_{s_1} (x) H_{s_2} (x) ... (x) H_{s_n}`` with
``s_1 s_2 ... s_n = b``, so the transform is ``n`` passes, each multiplying one axis of ``x``
viewed as ``(..., s_1, ..., s_n)`` by a small ``s_j x s_j`` matrix. With every ``s_j <= 2**radix``
that is ``O(b * 2**radix * ceil(m / radix))`` operations, i.e. ``O(b log b)`` for a fixed radix;
``radix=1`` is the classic butterfly (one add/subtract pass per bit). Matrix passes of 32 x 32
(``radix=5``) run several times faster than butterflies on CPUs because each pass is one GEMM
instead of ``5`` memory-bound add/subtract passes (``benchmarks/landscape.py``).

Reference: the Walsh-Hadamard matrix and its fast transform as used by Fastfood (Le, Sarlos,
Smola, ICML 2013, "Fastfood: approximating kernel expansions in loglinear time").
"""

from __future__ import annotations

import math

import torch

__all__ = ["RADIX", "factor_sizes", "fwht", "hadamard_matrix"]

RADIX = 5
"Largest factor ``2**RADIX`` of the Kronecker passes (32 x 32 matrices)."


def hadamard_matrix(b: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The ``(b, b)`` Sylvester-Hadamard matrix (entries +-1, unnormalised); ``b`` a power of 2."""
    from repscope._validate import param_error

    if b < 1 or b & (b - 1):
        raise param_error("hadamard_matrix", "b", "a power of 2", b)
    H = torch.ones(1, 1, dtype=dtype, device=device)
    while H.shape[0] < b:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def factor_sizes(b: int, radix: int = RADIX) -> list[int]:
    """The Kronecker factors of ``H_b`` used by :func:`fwht`: balanced powers of 2, each at most
    ``2**radix``, whose product is ``b``."""
    m = int(math.log2(b))
    if m == 0:
        return [1]
    n = math.ceil(m / radix)
    base, extra = divmod(m, n)
    return [1 << (base + (1 if i < extra else 0)) for i in range(n)]


def transform_(x: torch.Tensor, work: torch.Tensor, mats: dict[int, torch.Tensor],
               sizes: list[int]) -> torch.Tensor:
    """``H_b`` applied to the rows of ``x`` (``(k, b)``, contiguous) using ``work`` (same shape) as
    scratch; returns whichever of the two buffers holds the result (both are overwritten).

    ``mats`` maps each factor size in ``sizes`` to its Hadamard matrix (in ``x``'s dtype/device).
    """
    k = x.shape[0]
    src, dst = x, work
    for j, s in enumerate(sizes):
        if s == 1:
            continue
        before = k * math.prod(sizes[:j])
        after = math.prod(sizes[j + 1:])
        if after == 1:  # the last axis: one (k b / s, s) x (s, s) GEMM
            torch.matmul(src.view(before, s), mats[s], out=dst.view(before, s))
        else:  # a middle axis: H (s, s) times each (s, after) slab
            torch.matmul(mats[s], src.view(before, s, after), out=dst.view(before, s, after))
        src, dst = dst, src
    return src


def fwht(x: torch.Tensor, *, radix: int = RADIX) -> torch.Tensor:
    """The unnormalised Walsh-Hadamard transform of the last axis of ``x`` (Sylvester order).

    ``x``: a float tensor whose last axis has a power-of-2 length ``b``. Returns a new tensor of
    the same shape, ``x @ H_b`` (``H_b`` is symmetric, so also ``H_b x`` for vectors); applying
    it twice gives ``b x``. ``radix`` bounds the Kronecker factors at ``2**radix`` (1 = butterflies).

    Example::

        >>> fwht(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]))
        tensor([ 4.,  2.,  0., -2.,  0.,  2.,  0.,  2.])
    """
    from repscope._validate import check_int, param_error

    fn = "fwht"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim == 0:
        raise param_error(fn, "x", "a floating-point torch tensor with at least one axis",
                          type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype)
    radix = check_int(radix, "radix", fn, low=1, high=12, high_inclusive=True)
    b = x.shape[-1]
    if b < 1 or b & (b - 1):
        raise param_error(fn, "x", "a tensor whose last axis has a power-of-2 length",
                          tuple(x.shape))
    sizes = factor_sizes(b, radix)
    mats = {s: hadamard_matrix(s, dtype=x.dtype, device=x.device) for s in set(sizes)}
    rows = x.reshape(-1, b).clone()  # (k, b)
    out = transform_(rows, torch.empty_like(rows), mats, sizes)
    return out.reshape(x.shape)
