"""What the model predicts at each token, stored next to its activations.

**Causal LMs** (:func:`next_token_stats`). The row of token ``t`` carries

- ``next_logprob`` = ``log p(token_{t+1} | tokens <= t)``: the log-likelihood of the *next*
  token under the distribution the model computes *at* ``t``, i.e. from the representations
  stored on that row. This is the convention that relates a representation to what the model
  predicts from it (a row's surprisal is ``-next_logprob``); the last real token of a document
  has no next token in the captured sequence and gets NaN (also when the document was
  truncated at ``max_length``: the token after the cut is not part of the captured input);
- ``entropy`` = ``H(p(. | tokens <= t)) = -sum_v p_v log p_v`` in nats, defined on every real
  token, the last one included.

Both are computed in float64 from the model's logits (``log_softmax``), so ``-next_logprob``
equals ``torch.nn.functional.cross_entropy(logits[t], token_{t+1})`` of the same forward pass.

**Masked LMs** (:func:`pseudo_log_likelihood`). The pseudo-log-likelihood (Salazar et al. 2020,
"Masked language model scoring") of token ``t`` is ``log p(token_t | all other tokens)``, read
at ``t`` with ``t`` replaced by the mask token: it costs one forward pass per token (``n``
forwards for an ``n``-token document, batched), so it is opt-in. Convention: the row of token
``t`` carries the PLL of token ``t`` itself (there is no "next" token in a bidirectional model);
special tokens ([CLS], [SEP], padding) get NaN. A checkpoint without a masked-LM head (the
bundled MiniLM is a sentence encoder) has no such distribution: it is refused with a message.

:func:`attention_output_modules` names, per block, the module whose output is the attention
sub-layer's contribution before it is added to the residual stream (see its docstring).
"""

from __future__ import annotations

import re
from typing import Any

import torch

__all__ = ["COLUMNS", "PREDICTIONS", "Predictor", "attention_output_modules", "make_predictor",
           "next_token_stats", "pseudo_log_likelihood"]


