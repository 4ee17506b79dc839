"""Turn a batch of sequence activations ``(b, t, d)`` into rows, respecting the attention mask.

Poolings (``mask`` is 1 for real tokens, 0 for padding):

- ``none``: token-level rows, every real token of every sequence, in row-major order
  (sequence by sequence, position ascending): ``H[mask == 1]`` of shape ``(sum(mask), d)``;
- ``mean``: ``sum_t mask[b, t] H[b, t] / sum_t mask[b, t]`` (padding never contributes);
- ``first``: the first real token (``[CLS]`` for BERT-style models);
- ``last``: the last real token (the usual sentence summary of causal language models).

Padding may be on either side: ``first`` and ``last`` look up the first/last position whose
mask is 1. The mask may also leave out real tokens (a token selection, see
:class:`repscope.capture.tokens.TokenSelection`): pooling then runs over the selected tokens.
:class:`DocumentPool` pools over several sequences per document (the windows of a long
document), in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

__all__ = ["POOLINGS", "DocumentPool", "Pooling", "pool", "token_positions"]

Pooling = Literal["none", "mean", "first", "last"]
POOLINGS: tuple[str, ...] = ("none", "mean", "first", "last")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Rows from ``hidden`` (b, t, d) under ``mask`` (b, t); see the module docstring."""
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"pool expects hidden states of shape (batch, seq, d) and a mask of shape "
            f"(batch, seq); got {tuple(hidden.shape)} and {tuple(mask.shape)}."
        )
    keep = mask.to(torch.bool)  # (b, t)
    if pooling == "none":
        return hidden[keep]  # (sum(mask), d)
    if pooling == "mean":
        counts = keep.sum(dim=1, keepdim=True).clamp_min(1).to(hidden.dtype)  # (b, 1)
        # masked_fill, not a product: a non-finite value at a padding position stays out
        return hidden.masked_fill(~keep.unsqueeze(-1), 0).sum(dim=1) / counts  # (b, d)
    if pooling in ("first", "last"):
        return hidden[torch.arange(hidden.shape[0], device=hidden.device),
                      _end_positions(keep, pooling)]  # (b, d)
    raise ValueError(
        f"The 'pooling' parameter of pool must be one of {{'none', 'mean', 'first', 'last'}}. "
        f"Got {pooling!r} instead."
    )


def _end_positions(keep: torch.Tensor, pooling: str) -> torch.Tensor:
    """(b,) first or last position whose mask is set (0 / t - 1 clamped for empty rows)."""
    t = keep.shape[1]
    pos = torch.arange(t, device=keep.device).expand_as(keep)  # (b, t)
    if pooling == "first":
        return torch.where(keep, pos, t).amin(dim=1).clamp_max(t - 1)
    return torch.where(keep, pos, -1).amax(dim=1).clamp_min(0)


def token_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, position) of every real token, in the row order of ``pool(..., 'none')``."""
    seq, position = mask.to(torch.bool).nonzero(as_tuple=True)
    return seq, position


class DocumentPool:
    """One pooled row per document from sequences that may split a document (windows).

    ``add`` takes one forward pass: per layer the ``(b, t, d)`` hidden states, the ``(b, t)``
    selection mask and each sequence's document (``0 .. n_docs - 1``, non-decreasing across
    calls, as the windows of a document run in order). Means are summed in float64; ``first``
    and ``last`` keep the first / last selected token of the document in reading order.
    """

    def __init__(self, pooling: Pooling, n_docs: int) -> None:
        if pooling not in ("mean", "first", "last"):
            raise ValueError(
                f"The 'pooling' parameter of DocumentPool must be one of {{'mean', 'first', "
                f"'last'}}. Got {pooling!r} instead."
            )
        self.pooling = pooling
        self.n_docs = n_docs
        self.counts = np.zeros(n_docs, dtype=np.int64)  # (n_docs,) tokens pooled
        self.rows: dict[str, torch.Tensor] = {}

    def add(self, hidden: Mapping[str, torch.Tensor], mask: torch.Tensor,
            doc: np.ndarray) -> None:
        keep = mask.to(torch.bool)  # (b, t)
        n_sel = keep.sum(dim=1).cpu().numpy()  # (b,)
        take: dict[int, int] = {}  # document -> the sequence that gives its row in this pass
        for i in np.flatnonzero(n_sel > 0).tolist():
            d = int(doc[i])
            if self.pooling == "last" or (self.counts[d] == 0 and d not in take):
                take[d] = i
        np.add.at(self.counts, doc, n_sel)
        pos = _end_positions(keep, self.pooling) if self.pooling != "mean" else None
        for name, h in hidden.items():
            out = self.rows.get(name)
            if out is None:
                out = torch.zeros(self.n_docs, h.shape[-1], dtype=torch.float64, device=h.device)
                self.rows[name] = out
            if pos is None:
                sums = h.masked_fill(~keep.unsqueeze(-1), 0).sum(dim=1)  # (b, d)
                out.index_add_(0, torch.as_tensor(doc, device=h.device), sums.to(torch.float64))
            elif take:
                seq = torch.as_tensor(list(take.values()), device=h.device)  # (m,)
                rows = h[seq, pos[seq]].to(torch.float64)  # (m, d)
                out[torch.as_tensor(list(take), device=h.device)] = rows

    def result(self, name: str) -> torch.Tensor:
        """``(n_docs, d)`` float64 pooled rows of layer ``name``."""
        empty = np.flatnonzero(self.counts == 0)
        if empty.size:
            raise ValueError(
                f"Document {int(empty[0])} of the batch has no token left to pool: every one of "
                f"its tokens is excluded by the token selection."
            )
        out = self.rows[name]
        if self.pooling == "mean":
            return out / torch.as_tensor(self.counts, dtype=torch.float64,
                                         device=out.device).unsqueeze(1)
        return out
