"""Hugging Face adapter: tokenise documents, run the model in fixed batches, keep the rows.

The row order is fixed by the inputs alone. Documents are tokenised in full and cut into
sequences (:mod:`repscope.capture.tokens`: truncated, or overlapping windows); whole documents
are packed into *chunks* of ``batch_size`` sequences (``batch_size`` documents when each is one
sequence), each run in forward passes of at most ``batch_size`` sequences, padded **on the
right** to the longest: real tokens then sit at positions ``0 .. L-1`` whatever the
tokenizer's padding side, which keeps absolute position embeddings (BERT, GPT-2) and causal
masks exactly as for the document run alone. A chunk holds either every selected token
(``pooling="none"``: document by document, window by window, position ascending) or one pooled
row per document. Per-row metadata: see :data:`TOKEN_COLUMNS` and :data:`POOLED_COLUMNS`.

Layer naming follows ``model.named_modules()``; ``"final_norm"`` names the model's final
normalisation (:func:`final_norm`). For BERT-style models the default layers are
``embeddings`` (``hidden_states[0]`` of ``output_hidden_states=True``) and every block
``encoder.layer.i`` (``hidden_states[i + 1]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from repscope._names import natural_key
from repscope.capture.hooks import capture
from repscope.capture.pooling import DocumentPool, Pooling
from repscope.capture.tokens import (
    DocumentTokens,
    Segment,
    Template,
    Tokenization,
    TokenSelection,
    chunk_plan,
    plan_documents,
    segments,
    template,
    tokenize_documents,
)

__all__ = [
    "FINAL_NORM",
    "POOLED_COLUMNS",
    "TOKEN_COLUMNS",
    "Chunk",
    "block_layers",
    "check_max_length",
    "default_layers",
    "final_norm",
    "is_causal",
    "iter_chunks",
    "layer_modules",
    "position_limit",
    "probe_causal",
    "to_storage",
]

#: per-row metadata of token-level stores
TOKEN_COLUMNS: dict[str, str] = {
    "doc_id": "int64", "position": "int32", "token_id": "int32", "doc_position": "int32",
    "char_start": "int32", "char_end": "int32", "window": "int32", "special": "bool",
}
#: per-row metadata of pooled stores (one row per document; its token counts are in
#: ``ActivationStore.document_tokens()``)
POOLED_COLUMNS: dict[str, str] = {"doc_id": "int64"}
FINAL_NORM = "final_norm"
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm", "norm_f")


@dataclass(frozen=True)
class Chunk:
    """The rows of one chunk of documents."""

    index: int
    """Chunk number (0, 1, ...), the writer's chunk number."""
    acts: dict[str, np.ndarray]
    """Layer -> ``(rows, d)`` array in the storage dtype (bfloat16 as uint16 bits)."""
    meta: dict[str, np.ndarray]
    """Metadata columns (:data:`TOKEN_COLUMNS` or :data:`POOLED_COLUMNS`), one entry per row."""
    n_tokens: int
    """Real (non-padding) tokens run through the model for this chunk."""
    pooled: np.ndarray | None = None
    """Pooled stores: tokens pooled per document of the chunk."""


# -- layers -----------------------------------------------------------------------------------


def block_layers(model: nn.Module) -> list[str]:
    """Names of the model's blocks: the children of its longest ``nn.ModuleList`` whose
    members all share one class (``encoder.layer.0``..., ``h.0``..., ``layers.0``...)."""
    prefix = _block_list(model)
    if prefix is None:
        return []
    n = len(dict(model.named_modules())[prefix])
    dot = f"{prefix}." if prefix else ""
    return sorted((f"{dot}{i}" for i in range(n)), key=natural_key)


