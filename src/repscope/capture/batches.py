"""Capture from ready-made batches: any ``nn.Module`` fed dicts of ``input_ids`` and
``attention_mask`` (left or right padding) instead of documents and a tokenizer.

Batches are re-padded on the right (:func:`right_pad`), so ``position`` counts from each
sequence's first real token and absolute position embeddings see what they see for the
sequence alone; each sequence is a document (``doc_id`` numbers them across batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repscope.capture.hf import (
    TOKEN_COLUMNS,
    Chunk,
    Pass,
    check_max_length,
    layer_modules,
    run_passes,
)
from repscope.capture.pooling import Pooling
from repscope.capture.tokens import TokenSelection

__all__ = ["iter_batch_chunks", "right_pad"]


def right_pad(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Move each sequence's real tokens to the front (right padding), per ``attention_mask``.

    Every ``(b, t)`` tensor of the batch moves with the tokens (padding positions are filled
    with 0, ``attention_mask`` with 0); other entries pass unchanged. The mask must be one run
    of ones per sequence (left or right padding); a mask with holes raises ``ValueError``.
    """
    ids = torch.as_tensor(batch["input_ids"])
    if ids.ndim != 2:
        raise ValueError(f"A batch's 'input_ids' must have shape (batch, seq); got "
                         f"{tuple(ids.shape)}.")
    mask = torch.as_tensor(batch.get("attention_mask", torch.ones_like(ids))).to(torch.bool)
    if mask.shape != ids.shape:
        raise ValueError(f"A batch's 'attention_mask' has shape {tuple(mask.shape)}; its "
                         f"'input_ids' {tuple(ids.shape)}.")
    lengths = mask.sum(dim=1)  # (b,)
    first = torch.where(mask, torch.arange(ids.shape[1]), ids.shape[1]).amin(dim=1)
    last = torch.where(mask, torch.arange(ids.shape[1]), -1).amax(dim=1)
    holes = (lengths > 0) & (last - first + 1 != lengths)
    if bool(holes.any()):
        raise ValueError(
            f"Sequence {int(holes.nonzero()[0])} of a batch has padding between real tokens; "
            f"repscope takes left- or right-padded batches only."
        )
    src = (torch.arange(ids.shape[1]) + first.clamp_max(ids.shape[1] - 1).unsqueeze(1))  # (b, t)
    src = src.clamp_max(ids.shape[1] - 1)
    inside = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (b, t)
    out: dict[str, torch.Tensor] = {}
    for key, value in batch.items():
        v = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
        if v.ndim == 2 and tuple(v.shape) == tuple(ids.shape):
            moved = torch.gather(v, 1, src.to(v.device))
            out[key] = torch.where(inside.to(v.device), moved, torch.zeros_like(moved))
        else:
            out[key] = value
    out["attention_mask"] = inside.to(ids.dtype).to(ids.device)
    return out


def iter_batch_chunks(model: nn.Module, batches: Sequence[Mapping[str, Any]], *,
                      layers: Sequence[str], pooling: Pooling = "none", dtype: str = "float32",
                      device: str | torch.device = "cpu", start: int = 0,
                      selection: TokenSelection | None = None,
                      specials: Iterable[int] = (), predictor: Any = None) -> Iterator[Chunk]:
    """Capture from ready-made batches (dicts with ``input_ids`` and ``attention_mask``, any
    padding side): one chunk per batch, sequences numbered as documents across batches.

    Batches are re-padded on the right (:func:`right_pad`), so ``position`` counts from the
    first real token. ``specials``: token ids flagged (and excludable) as special tokens.
    ``predictor``: per-token prediction columns (:mod:`repscope.capture.predictions`).
    """
    if predictor is not None and pooling != "none":
        raise ValueError("Predictions are per token: they need pooling='none'.")
    selection = selection or TokenSelection()
    modules = layer_modules(model, layers)
    special_ids = np.fromiter((int(s) for s in specials), dtype=np.int64)
    first_doc = 0
    for index, raw in enumerate(batches):
        batch = right_pad(raw)
        ids = batch["input_ids"]
        b, t = ids.shape
        if index >= start:
            check_max_length(model, t, "iter_batch_chunks (a batch's sequence length)")
            mask = batch["attention_mask"].to(torch.bool).cpu().numpy()  # (b, t)
            ids_np = ids.cpu().numpy()
            pos = np.broadcast_to(np.arange(t), (b, t))
            special = np.isin(ids_np, special_ids)
            select = mask & selection.keep(pos, special)
            seq, col = np.nonzero(select)
            meta = {"doc_id": (first_doc + seq).astype(np.int64), "position": col,
                    "token_id": ids_np[select], "doc_position": col,
                    "char_start": np.full(seq.shape[0], -1), "char_end": np.full(seq.shape[0], -1),
                    "window": np.zeros(seq.shape[0]), "special": special[select]}
            meta = {k: np.asarray(v).astype(TOKEN_COLUMNS[k]) for k, v in meta.items()}
            inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                      for k, v in batch.items()}
            ps = Pass(inputs, select, np.arange(b), meta)
            acts, meta, n_tokens, counts = run_passes(
                [(ps, f"batch {index} (sequences {first_doc}..{first_doc + b - 1})")], model,
                modules, pooling, b, dtype, predictor)
            if pooling != "none":
                meta = {"doc_id": np.arange(first_doc, first_doc + b, dtype=np.int64)}
            yield Chunk(index=index, acts=acts, meta=meta, n_tokens=n_tokens,
                        pooled=counts if pooling != "none" else None)
        first_doc += b