def next_token_stats(logits: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(next_logprob, entropy)``, each ``(b, t)`` float64 (NaN on padding; ``next_logprob``
    also NaN where the next position is padding or past the end). Each row's real tokens must
    be contiguous (left or right padding), so the next token of position ``t`` is at ``t + 1``."""
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape or attention_mask.shape != input_ids.shape:
        raise ValueError(f"next_token_stats expects logits (b, t, V) with input_ids and attention_mask "
                         f"(b, t); got {tuple(logits.shape)}, {tuple(input_ids.shape)}, "
                         f"{tuple(attention_mask.shape)}.")
    real = attention_mask.bool()
    logp = torch.log_softmax(logits.double(), dim=-1)  # (b, t, V)
    entropy = -(logp.exp() * logp).sum(-1)  # (b, t)
    entropy = torch.where(real, entropy, torch.nan)
    nxt = torch.full(input_ids.shape, float("nan"), dtype=torch.float64, device=logits.device)
    has_next = real[:, :-1] & real[:, 1:]  # (b, t-1): a real token followed by a real token
    lp = logp[:, :-1].gather(-1, input_ids[:, 1:, None].to(logits.device))[..., 0]  # (b, t-1)
    nxt[:, :-1] = torch.where(has_next, lp, torch.nan)
    return nxt, entropy


@torch.no_grad()
def pseudo_log_likelihood(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                          mask_token_id: int, special_ids: Any = (), batch_size: int = 64) -> torch.Tensor:
    """``(b, t)`` float64: ``log p(token_t | others)`` with ``t`` masked, for every real,
    non-special token (NaN elsewhere). ``model(input_ids=, attention_mask=)`` must return
    ``.logits`` over the vocabulary (a masked-LM head). One forward per scored token, in
    batches of ``batch_size`` masked copies."""
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise ValueError(f"pseudo_log_likelihood needs a masked-LM head; {type(model).__name__} has "
                         f"none (a sentence encoder such as the bundled MiniLM cannot score tokens).")
    dev = next(model.parameters()).device
    ids, am = input_ids.to(dev), attention_mask.to(dev)
    score = am.bool() & ~torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype, device=dev))
    out = torch.full(ids.shape, float("nan"), dtype=torch.float64)
    seq, pos = score.nonzero(as_tuple=True)
    for s in range(0, seq.numel(), batch_size):
        sq, ps = seq[s:s + batch_size], pos[s:s + batch_size]
        batch = ids[sq].clone()  # (m, t) one masked copy per scored token
        batch[torch.arange(sq.numel(), device=dev), ps] = mask_token_id
        logits = model(input_ids=batch, attention_mask=am[sq]).logits  # (m, t, V)
        logp = torch.log_softmax(logits[torch.arange(sq.numel(), device=dev), ps].double(), -1)  # (m, V)
        out[sq.cpu(), ps.cpu()] = logp.gather(-1, ids[sq, ps][:, None])[:, 0].cpu()
    return out


_ATTENTION_OUTPUT = (
    # Llama, Mistral, Qwen, Gemma, SmolLM2: model.layers.i.self_attn returns (o_proj(attn), weights)
    (r"(^|.*\.)layers\.\d+$", "self_attn"),
    # BERT / MiniLM / RoBERTa: encoder.layer.i.attention.output.dense is the projection before
    # dropout and LayerNorm(dense + input)
    (r"(^|.*\.)layer\.\d+$", "attention.output.dense"),
    # GPT-2: h.i.attn returns (c_proj(attn), present)
    (r"(^|.*\.)h\.\d+$", "attn"),
)


def attention_output_modules(model: torch.nn.Module, blocks: list[str] | None = None) -> dict[str, str]:
    """``block name -> attention-output module name`` for every block.

    The module's output is the attention sub-layer's contribution before the residual add:
    for Llama-family models ``model.layers.i.self_attn`` (its first output is ``o_proj`` of the
    heads, before ``hidden + attn``); for BERT-family models
    ``encoder.layer.i.attention.output.dense`` (the output projection, before dropout and the
    ``LayerNorm(dense + input)``); for GPT-2 ``h.i.attn`` (``c_proj``, before the add).
    Unknown architectures raise, naming the blocks."""
    from repscope.capture.hf import block_layers

    names = dict(model.named_modules())
    blocks = blocks if blocks is not None else block_layers(model)
    out = {}
    for b in blocks:
        for pattern, suffix in _ATTENTION_OUTPUT:
            if re.fullmatch(pattern, b) and f"{b}.{suffix}" in names:
                out[b] = f"{b}.{suffix}"
                break
        else:
            raise ValueError(f"attention_output_modules: no known attention-output module in block {b!r} "
                             f"of {type(model).__name__}; name the modules yourself (e.g. '{b}.attn').")
    return out


PREDICTIONS = ("none", "next_token", "pseudo_ll")
COLUMNS = {"next_token": {"next_logprob": "float64", "entropy": "float64"},
           "pseudo_ll": {"pll": "float64"}}


class Predictor:
    """Per-token prediction columns computed during the capture's forward passes.

    ``kind="next_token"`` needs the model's full output (``.logits``; the forward pass is not
    cut after the last captured layer); ``kind="pseudo_ll"`` runs its own masked copies."""

    def __init__(self, kind: str, *, mask_token_id: int | None = None, special_ids: Any = (),
                 batch_size: int = 64) -> None:
        if kind not in COLUMNS:
            raise ValueError(f"The 'predictions' parameter must be one of {{'none', 'next_token', "
                             f"'pseudo_ll'}}. Got {kind!r} instead.")
        self.kind = kind
        self.columns = dict(COLUMNS[kind])
        self.full_forward = kind == "next_token"
        self.mask_token_id = mask_token_id
        self.special_ids = tuple(int(s) for s in special_ids)
        self.batch_size = batch_size

    def __call__(self, model: Any, inputs: dict[str, torch.Tensor], output: Any) -> dict[str, torch.Tensor]:
        """Columns as ``(b, t)`` float64 CPU tensors for the pass's padded inputs."""
        ids, am = inputs["input_ids"], inputs["attention_mask"]
        if self.kind == "next_token":
            logits = getattr(output, "logits", None)
            if logits is None:
                raise ValueError(f"predictions='next_token' needs a causal LM with its LM head; "
                                 f"{type(model).__name__} returns no logits.")
            lp, h = next_token_stats(logits, ids, am)
            return {"next_logprob": lp.cpu(), "entropy": h.cpu()}
        assert self.mask_token_id is not None
        return {"pll": pseudo_log_likelihood(model, ids, am, mask_token_id=self.mask_token_id,
                                             special_ids=self.special_ids, batch_size=self.batch_size)}


def make_predictor(kind: str, model: Any, tokenizer: Any, *, causal: bool | None = None) -> Predictor | None:
    """The :class:`Predictor` for ``kind`` (None for ``"none"``), checked against the model:
    ``next_token`` needs an LM head (``get_output_embeddings()``) on a causal model (``causal``:
    the capture's causality probe, None when not probed), ``pseudo_ll`` a masked-LM head and a
    mask token. Errors are one line naming what is missing."""
    if kind == "none":
        return None
    if kind not in COLUMNS:
        raise ValueError(f"The 'predictions' parameter of CaptureConfig must be one of "
                         f"{{'none', 'next_token', 'pseudo_ll'}}. Got {kind!r} instead.")
    head = getattr(model, "get_output_embeddings", lambda: None)()
    name = type(model).__name__
    if kind == "next_token":
        if head is None or causal is False:
            raise ValueError(f"predictions='next_token' needs a causal LM loaded with its LM head; "
                             f"{name} is not one (a masked LM can use predictions='pseudo_ll').")
        return Predictor(kind)
    mask_id = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    if head is None or mask_id is None:
        raise ValueError(f"predictions='pseudo_ll' needs a masked LM with its masked-LM head and a "
                         f"tokenizer with a mask token; {name} has "
                         f"{'no LM head' if head is None else 'no mask token'} (the bundled MiniLM "
                         f"is a sentence encoder without an MLM head: no pseudo-log-likelihood).")
    return Predictor(kind, mask_token_id=int(mask_id), special_ids=getattr(tokenizer, "all_special_ids", ()))
