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

__all__ = ["attention_output_modules", "next_token_stats", "pseudo_log_likelihood"]


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
