"""Fixed random projections ``P: R^d -> R^D`` with unit-norm columns: dense, sparse and Fastfood.

A subspace run trains ``z`` in ``theta = theta_0 + P z`` (Li, Farkhoor, Liu, Yosinski, ICLR 2018,
"Measuring the intrinsic dimension of objective landscapes", Sec. 2). ``P`` is drawn once from
``seed`` and never trained; its columns have unit length, so a unit step of one coordinate of
``z`` moves ``theta`` by a unit distance (Li et al. normalise the columns for the same reason).
Three constructions, all seeded (the same seed, sizes and dtype give the same ``P`` on any
device, because the random numbers are drawn on the CPU):

- ``dense``: i.i.d. Gaussian entries, each column divided by its norm. Stores ``D x d`` numbers,
  so it is meant for small models (refused above ``max_dense`` entries).
- ``sparse``: the "very sparse random projection" of Li, Hastie and Church (KDD 2006) as Li et
  al. use it: in each parameter tensor of ``D_t`` entries an entry of ``P`` is non-zero with
  probability ``1/sqrt(D_t)`` (about ``sqrt(D_t)`` non-zeros per column and tensor), with a random
  sign; each column is then divided by its norm (exactly unit length). Stored as CSR.
- ``fastfood``: the structured transform of Le, Sarlos and Smola (ICML 2013, "Fastfood"),
  ``V = H G Pi H B`` with ``H`` the Walsh-Hadamard matrix, ``B`` random signs, ``Pi`` a random
  permutation and ``G`` Gaussian, as both Li et al. and Aghajanyan et al. (ACL 2021) use it for
  large models. Blocks of size ``b = 2**m >= d`` (``z`` zero-padded to ``b``) are stacked
  ``ceil(D/b)`` times with independent ``B, Pi, G`` (Le et al., Sec. 3) and the output truncated
  to ``D``; a product costs ``O(D log b)`` time and ``O(D)`` memory, never a ``D x d`` matrix.
  Each block's columns have norm ``sqrt(b sum G^2)`` exactly; dividing by that and by
  ``sqrt(D/b)`` gives columns of unit expected squared length (exactly unit when ``b`` divides
  ``D``), the normalisation of Li et al.'s implementation (which uses a single block,
  ``b = 2**ceil(log2 D)``; ``block=`` reproduces it).

Every projection maps ``z`` (``(d,)``) to ``P z`` (``(D,)``), or to ``base + P z`` when given a
``base``, through a custom autograd function whose backward applies ``P^T`` without storing
anything from the forward pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repscope.landscape.hadamard import RADIX, factor_sizes, hadamard_matrix, transform_

__all__ = [
    "PROJECTIONS",
    "DenseProjection",
    "FastfoodProjection",
    "Projection",
    "SparseProjection",
    "make_projection",
]

PROJECTIONS = ("fastfood", "sparse", "dense")
MAX_DENSE = 1 << 27
"Largest ``D * d`` the dense projection accepts by default (512 MiB of float32)."


class _Apply(torch.autograd.Function):
    """``base + P z`` with ``P^T g`` as the backward; nothing from the forward is kept."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, base: torch.Tensor | None,
                proj: Projection) -> torch.Tensor:
        ctx.proj = proj
        ctx.has_base = base is not None
        return proj._forward(z.detach(), base)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        grad_z = ctx.proj._transpose(g.contiguous()) if ctx.needs_input_grad[0] else None
        grad_base = g if ctx.has_base and ctx.needs_input_grad[1] else None
        return grad_z, grad_base, None