def _block_list(model: nn.Module) -> str | None:
    best: tuple[int, str | None] = (0, None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > best[0]:
            if len({type(m) for m in mod}) == 1:
                best = (len(mod), name)
    return best[1]


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


def final_norm(model: nn.Module) -> str:
    """Module name of the normalisation applied after the last block (pre-norm models:
    ``model.norm`` for Llama, ``transformer.ln_f`` for GPT-2). Its output is
    ``hidden_states[-1]`` of ``output_hidden_states=True``; the last block's output is not."""
    blocks = _block_list(model)
    parent = blocks.rpartition(".")[0] if blocks else ""
    modules = dict(model.named_modules())
    for short in _NORM_NAMES:
        name = f"{parent}.{short}" if parent else short
        if name in modules and name != blocks:
            return name
    raise ValueError(
        f"{type(model).__name__} has no final norm after its blocks (looked for "
        f"{[f'{parent}.{n}' if parent else n for n in _NORM_NAMES[:3]]}, ...): a post-norm model "
        f"such as BERT normalises inside each block, so its last block's output is final."
    )


def layer_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """Layer name -> module name (``"final_norm"`` -> the final norm, others unchanged)."""
    return {name: final_norm(model) if name == FINAL_NORM else name for name in layers}


# -- checks -----------------------------------------------------------------------------------


def position_limit(model: nn.Module) -> int | None:
    """Longest sequence the model can take: its learned position table's size (less RoBERTa's
    padding offset), else ``config.max_position_embeddings`` (rotary models: the trained
    context), else ``None`` (no known limit)."""
    for name, mod in model.named_modules():
        short = name.rpartition(".")[2]
        if isinstance(mod, nn.Embedding) and short in ("position_embeddings", "wpe",
                                                       "embed_positions"):
            pad = mod.padding_idx
            offset = int(getattr(mod, "offset", 0) or 0)
            return int(mod.num_embeddings) - (pad + 1 if pad is not None else 0) - offset
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_max_length(model: nn.Module, max_length: int, fn: str = "CaptureConfig") -> None:
    """Raise a one-line ``ValueError`` if ``max_length`` exceeds the model's position limit."""
    limit = position_limit(model)
    if limit is not None and max_length > limit:
        raise ValueError(
            f"The 'max_length' parameter of {fn} must be at most {limit}, the position limit of "
            f"{type(model).__name__}. Got {max_length} instead."
        )


def is_causal(model: nn.Module, module: str, tpl: Template, content: Sequence[int],
              device: str | torch.device = "cpu") -> bool:
    """Whether ``module``'s output at a token ignores later tokens (a causal model): two
    sequences differing only in their last content token, compared at the first one."""
    if len(content) < 2:
        content = list(content) * 2 or [0, 0]
    a = list(tpl.prefix) + list(content[:4]) + list(tpl.suffix)
    b = list(a)
    last = len(tpl.prefix) + len(content[:4]) - 1
    b[last] = a[last - 1] if a[last - 1] != a[last] else (a[last] + 1)
    ids = torch.tensor([a, b], device=device)
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if tpl.type_ids:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    acts = _forward(model, {module: module}, inputs, "the causality probe")
    h = acts[module][:, len(tpl.prefix)]  # (2, d)
    return bool(torch.allclose(h[0], h[1], rtol=1e-4, atol=1e-5))


def probe_causal(model: nn.Module, tokenizer: Any, documents: Sequence[str],
                 layers: Sequence[str], device: str | torch.device = "cpu") -> bool:
    """:func:`is_causal` at the deepest of ``layers``, on the first words of ``documents[0]``."""
    tpl = template(tokenizer)
    probe = tokenize_documents(tokenizer, tpl, [documents[0][:200]])[0]
    content = probe.input_ids[probe.n_prefix:probe.n_prefix + probe.n_content]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    deepest = max(layer_modules(model, layers).values(), key=order.__getitem__)
    return is_causal(model, deepest, tpl, content.tolist(), device)


# -- conversion -------------------------------------------------------------------------------


def to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """Convert a tensor to a numpy array in a storage dtype (bfloat16 -> its uint16 bits).

    The array is a numpy-owned copy: a view would keep the tensor's storage, allocated by
    torch in the middle of the forward pass's temporaries, alive while the writer holds the
    rows, and small long-lived blocks there fragment the heap (pooled captures grew by about
    40x the size of their rows; ``benchmarks/capture.md``)."""
    if dtype == "float32":
        t = t.to(torch.float32)
    elif dtype == "float16":
        t = t.to(torch.float16)
    elif dtype == "bfloat16":
        t = t.to(torch.bfloat16).view(torch.int16)
    else:
        raise ValueError(
            f"The 'dtype' parameter of to_storage must be one of {{'float32', 'float16', "
            f"'bfloat16'}}. Got {dtype!r} instead."
        )
    out = np.array(t.detach().cpu().numpy(), copy=True, order="C")  # (rows, d), numpy-owned
    return out.view(np.uint16) if dtype == "bfloat16" else out


def tokenize(tokenizer: Any, docs: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise one batch the plain way: pad to its longest document **on the right**, truncate
    at ``max_length`` (the reference the capture path is tested against)."""
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs ship without a pad token
    return dict(tokenizer(list(docs), padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt", padding_side="right"))


# -- forward passes ---------------------------------------------------------------------------


def _forward(model: nn.Module, modules: Mapping[str, str], inputs: Mapping[str, torch.Tensor],
             where: str, output: list[Any] | None = None) -> dict[str, torch.Tensor]:
    """One forward pass; layer name -> ``(b, t, d)`` output of its module. With ``output`` (a
    list), the pass runs to the end and the model's output is appended to it (predictions)."""
    wanted = list(dict.fromkeys(modules.values()))
    try:
        with capture(model, wanted, stop_after_last=output is None) as acts:
            result = model(**inputs)
            if output is not None:
                output.append(result)
    except Exception as exc:
        raise RuntimeError(
            f"The forward pass of {type(model).__name__} failed on {where}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    missing = [m for m in wanted if m not in acts]
    if missing:
        raise RuntimeError(f"Layers {missing} did not run in the forward pass of "
                           f"{type(model).__name__}.")
    shape = tuple(inputs["input_ids"].shape)
    out = {}
    for name, module in modules.items():
        hidden = acts[module]
        if hidden.ndim != 3 or tuple(hidden.shape[:2]) != shape:
            raise ValueError(
                f"Layer {name!r} produced shape {tuple(hidden.shape)}; expected "
                f"(batch, seq, d) = ({shape[0]}, {shape[1]}, d)."
            )
        out[name] = hidden
    return out


@dataclass
class Pass:
    """One forward pass: right-padded inputs and, per sequence, what its tokens are."""

    inputs: dict[str, torch.Tensor]
    select: np.ndarray  # (b, t) bool: tokens giving rows
    doc: np.ndarray  # (b,) local document index
    meta: dict[str, np.ndarray]  # token columns of the selected tokens, row-major


def _make_pass(seqs: list[tuple[Segment, Tokenization, int]], tpl: Template, pad_id: int,
               selection: TokenSelection, first_doc: int, device: Any) -> Pass:
    b, t = len(seqs), max(sg.index.shape[0] for sg, _, _ in seqs)
    ids = np.full((b, t), pad_id, dtype=np.int64)  # (b, t)
    mask = np.zeros((b, t), dtype=np.int64)
    types = np.zeros((b, t), dtype=np.int64)
    select = np.zeros((b, t), dtype=bool)
    doc = np.zeros(b, dtype=np.int64)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in TOKEN_COLUMNS}
    for i, (sg, tok, local) in enumerate(seqs):
        n = sg.index.shape[0]
        ids[i, :n] = tok.input_ids[sg.index]
        mask[i, :n] = 1
        types[i, :n] = tok.token_type_ids[sg.index]
        pos = np.arange(n)
        special = tok.special[sg.index]
        sel = sg.keep & selection.keep(pos, special)  # (n,)
        select[i, :n] = sel
        doc[i] = local
        k = int(sel.sum())
        cols["doc_id"].append(np.full(k, first_doc + local, dtype=np.int64))
        cols["position"].append(pos[sel])
        cols["token_id"].append(ids[i, :n][sel])
        cols["doc_position"].append(sg.index[sel])
        cols["char_start"].append(tok.spans[sg.index[sel], 0])
        cols["char_end"].append(tok.spans[sg.index[sel], 1])
        cols["window"].append(np.full(k, sg.window))
        cols["special"].append(special[sel])
    inputs = {"input_ids": torch.from_numpy(ids).to(device),
              "attention_mask": torch.from_numpy(mask).to(device)}
    if tpl.type_ids:
        inputs["token_type_ids"] = torch.from_numpy(types).to(device)
    meta = {k: np.concatenate(v).astype(TOKEN_COLUMNS[k]) for k, v in cols.items()}
    return Pass(inputs, select, doc, meta)


def run_passes(passes: Iterable[tuple[Pass, str]], model: nn.Module,
               modules: Mapping[str, str], pooling: Pooling, n_docs: int, dtype: str,
               predictor: Any = None,
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, np.ndarray]:
    """Run the passes of one chunk (package-internal; also used by
    :mod:`repscope.capture.batches`): (layer rows, token metadata, real tokens, pooled counts).
    ``predictor`` (:class:`repscope.capture.predictions.Predictor`, token-level rows only) adds
    its per-token columns to the metadata, computed on the same padded inputs."""
    token_parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    meta_parts: list[dict[str, np.ndarray]] = []
    pooled = DocumentPool(pooling, n_docs) if pooling != "none" else None
    n_tokens = 0
    for ps, where in passes:
        out: list[Any] | None = [] if predictor is not None and predictor.full_forward else None
        hidden = _forward(model, modules, ps.inputs, where, out)
        n_tokens += int(ps.inputs["attention_mask"].sum())
        select = torch.from_numpy(ps.select).to(ps.inputs["input_ids"].device)
        if pooled is not None:
            pooled.add(hidden, select, ps.doc)
        else:
            for name, h in hidden.items():
                token_parts[name].append(h[select])  # (rows, d), row-major
            meta = dict(ps.meta)
            if predictor is not None:
                with torch.inference_mode():
                    cols = predictor(model, ps.inputs, out[0] if out else None)
                sel = torch.from_numpy(ps.select)
                meta.update({k: v[sel].numpy().astype(predictor.columns[k]) for k, v in cols.items()})
            meta_parts.append(meta)
        del hidden, out
    if pooled is not None:
        acts = {name: to_storage(pooled.result(name), dtype) for name in modules}
        return acts, {}, n_tokens, pooled.counts
    acts = {name: to_storage(torch.cat(parts) if len(parts) > 1 else parts[0], dtype)
            for name, parts in token_parts.items()}
    meta = {k: np.concatenate([m[k] for m in meta_parts]) for k in meta_parts[0]}
    return acts, meta, n_tokens, np.zeros(0, np.int64)


def iter_chunks(model: nn.Module, tokenizer: Any, documents: Sequence[str], *,
                layers: Sequence[str], pooling: Pooling = "none", dtype: str = "float32",
                batch_size: int = 32, max_length: int = 128, device: str | torch.device = "cpu",
                start: int = 0, long_documents: str = "truncate", overlap: int = 0,
                selection: TokenSelection | None = None, causal: bool | None = None,
                plan: DocumentTokens | None = None, predictor: Any = None) -> Iterator[Chunk]:
    """Run the model over ``documents`` and yield one :class:`Chunk` per chunk of documents.

    ``start`` skips the first ``start`` chunks (resuming a capture). ``long_documents``,
    ``overlap``: see :mod:`repscope.capture.tokens`; ``causal`` (which window keeps a shared
    token) is probed on the model when ``None`` and windows overlap. ``plan``: the documents'
    :class:`DocumentTokens` if already computed. The model runs in eval mode (restored after
    each pass) and each pass stops after the last requested layer. ``max_length`` above the
    model's position limit raises ``ValueError`` before the first pass; a failing forward pass
    raises ``RuntimeError`` naming the chunk and its documents. ``predictor``: per-token
    prediction columns (:mod:`repscope.capture.predictions`), token-level rows only.
    """
    if predictor is not None and pooling != "none":
        raise ValueError("Predictions are per token: they need pooling='none'.")
    selection = selection or TokenSelection()
    check_max_length(model, max_length, "iter_chunks")
    tpl = template(tokenizer)
    modules = layer_modules(model, layers)
    if causal is None:
        causal = True
        if long_documents == "window" and overlap > 0 and len(documents):
            causal = probe_causal(model, tokenizer, documents, layers, device)
    if plan is None:
        plan = plan_documents(tokenizer, tpl, documents, max_length=max_length,
                              mode=long_documents, overlap=overlap, selection=selection,
                              causal=causal)
    pad_id = _pad_id(tokenizer)
    for index, (lo, hi) in enumerate(chunk_plan(plan.n_windows, batch_size)):
        if index < start:
            continue
        seqs = []
        for local, tok in enumerate(tokenize_documents(tokenizer, tpl, documents[lo:hi])):
            for sg in segments(tok, lo + local, max_length=max_length, mode=long_documents,
                               overlap=overlap, causal=causal):
                seqs.append((sg, tok, local))
        n_pass = -(-len(seqs) // batch_size)

        def passes(seqs=seqs, n_pass=n_pass, index=index, lo=lo, hi=hi):
            for p in range(n_pass):
                part = seqs[p * batch_size:(p + 1) * batch_size]
                where = f"batch {index} (documents {lo}..{hi - 1})" + (
                    f", pass {p + 1} of {n_pass}" if n_pass > 1 else "")
                yield _make_pass(part, tpl, pad_id, selection, lo, device), where

        acts, meta, n_tokens, counts = run_passes(passes(), model, modules, pooling, hi - lo, dtype,
                                                  predictor)
        if pooling != "none":
            meta = {"doc_id": np.arange(lo, hi, dtype=np.int64)}
        yield Chunk(index=index, acts=acts, meta=meta, n_tokens=n_tokens,
                    pooled=counts if pooling != "none" else None)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0
