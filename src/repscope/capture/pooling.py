"""Turn a batch of sequence activations ``(b, t, d)`` into rows, respecting the attention mask.

Poolings (``mask`` is 1 for real tokens, 0 for padding):

- ``none``: token-level rows, every real token of every sequence, in row-major order
  (sequence by sequence, position ascending): ``H[mask == 1]`` of shape ``(sum(mask), d)``;
- ``mean``: ``sum_t mask[b, t] H[b, t] / sum_t mask[b, t]`` (padding never contributes);
- ``first``: the first real token (``[CLS]`` for BERT-style models);
- ``last``: the last real token (the usual sentence summary of causal language models).

Padding may be on either side: ``first`` and ``last`` look up the first/last position whose
mask is 1.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["POOLINGS", "Pooling", "pool", "token_positions"]

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
        w = keep.to(hidden.dtype).unsqueeze(-1)  # (b, t, 1)
        counts = w.sum(dim=1).clamp_min(1)  # (b, 1)
        return (hidden * w).sum(dim=1) / counts  # (b, d)
    if pooling in ("first", "last"):
        pos = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)  # (b, t)
        if pooling == "first":
            idx = torch.where(keep, pos, keep.shape[1]).amin(dim=1).clamp_max(keep.shape[1] - 1)
        else:
            idx = torch.where(keep, pos, -1).amax(dim=1).clamp_min(0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # (b, d)
    raise ValueError(
        f"The 'pooling' parameter of pool must be one of {{'none', 'mean', 'first', 'last'}}. "
        f"Got {pooling!r} instead."
    )


def token_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, position) of every real token, in the row order of ``pool(..., 'none')``."""
    seq, position = mask.to(torch.bool).nonzero(as_tuple=True)
    return seq, position
