"""Hidden states of the bundled language models on seeded windows of a bundled corpus.

One forward pass per batch with ``output_hidden_states``; what the claims need is kept per
layer (never the whole (layers, n, T, d) tensor): the mean over positions 1..T-1, the last
position, a seeded sample of token rows with their positions, and per-position maxima of
|activation| with the coordinate where they occur. Models and views are cached in-process, so
claims sharing a model load it once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["LMViews", "corpus_windows", "lm_views", "load"]


@functools.lru_cache(maxsize=2)
def load(name: str):
    """``(model, tokenizer, model_id)`` of a bundled model, loaded once per process."""
    from repscope.data.models import load_model

    model, tok, model_id, _ = load_model(name)
    return model, tok, model_id


@functools.lru_cache(maxsize=4)
def corpus_windows(model: str, corpus: str, n: int, length: int, seed: int) -> np.ndarray:
    """``(n, length)`` token ids: non-overlapping windows of the corpus's documents, drawn
    without replacement with ``seed`` (no special tokens added)."""
    from repscope.data.corpus import load_corpus

    _, tok, _ = load(model)
    windows = []
    for doc in load_corpus(corpus).documents:
        ids = tok(doc, add_special_tokens=False).input_ids
        windows.extend(ids[i:i + length] for i in range(0, len(ids) - length + 1, length))
    if len(windows) < n:
        raise ValueError(f"corpus {corpus!r} has {len(windows)} windows of {length} tokens; "
                         f"{n} were asked for.")
    pick = np.sort(np.random.default_rng(seed).choice(len(windows), size=n, replace=False))
    return np.array([windows[i] for i in pick], dtype=np.int64)


@dataclass(frozen=True)
class LMViews:
    """Per-layer views of hidden states (layer 0 = embeddings)."""

    model_id: str
    layer_names: tuple[str, ...]
    mean_rest: np.ndarray
    "(L, n, d): mean over positions 1..T-1 (first position excluded)."
    mean_skip2: np.ndarray
    "(L, n, d): mean over positions 2..T-1 (first two positions excluded)."
    mean_all: np.ndarray
    "(L, n, d): mean over all positions."
    last: np.ndarray
    "(L, n, d): the last position."
    tokens: np.ndarray
    "(L, m, d): a seeded sample of token rows (every position eligible)."
    positions: np.ndarray
    "(m,): position of each sampled token row."
    max_abs: np.ndarray
    "(L, T): largest |activation| at each position over the windows."
    argmax_coord: np.ndarray
    "(L, T): the coordinate where that maximum occurs."


@functools.lru_cache(maxsize=4)
def lm_views(model_name: str, corpus: str, n: int, length: int, m_tokens: int, seed: int,
             batch_size: int = 32) -> LMViews:
    import torch

    model, _, model_id = load(model_name)
    ids = corpus_windows(model_name, corpus, n, length, seed)  # (n, T)
    rng = np.random.default_rng(seed + 1)
    flat = np.sort(rng.choice(n * length, size=min(m_tokens, n * length), replace=False))
    rows_seq, rows_pos = flat // length, flat % length
    parts: dict[str, list[np.ndarray]] = {"mean_rest": [], "mean_skip2": [], "mean_all": [],
                                          "last": [], "tok": []}
    max_abs = argmax = None
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = torch.from_numpy(ids[start:start + batch_size])
            out = model(input_ids=batch, attention_mask=torch.ones_like(batch),
                        output_hidden_states=True)
            H = torch.stack(out.hidden_states).float()  # (L, b, T, d)
            parts["mean_rest"].append(H[:, :, 1:].mean(2).numpy())
            parts["mean_skip2"].append(H[:, :, 2:].mean(2).numpy())
            parts["mean_all"].append(H.mean(2).numpy())
            parts["last"].append(H[:, :, -1].numpy())
            sel = (rows_seq >= start) & (rows_seq < start + batch.shape[0])
            parts["tok"].append(H[:, rows_seq[sel] - start, rows_pos[sel]].numpy())
            a = H.abs().amax(1)  # (L, T, d) over the batch
            mx, arg = a.max(-1)  # (L, T)
            if max_abs is None:
                max_abs, argmax = mx, arg
            else:
                better = mx > max_abs
                max_abs = torch.where(better, mx, max_abs)
                argmax = torch.where(better, arg, argmax)
    n_layers = len(parts["last"][0])
    names = ("embeddings",) + tuple(f"block {i}" for i in range(n_layers - 2)) + (f"block {n_layers - 2} + final norm",)
    if getattr(model.config, "model_type", "") not in ("llama", "mistral", "qwen2"):
        names = ("embeddings",) + tuple(f"block {i}" for i in range(n_layers - 1))
    return LMViews(model_id, names,
                   np.concatenate(parts["mean_rest"], 1), np.concatenate(parts["mean_skip2"], 1),
                   np.concatenate(parts["mean_all"], 1),
                   np.concatenate(parts["last"], 1), np.concatenate(parts["tok"], 1), rows_pos,
                   max_abs.numpy(), argmax.numpy())
