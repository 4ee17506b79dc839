"""Sparsifying activation functions and dictionary-pursuit kernels (plain functions).

Every function works on a batch of pre-activations ``pre`` of shape ``(n, d_sae)`` and returns
codes of the same shape with most entries exactly zero. The SAE classes in
:mod:`repscope.dictionaries.sae` are thin wrappers around these.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = [
    "SparsePreacts",
    "topk_decode",
    "topk_select",
    "afa_k",
    "batch_topk",
    "batch_topk_threshold",
    "JumpReLUSTE",
    "StepSTE",
    "jumprelu",
    "matching_pursuit",
    "topk",
    "topk_afa",
]


def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """TopK activation (Makhzani & Frey 2013; Gao et al. 2024): keep the ``k`` largest of
    ``ReLU(pre)`` in each row, zero the rest. ``z = ReLU(pre) * 1[pre_j in top-k(pre)]``."""
    values, idx = torch.topk(pre, k, dim=-1, sorted=False)  # (n, k)
    return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(values))  # (n, d_sae)


#: bytes of one block of encoder pre-activations in :func:`topk_select`: on CPU an allocation
#: above glibc's mmap threshold (at most 32 MiB) is fresh memory every time and costs a page
#: fault per 4 KiB (about 20 ms for a (1024, 12288) float32 block); below it the block is reused.
_BLOCK_BYTES = 24 * 2**20


def topk_select(
    xc: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int,
    dead: torch.Tensor | None = None, k_aux: int = 0, block_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Top-``k`` encoder pre-activations ``pre = xc W_enc + b_enc`` per row, without autograd
    and without materialising ``pre`` (n, d_sae): row blocks of ``block_rows`` go through one
    reused buffer (on CPU; one block on other devices).

    Returns ``(values, indices)`` (n, k) of the ``k`` largest entries of each row of ``pre``
    (pre-activations, before the ReLU) and, when ``dead`` (d_sae,) bool is given with
    ``k_aux > 0``, the same for the ``min(k_aux, n_dead)`` largest among the dead columns
    (the AuxK selection of Gao et al. 2024), else ``(None, None)``. Each block is computed as
    ``mm`` then ``+ b_enc``, the same operations as :meth:`SparseAutoencoder.pre_acts`.
    """
    n, m = xc.shape[0], W_enc.shape[1]
    if block_rows is None:
        block_rows = max(1, _BLOCK_BYTES // (m * xc.element_size())) if xc.device.type == "cpu" else n
    n_blocks = max(1, -(-n // max(1, block_rows)))
    block_rows = -(-n // n_blocks)  # balanced blocks
    k_dead = 0
    if dead is not None and k_aux > 0:
        k_dead = min(k_aux, int(dead.sum()))
    values = xc.new_empty(n, k)
    indices = torch.empty(n, k, dtype=torch.int64, device=xc.device)
    aux_values = xc.new_empty(n, k_dead) if k_dead else None
    aux_indices = torch.empty(n, k_dead, dtype=torch.int64, device=xc.device) if k_dead else None
    live = ~dead[None, :] if k_dead else None  # (1, d_sae)
    buf = xc.new_empty(block_rows, m)
    with torch.no_grad():
        for s in range(0, n, block_rows):
            e = min(n, s + block_rows)
            pre = torch.mm(xc[s:e], W_enc, out=buf[: e - s]).add_(b_enc)  # (rows, d_sae)
            torch.topk(pre, k, dim=-1, sorted=False, out=(values[s:e], indices[s:e]))
            if k_dead:
                pre.masked_fill_(live, -torch.inf)
                torch.topk(pre, k_dead, dim=-1, sorted=False, out=(aux_values[s:e], aux_indices[s:e]))
    return values, indices, aux_values, aux_indices


class SparsePreacts(torch.autograd.Function):
    """Selected encoder pre-activations ``pre[i, idx[i, j]]`` (n, k) with a sparse backward.

    ``values`` are the pre-activations at ``idx`` computed without autograd
    (:func:`topk_select`), ``xc = x - b_dec`` the centred input (detached). Only the selected
    entries receive a gradient ``G`` (n, k), so the weight gradient is the sparse product
    ``W_enc.grad[:, r] = sum_{(i, j): idx_ij = r} G_ij xc_i`` (``n k d`` multiply-adds instead
    of the dense ``xc^T G``, ``n d d_sae``), ``b_enc.grad = sum G`` per latent and
    ``b_dec.grad = -W_enc b_enc.grad`` (``b_dec`` enters every row with a minus sign)."""

    @staticmethod
    def forward(ctx, values, idx, xc, b_dec, W_enc, b_enc):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(idx, xc, W_enc)
        ctx.mark_non_differentiable(idx)
        return values.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        idx, xc, W_enc = ctx.saved_tensors
        grad_b_enc = g.new_zeros(W_enc.shape[1]).index_add_(0, idx.flatten(), g.flatten())
        grad_W_enc = _scatter_rows(idx, g, xc, W_enc.T).T  # (d, d_sae), W_enc's layout
        return None, None, None, -(W_enc @ grad_b_enc), grad_W_enc, grad_b_enc


def _scatter_rows(idx: torch.Tensor, g: torch.Tensor, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``M[idx[i, j]] += g[i, j] x[i]`` for a zero matrix ``M`` shaped like ``like``
    (n_rows, d): the transposed sparse product ``G^T x``. Computed as the weight gradient of an
    ``embedding_bag`` sum, the kernel torch optimises for this, without materialising the
    ``(n, k, d)`` outer products. The gradient does not depend on the table's values, so the
    table is ``like`` itself (detached; no (n_rows, d) zero matrix is allocated)."""
    with torch.enable_grad():
        M = like.detach().requires_grad_()
        out = F.embedding_bag(idx, M, per_sample_weights=g.detach(), mode="sum")  # (n, d)
        (grad,) = torch.autograd.grad(out, M, grad_outputs=x)
    return grad


def topk_decode(values: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``z W_dec`` for a code with ``k`` non-zeros per row given as ``(values, indices)`` (n, k).

    An ``embedding_bag`` sum of the ``k`` selected decoder rows weighted by their values: forward
    and backward in ``n k d`` multiply-adds, without materialising the ``(n, k, d)`` gather or
    the dense ``n d_sae d`` product (about 5x faster than a gather + ``bmm`` on CPU)."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=values, mode="sum")  # (n, d)


def batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """BatchTopK (Bussmann et al. 2024): keep the ``k * n`` largest entries of ``ReLU(pre)``
    over the whole batch, so each row uses a variable number of latents with mean ``k``."""
    flat = torch.relu(pre).flatten()  # (n * d_sae,)
    values, idx = torch.topk(flat, k * pre.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter_(0, idx, values).view_as(pre)  # (n, d_sae)


def batch_topk_threshold(pre_batches: Iterable[torch.Tensor], k: int) -> float:
    """Inference threshold of a BatchTopK SAE (Bussmann et al. 2024, sec. 3): the average over
    batches of the smallest positive code that BatchTopK keeps,
    ``theta = mean_X min{z_ij(X) : z_ij(X) > 0}``, ``z(X) = batch_topk(pre(X), k)``.

    Each batch's minimum is the ``(n k)``-th largest positive pre-activation, an empirical
    ``1 - k / d_sae`` quantile, so JumpReLU with ``theta`` keeps ``k`` latents per row on
    average. Batches with no positive code are skipped; 0.0 if none has one. Use the
    training batch size: the kept minimum depends on ``n``."""
    mins = []
    for pre in pre_batches:
        z = batch_topk(pre, k)  # (n, d_sae)
        positive = z[z > 0]
        if positive.numel():
            mins.append(float(positive.min()))
    return sum(mins) / len(mins) if mins else 0.0


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """JumpReLU (Rajamanoharan et al. 2024): ``z = pre * 1[pre > theta]`` (theta >= 0).

    BatchTopK SAEs use it at inference with a single global threshold estimated in training,
    so a row's code no longer depends on the other rows of its batch."""
    return pre * (pre > threshold)


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    """Rectangle kernel ``K(u) = 1[-1/2 < u < 1/2]``."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUSTE(torch.autograd.Function):
    """JumpReLU ``z = pre * H(pre - theta)`` (per-latent ``theta`` (d_sae,)) with the
    straight-through pseudo-derivative of Rajamanoharan et al. 2024 ("Jumping Ahead", eq. 11):
    ``dz/dpre = H(pre - theta)`` and ``dz/dtheta = -(theta / eps) K((pre - theta) / eps)`` with the
    rectangle kernel ``K`` of bandwidth ``eps``; the threshold gradient is summed over rows."""

    @staticmethod
    def forward(ctx, pre, theta, eps):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        pre, theta = ctx.saved_tensors
        k = _rectangle((pre - theta) / ctx.eps)  # (n, d_sae)
        grad_theta = -(theta / ctx.eps) * (k * g).sum(0)
        return g * (pre > theta), grad_theta, None


class StepSTE(torch.autograd.Function):
    """Heaviside step ``H(pre - theta)`` (the L0 count) with the pseudo-derivative of
    Rajamanoharan et al. 2024 (eq. 12): ``dH/dtheta = -(1 / eps) K((pre - theta) / eps)`` and no
    gradient to ``pre``: the L0 penalty trains the thresholds only."""

    @staticmethod
    def forward(ctx, pre, theta, eps):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        pre, theta = ctx.saved_tensors
        grad_theta = -(1.0 / ctx.eps) * (_rectangle((pre - theta) / ctx.eps) * g).sum(0)
        return None, grad_theta, None


def afa_k(acts: torch.Tensor, target_norm: torch.Tensor, dec_norms: torch.Tensor,
          tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row number of active latents of top-AFA (Lee et al. 2025, "Evaluating and Designing
    Sparse Autoencoders by Approximating Quasi-Orthogonality").

    With contributions ``c_j = (a_j ||W_dec_j||)^2`` sorted in decreasing order and prefix norms
    ``p_k = sqrt(sum_{j<=k} c_j)``, the paper's rule (``tol = 0``) takes the prefix closest to the
    approximate feature activation ``T_i = ||x_i - b_dec||`` (the dense vector's norm), which
    approximates the norm of the true sparse code when the features are epsilon-quasi-orthogonal.
    With ``tol > 0``, ``k_i`` is the *shortest* prefix whose distance to ``T_i`` is within
    ``tol * T_i`` of the closest one: ``k_i = min{k : |p_k - T_i| <= min_k' |p_k' - T_i| + tol T_i}``.
    AFA is itself approximate, so prefixes that differ from the closest by less than a small
    fraction of ``T_i`` are equally consistent with it, and the sparsest of them is preferred;
    this stops latents with tiny activations from being added to close a gap far below the AFA
    error (docs/dictionaries.md, "top-AFA in practice"). Ties go to the shortest prefix, so
    latents with zero activation never count.
    Returns ``(k, order)``: ``k`` of shape ``(n,)`` (>= 1) and the descending order
    ``(n, d_sae)``.
    """
    contrib = (acts * dec_norms) ** 2  # (n, d_sae)
    sorted_c, order = torch.sort(contrib, dim=-1, descending=True)
    prefix_norm = torch.cumsum(sorted_c, dim=-1).sqrt()  # (n, d_sae)
    gap = (prefix_norm - target_norm[:, None]).abs()  # (n, d_sae)
    band = gap.amin(dim=-1, keepdim=True) + tol * target_norm[:, None]  # (n, 1)
    k = (gap <= band).to(torch.uint8).argmax(dim=-1) + 1  # first prefix inside the band
    return k, order


def topk_afa(acts: torch.Tensor, target_norm: torch.Tensor, dec_norms: torch.Tensor,
             tol: float = 0.0) -> torch.Tensor:
    """top-AFA activation: keep the ``k_i`` largest contributions of ``acts = ReLU(pre)`` per
    row, with ``k_i`` from :func:`afa_k` (no global sparsity hyper-parameter)."""
    k, order = afa_k(acts, target_norm, dec_norms, tol)
    rank = torch.arange(acts.shape[1], device=acts.device)[None, :]  # (1, d_sae)
    keep_sorted = rank < k[:, None]  # (n, d_sae), in sorted order
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return acts * keep


def matching_pursuit(
    x: torch.Tensor, W_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matching pursuit (Mallat & Zhang 1993), the encoder of MP-SAE
    (Costa et al. 2025, "From flat to hierarchical: extracting sparse representations with
    matching pursuit").

    ``x`` (n, d_in) is the centred input, ``W_dec`` (d_sae, d_in) has unit-norm rows. For
    ``t = 1..k``: ``c = r W_dec^T``, ``j = argmax_j c_j``, ``z_j += max(c_j, 0)``,
    ``r -= max(c_j, 0) W_dec[j]``. Since ``||r - c w||^2 = ||r||^2 - c^2`` for a unit ``w``, the
    residual norm never increases. Returns the codes (n, d_sae) and residual norms (n, k + 1).
    """
    r = x  # (n, d_in)
    codes = x.new_zeros(x.shape[0], W_dec.shape[0])  # (n, d_sae)
    norms = [r.norm(dim=-1)]
    rows = torch.arange(x.shape[0], device=x.device)
    for _ in range(k):
        scores = r @ W_dec.T  # (n, d_sae)
        best, j = scores.max(dim=-1)  # (n,)
        coef = torch.relu(best)  # (n,)
        step = torch.zeros_like(codes).index_put((rows, j), coef)  # (n, d_sae)
        codes = codes + step
        r = r - coef[:, None] * W_dec[j]  # (n, d_in)
        norms.append(r.norm(dim=-1))
    return codes, torch.stack(norms, dim=1)