class Projection(nn.Module):
    """A fixed random linear map ``P: R^d -> R^D`` with unit-norm columns (see the module doc)."""

    kind = ""

    def __init__(self, D: int, d: int, seed: int):
        super().__init__()
        self.D, self.d, self.seed = D, d, seed

    def forward(self, z: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``P z`` (``(D,)``) for ``z`` of shape ``(d,)``; ``base + P z`` when ``base`` is given."""
        from repscope._validate import param_error

        if z.shape != (self.d,):
            raise param_error(f"{type(self).__name__}.forward", "z", f"a tensor of shape ({self.d},)",
                              tuple(z.shape))
        if base is not None and base.shape != (self.D,):
            raise param_error(f"{type(self).__name__}.forward", "base",
                              f"a tensor of shape ({self.D},)", tuple(base.shape))
        return _Apply.apply(z, base, self)

    def transpose(self, g: torch.Tensor) -> torch.Tensor:
        """``P^T g`` (``(d,)``) for ``g`` of shape ``(D,)`` (what the backward pass applies)."""
        with torch.no_grad():
            return self._transpose(g.detach().contiguous())

    def matrix(self) -> torch.Tensor:
        """The ``(D, d)`` matrix, column by column (for checks on small sizes)."""
        dtype, device = self._dtype_device()
        eye = torch.eye(self.d, dtype=dtype, device=device)
        with torch.no_grad():
            return torch.stack([self._forward(eye[j], None) for j in range(self.d)], 1)

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, seed={self.seed}"

    # -- what a construction implements ----------------------------------------------------
    def _forward(self, z: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _transpose(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        raise NotImplementedError


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


class DenseProjection(Projection):
    """Gaussian ``P`` with columns divided by their norms, stored as a ``(D, d)`` buffer."""

    kind = "dense"

    def __init__(self, D: int, d: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: Any = None, max_dense: int = MAX_DENSE):
        from repscope._validate import param_error

        super().__init__(D, d, seed)
        if D * d > max_dense:
            raise param_error("DenseProjection", "d", f"at most max_dense / D = {max_dense // D} "
                              f"for D={D} (a dense D x d matrix of {D * d} entries; use the "
                              "'sparse' or 'fastfood' projection for large models)", d)
        P = torch.randn(D, d, generator=_generator(seed), dtype=torch.float32).to(dtype)  # (D, d)
        P /= P.norm(dim=0, keepdim=True)
        self.register_buffer("P", P.to(device))

    def _forward(self, z: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        return torch.mv(self.P, z) if base is None else torch.addmv(base, self.P, z)

    def _transpose(self, g: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.P.T, g)

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return self.P.dtype, self.P.device


def _bernoulli_positions(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Sorted positions in ``[0, n)`` of a Bernoulli(``p``) process, from geometric gaps."""
    if p >= 1.0:
        return np.arange(n, dtype=np.int64)
    out, start = [], -1
    chunk = max(1024, int(n * p * 1.1) + 64)
    while True:
        pos = start + np.cumsum(rng.geometric(p, size=chunk))
        keep = pos[pos < n]
        out.append(keep)
        if len(keep) < len(pos):
            return np.concatenate(out)
        start = int(pos[-1])


class SparseProjection(Projection):
    """Very sparse random ``P`` (density ``1/sqrt(D_t)`` per parameter tensor), unit columns."""

    kind = "sparse"

    def __init__(self, D: int, d: int, *, seed: int = 0, sizes: Sequence[int] | None = None,
                 dtype: torch.dtype = torch.float32, device: Any = None):
        from repscope._validate import param_error

        super().__init__(D, d, seed)
        sizes = [D] if sizes is None else [int(s) for s in sizes]
        if sum(sizes) != D or min(sizes) < 1:
            raise param_error("SparseProjection", "sizes", f"positive tensor sizes summing to D={D}",
                              sizes)
        rng = np.random.default_rng(seed)
        rows, cols, offset = [], [], 0
        for size in sizes:  # each tensor's block of P: (size, d), row-major positions
            pos = _bernoulli_positions(rng, size * d, 1.0 / math.sqrt(size))
            rows.append(pos // d + offset)
            cols.append(pos % d)
            offset += size
        row, col = np.concatenate(rows), np.concatenate(cols)  # (nnz,), sorted by (row, col)
        empty = np.flatnonzero(np.bincount(col, minlength=d) == 0)
        if len(empty):  # a column with no entry at all (tiny D): give it one at a random row
            extra_rows = rng.integers(0, D, size=len(empty))
            row, col = np.concatenate([row, extra_rows]), np.concatenate([col, empty])
            order = np.lexsort((col, row))
            row, col = row[order], col[order]
        sign = rng.integers(0, 2, size=len(row)) * 2.0 - 1.0
        value = sign / np.sqrt(np.bincount(col, minlength=d)[col])  # unit-norm columns
        itype = torch.int32 if len(row) < 2**31 - 1 and D < 2**31 - 1 else torch.int64
        by_col = np.argsort(col, kind="stable")  # rows stay sorted within each column
        for name, r, c, v, n in (("p", row, col, value, D), ("pt", col[by_col], row[by_col],
                                                              value[by_col], d)):
            crow = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(r, minlength=n), out=crow[1:])
            self.register_buffer(f"{name}_crow", torch.from_numpy(crow).to(itype).to(device))
            self.register_buffer(f"{name}_col", torch.from_numpy(c).to(itype).to(device))
            self.register_buffer(f"{name}_val", torch.from_numpy(v).to(dtype).to(device))

    @property
    def nnz(self) -> int:
        """Non-zero entries of ``P``."""
        return int(self.p_val.numel())

    def _csr(self, name: str, shape: tuple[int, int]) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(getattr(self, f"{name}_crow"),
                                           getattr(self, f"{name}_col"),
                                           getattr(self, f"{name}_val"), shape,
                                           check_invariants=False)

    def _forward(self, z: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = torch.mv(self._csr("p", (self.D, self.d)), z)
        return out if base is None else out.add_(base)

    def _transpose(self, g: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.mv(self._csr("pt", (self.d, self.D)), g)

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return self.p_val.dtype, self.p_val.device


class FastfoodProjection(Projection):
    """Stacked Fastfood blocks ``H G Pi H B`` of size ``block = 2**m >= d``, truncated to ``D``."""

    kind = "fastfood"

    def __init__(self, D: int, d: int, *, seed: int = 0, block: int | None = None,
                 dtype: torch.dtype = torch.float32, device: Any = None, radix: int = RADIX):
        from repscope._validate import param_error

        super().__init__(D, d, seed)
        b = block if block is not None else max(2, 1 << math.ceil(math.log2(max(d, 1))))
        if b < d or b < 2 or b & (b - 1):
            raise param_error("FastfoodProjection", "block", f"a power of 2 >= max(d, 2) = "
                              f"{max(d, 2)}", block)
        k = math.ceil(D / b)
        self.block, self.n_blocks = b, k
        g = _generator(seed)
        signs = torch.randint(0, 2, (k, b), generator=g, dtype=torch.int8) * 2 - 1  # (k, b)
        perm = torch.argsort(torch.rand(k, b, generator=g), dim=1)  # (k, b) within each block
        gauss = torch.randn(k, b, generator=g, dtype=torch.float64)  # (k, b)
        # a block's columns have norm sqrt(b * sum G^2); sqrt(D / b) spreads unit length over
        # the stacked blocks (exact when b divides D, in expectation for a truncated last block)
        scale = 1.0 / torch.sqrt(b * (gauss**2).sum(1, keepdim=True) * (D / b))  # (k, 1)
        itype = torch.int32 if k * b < 2**31 - 1 else torch.int64
        flat = (perm + torch.arange(k).unsqueeze(1) * b).reshape(-1)  # (k b,) global gather
        inverse = torch.empty_like(flat)
        inverse[flat] = torch.arange(k * b)
        self.register_buffer("signs", signs.to(device))
        self.register_buffer("perm", flat.to(itype).to(device))
        self.register_buffer("inverse", inverse.to(itype).to(device))
        self.register_buffer("gauss", (gauss * scale).to(dtype).to(device))
        self._sizes = factor_sizes(b, radix)
        self._work: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block={self.block}, n_blocks={self.n_blocks}"

    def _buffers_for(self, dtype: torch.dtype,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[int, Any]]:
        """Two ``(k, b)`` scratch buffers and the Hadamard factors, made once per dtype/device
        (reused by every product: a fresh allocation per pass costs more than the arithmetic)."""
        key = (dtype, device)
        if key not in self._work:
            self._work.clear()
            shape = (self.n_blocks, self.block)
            mats = {s: hadamard_matrix(s, dtype=dtype, device=device) for s in set(self._sizes)}
            self._work[key] = (torch.empty(shape, dtype=dtype, device=device),
                               torch.empty(shape, dtype=dtype, device=device), mats)
        return self._work[key]

    def _forward(self, z: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        w1, w2, mats = self._buffers_for(z.dtype, z.device)
        d = self.d
        w1[:, d:].zero_()
        torch.mul(self.signs[:, :d], z, out=w1[:, :d])  # B z_pad, every block   (k, b)
        x = transform_(w1, w2, mats, self._sizes)  # H
        y = w2 if x is w1 else w1
        torch.index_select(x.view(-1), 0, self.perm, out=y.view(-1))  # Pi
        y.mul_(self.gauss)  # G, with the column normalisation folded in
        x = transform_(y, x, mats, self._sizes)  # H
        out = x.view(-1)[: self.D]  # (D,) truncated
        return out.clone() if base is None else torch.add(base, out)

    def _transpose(self, g: torch.Tensor) -> torch.Tensor:
        w1, w2, mats = self._buffers_for(g.dtype, g.device)
        flat = w1.view(-1)
        flat[: self.D].copy_(g)
        flat[self.D:].zero_()
        x = transform_(w1, w2, mats, self._sizes)  # H^T = H
        x.mul_(self.gauss)  # G^T = G
        y = w2 if x is w1 else w1
        torch.index_select(x.view(-1), 0, self.inverse, out=y.view(-1))  # Pi^T
        x = transform_(y, x, mats, self._sizes)  # H
        head = x[:, : self.d]
        head.mul_(self.signs[:, : self.d])  # B^T (in the scratch buffer)
        return head.sum(0)  # summed over blocks   (d,)

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return self.gauss.dtype, self.gauss.device


def make_projection(kind: str, D: int, d: int, *, seed: int = 0,
                    sizes: Sequence[int] | None = None, block: int | None = None,
                    dtype: torch.dtype = torch.float32, device: Any = None,
                    max_dense: int = MAX_DENSE) -> Projection:
    """Build the projection ``kind`` (one of :data:`PROJECTIONS`) from ``R^d`` to ``R^D``.

    ``sizes``: the parameter tensors' sizes (the sparse projection draws its density per
    tensor); ``block``: Fastfood's block size (default the smallest power of 2 >= ``d``).
    """
    from repscope._validate import check_choice, check_int, param_error

    fn = "make_projection"
    kind = check_choice(kind, "kind", fn, PROJECTIONS)
    D = check_int(D, "D", fn, low=1)
    d = check_int(d, "d", fn, low=1)
    seed = check_int(seed, "seed", fn, low=0)
    if d > D:
        raise param_error(fn, "d", f"an int in [1, D={D}]", d)
    if kind == "dense":
        return DenseProjection(D, d, seed=seed, dtype=dtype, device=device, max_dense=max_dense)
    if kind == "sparse":
        return SparseProjection(D, d, seed=seed, sizes=sizes, dtype=dtype, device=device)
    return FastfoodProjection(D, d, seed=seed, block=block, dtype=dtype, device=device)
