"""Hugging Face adapter: tokenise documents in fixed batches, capture layers, pool into rows.

The row order is fixed by the inputs alone: documents in order, batches of ``batch_size``
documents, each padded to its longest member (truncated at ``max_length`` tokens), and within a
batch either every real token (``pooling="none"``: sequence by sequence, position ascending) or
one pooled row per document. Per-row metadata: ``doc_id`` (index into the document list),
``position`` (token index in the tokenised sequence) and ``token_id``.

Layer naming follows ``model.named_modules()``. For BERT-style models the default layers are
``embeddings`` (whose output is ``hidden_states[0]`` of ``output_hidden_states=True``) and every
block ``encoder.layer.i`` (``hidden_states[i + 1]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from repscope.capture.hooks import capture, natural_key
from repscope.capture.pooling import Pooling, pool

__all__ = ["Chunk", "block_layers", "default_layers", "iter_chunks", "to_storage"]


@dataclass(frozen=True)
class Chunk:
    """The rows of one batch of documents."""

    index: int
    """Batch number (0, 1, ...), the writer's chunk number."""
    acts: dict[str, np.ndarray]
    """Layer -> ``(rows, d)`` array in the storage dtype (bfloat16 as uint16 bits)."""
    meta: dict[str, np.ndarray]
    """``doc_id`` (+ ``position``, ``token_id`` for token-level rows), one entry per row."""
    n_tokens: int
    """Real (non-padding) tokens in the batch."""


def block_layers(model: nn.Module) -> list[str]:
    """Names of the model's blocks: the children of its longest ``nn.ModuleList`` whose
    members all share one class (``encoder.layer.0``..., ``h.0``..., ``layers.0``...)."""
    best: tuple[int, str] = (0, "")
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > best[0]:
            if len({type(m) for m in mod}) == 1:
                best = (len(mod), name)
    if not best[0]:
        return []
    prefix = f"{best[1]}." if best[1] else ""
    return sorted((f"{prefix}{i}" for i in range(best[0])), key=natural_key)


def default_layers(model: nn.Module) -> list[str]:
    """The embedding layer plus every block.

    The embedding layer is the module named ``embeddings`` (BERT family: word + position +
    type embeddings and LayerNorm) when there is one, else the input-embedding module.
    """
    names = dict(model.named_modules())
    emb = [n for n in names if n == "embeddings" or n.endswith(".embeddings")]
    if not emb and hasattr(model, "get_input_embeddings"):
        target = model.get_input_embeddings()
        emb = [n for n, m in names.items() if m is target]
    blocks = block_layers(model)
    if not blocks:
        raise ValueError(
            f"Cannot find the blocks of {type(model).__name__} (no nn.ModuleList of blocks); "
            f"name the layers explicitly, e.g. layers=('encoder.layer.*',)."
        )
    return emb[:1] + blocks


def to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """Convert a tensor to a numpy array in a storage dtype (bfloat16 -> its uint16 bits)."""
    if dtype == "float32":
        return t.to(torch.float32).cpu().numpy()
    if dtype == "float16":
        return t.to(torch.float16).cpu().numpy()
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    raise ValueError(
        f"The 'dtype' parameter of to_storage must be one of {{'float32', 'float16', "
        f"'bfloat16'}}. Got {dtype!r} instead."
    )


def tokenize(tokenizer: Any, docs: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise one batch: pad to its longest document, truncate at ``max_length``."""
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs ship without a pad token
    return dict(tokenizer(list(docs), padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt"))


def iter_chunks(model: nn.Module, tokenizer: Any, documents: Sequence[str], *,
                layers: Sequence[str], pooling: Pooling = "none", dtype: str = "float32",
                batch_size: int = 32, max_length: int = 128, device: str | torch.device = "cpu",
                start: int = 0) -> Iterator[Chunk]:
    """Run the model over ``documents`` in fixed batches and yield one :class:`Chunk` each.

    ``start`` skips the first ``start`` batches (resuming a capture). The forward pass stops
    after the last requested layer. A failing forward pass raises ``RuntimeError`` naming
    the batch and its documents.
    """
    n_batches = -(-len(documents) // batch_size)
    for b in range(start, n_batches):
        lo, hi = b * batch_size, min((b + 1) * batch_size, len(documents))
        enc = {k: v.to(device) for k, v in tokenize(tokenizer, documents[lo:hi], max_length).items()}
        mask = enc["attention_mask"]  # (batch, seq)
        try:
            with capture(model, layers, stop_after_last=True) as acts:
                model(**enc)
        except Exception as exc:
            raise RuntimeError(
                f"The forward pass of {type(model).__name__} failed on batch {b} (documents "
                f"{lo}..{hi - 1}): {type(exc).__name__}: {exc}"
            ) from exc
        missing = [name for name in layers if name not in acts]
        if missing:
            raise RuntimeError(f"Layers {missing} did not run in the forward pass of "
                               f"{type(model).__name__}.")
        out = {}
        for name in layers:
            hidden = acts[name]
            if hidden.ndim != 3 or hidden.shape[:2] != mask.shape:
                raise ValueError(
                    f"Layer {name!r} produced shape {tuple(hidden.shape)}; expected "
                    f"(batch, seq, d) = ({mask.shape[0]}, {mask.shape[1]}, d)."
                )
            out[name] = to_storage(pool(hidden, mask, pooling), dtype)
        yield Chunk(index=b, acts=out, meta=_meta(enc, mask, pooling, lo),
                    n_tokens=int(mask.sum()))


def _meta(enc: dict[str, torch.Tensor], mask: torch.Tensor, pooling: str,
          first_doc: int) -> dict[str, np.ndarray]:
    if pooling != "none":
        return {"doc_id": np.arange(first_doc, first_doc + mask.shape[0], dtype=np.int64)}
    keep = mask.to(torch.bool).cpu()
    seq, position = keep.nonzero(as_tuple=True)  # row-major: same order as hidden[keep]
    return {
        "doc_id": (seq + first_doc).numpy().astype(np.int64),
        "position": position.numpy().astype(np.int32),
        "token_id": enc["input_ids"].cpu()[keep].numpy().astype(np.int32),
    }
