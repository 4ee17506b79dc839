"""End-to-end capture: model + corpus -> ActivationStore, resumable (``repscope capture``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope.capture.store import ActivationStore

__all__ = ["CaptureConfig", "CaptureStats", "run_capture", "select_documents"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture and where to store it; also the options of ``repscope capture``."""

    model: str = field(default="minilm", metadata={
        "help": "'minilm' or 'smollm2' (bundled), a local Hugging Face directory, a .gguf file "
                "(converted once, cached), or a hub id already in the local cache (never "
                "downloaded)."})
    corpus: str = field(default="pydoc", metadata={
        "help": "'pydoc' (Python's bundled documentation topics) or a .txt/.jsonl file."})
    layers: tuple[str, ...] = field(default=(), metadata={
        "help": "Module names or globs, e.g. 'encoder.layer.*' (repeatable); "
                "empty = the embeddings plus every block."})
    pooling: Literal["none", "mean", "first", "last"] = field(default="none", metadata={
        "help": "'none' = one row per real token; mean/first/last = one row per document."})
    dtype: Literal["float32", "float16", "bfloat16"] = field(default="float32", metadata={
        "help": "Storage dtype (reads always return float32)."})
    out: Path = field(default=Path("repscope-out/store"), metadata={
        "help": "Output store directory (a partial store of the same capture is resumed)."})
    batch_size: int = field(default=32, metadata={
        "help": "Sequences per forward pass (documents, or windows of long documents)."})
    max_length: int = field(default=128, metadata={
        "help": "Tokens per sequence the model sees (at most the model's position limit)."})
    long_documents: Literal["truncate", "window"] = field(default="truncate", metadata={
        "help": "Documents longer than max_length: 'truncate' (recorded per document) or "
                "'window' (overlapping windows; every token stored once)."})
    overlap: int | None = field(default=None, metadata={
        "help": "Tokens shared by consecutive windows (long_documents='window'; default: a "
                "quarter of max_length)."})
    exclude_positions: tuple[int, ...] = field(default=(), metadata={
        "help": "Sequence positions to leave out of the rows and the pooling, e.g. 0 (the "
                "first token: BOS/[CLS], an attention sink); repeatable. Padding never counts."})
    exclude_special_tokens: bool = field(default=False, metadata={
        "help": "Leave the tokenizer's special tokens ([CLS], [SEP], <s>, ...) out of the rows "
                "and the pooling (by default mean pooling includes them)."})
    max_docs: int | None = field(default=40, metadata={
        "help": "Capture a seeded random subset of this many documents (kept in corpus order); "
                "None: every document. The default (40, a quick first run) is analyze's."})
    shard_rows: int = field(default=8192, metadata={"help": "Rows per shard file."})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda."})
    seed: int = field(default=0, metadata={"help": "Seed of the max_docs document subset."})
    predictions: Literal["none", "next_token", "pseudo_ll"] = field(default="none", metadata={
        "help": "Per-token predictions stored as row columns: 'next_token' (causal LMs: "
                "next_logprob = log p(token t+1 | tokens <= t) and entropy on the row of token t) "
                "or 'pseudo_ll' (masked LMs with their MLM head: log p(token t | the others), one "
                "forward pass per token); docs/lm_geometry.md."})
    attention: bool = field(default=False, metadata={
        "help": "Also capture each block's attention output before the residual add "
                "(Llama: model.layers.i.self_attn; BERT: encoder.layer.i.attention.output.dense)."})


@dataclass(frozen=True)
class CaptureStats:
    """What one ``run_capture`` call did (the store itself is the result)."""

    tokens: int
    """Real tokens run through the model in this call (0 if the store was complete)."""
    seconds: float
    """Wall time of the capture loop."""
    resumed_from_shard: int
    """Complete shards found at the start (0 for a fresh store)."""
    documents: int = 0
    """Documents captured."""
    truncated: int = 0
    """Documents cut at ``max_length`` (``long_documents="truncate"``)."""
    tokens_cut: int = 0
    """Tokens of those documents the model never saw."""
    windowed: int = 0
    """Documents split into several windows (``long_documents="window"``)."""

    def warning(self) -> str | None:
        """A one-line warning when documents were truncated, else ``None``."""
        if not self.truncated:
            return None
        return (f"{self.truncated:,} of {self.documents:,} documents exceed max_length and were "
                f"truncated ({self.tokens_cut:,} tokens cut; per document in "
                f"store.document_tokens()); use long_documents='window' to keep every token.")


def select_documents(documents: list[str], max_docs: int | None, seed: int) -> list[str]:
    """All documents, or a seeded random subset of ``max_docs`` kept in corpus order."""
    if max_docs is None or max_docs >= len(documents):
        return list(documents)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(documents), size=max_docs, replace=False))
    return [documents[i] for i in keep]


def capture_config(source: Any, **overrides: Any) -> CaptureConfig:
    """A :class:`CaptureConfig` from the same-named fields of another config (e.g.
    ``AnalyzeConfig``), with ``overrides``; fields the source lacks keep their defaults."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(CaptureConfig)}
    values = {k: getattr(source, k) for k in names if hasattr(source, k)}
    values.pop("out", None)  # another config's output directory is not a store
    values.update(overrides)
    return CaptureConfig(**values)


def _check(cfg: CaptureConfig) -> None:
    from repscope._validate import check_choice, check_int, param_error

    fn = "CaptureConfig"
    check_choice(cfg.pooling, "pooling", fn, ("none", "mean", "first", "last"))
    check_choice(cfg.dtype, "dtype", fn, ("float32", "float16", "bfloat16"))
    check_choice(cfg.long_documents, "long_documents", fn, ("truncate", "window"))
    check_int(cfg.batch_size, "batch_size", fn, low=1)
    check_int(cfg.max_length, "max_length", fn, low=1)
    check_int(cfg.shard_rows, "shard_rows", fn, low=1)
    check_int(cfg.seed, "seed", fn, low=0)
    if cfg.max_docs is not None:
        check_int(cfg.max_docs, "max_docs", fn, low=1)
    if cfg.overlap is not None:
        check_int(cfg.overlap, "overlap", fn, low=0)
    if not isinstance(cfg.exclude_positions, tuple | list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0
            for p in cfg.exclude_positions):
        raise param_error(fn, "exclude_positions", "a tuple of ints >= 0",
                          cfg.exclude_positions)
    if not isinstance(cfg.exclude_special_tokens, bool):
        raise param_error(fn, "exclude_special_tokens", "a bool", cfg.exclude_special_tokens)
    check_choice(cfg.predictions, "predictions", fn, ("none", "next_token", "pseudo_ll"))
    if cfg.predictions != "none" and cfg.pooling != "none":
        raise param_error(fn, "predictions", "'none' with pooled rows (predictions are per token)",
                          cfg.predictions)
    if not isinstance(cfg.attention, bool):
        raise param_error(fn, "attention", "a bool", cfg.attention)


def _overlap(cfg: CaptureConfig, frame: int) -> int:
    """The window overlap in tokens, checked against the room a window leaves for content."""
    from repscope._validate import check_int

    room = cfg.max_length - frame
    if room < 1:
        raise ValueError(
            f"The 'max_length' parameter of CaptureConfig must leave room for content after "
            f"the tokenizer's {frame} special token(s). Got {cfg.max_length} instead.")
    if cfg.long_documents != "window":
        return 0
    overlap = cfg.max_length // 4 if cfg.overlap is None else cfg.overlap
    overlap = min(overlap, room - 1) if cfg.overlap is None else overlap
    check_int(overlap, "overlap", "CaptureConfig", low=0, high=room,
              high_name="max_length - special tokens")
    return overlap


def _probe_dims(model: Any, chunk: Any) -> dict[str, int]:
    """Feature count of each layer, from the rows of a forward pass over a few tokens."""
    return {name: int(a.shape[1]) for name, a in next(chunk).acts.items()}


def _weights_digest(model: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in order)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _batches_digest(batches: list[Any]) -> str:
    import hashlib

    import torch

    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, torch.Tensor | np.ndarray | list):
                arr = np.ascontiguousarray(torch.as_tensor(value).cpu().numpy())
                h.update(f"{key}:{arr.dtype}:{arr.shape}".encode())
                h.update(arr.tobytes())
    return h.hexdigest()


def run_capture(cfg: CaptureConfig, progress: bool = True, *,
                loaded: tuple[Any, Any, str, str] | None = None,
                stats: list[CaptureStats] | None = None, model: Any = None,
                tokenizer: Any = None, batches: Any = None,
                model_id: str | None = None) -> ActivationStore:
    """Capture ``cfg.layers`` of ``cfg.model`` over ``cfg.corpus`` into the store ``cfg.out``.

    Resumes a partial store of the same capture; returns a complete store at once if it is
    already complete; refuses (``StoreError``) an output directory holding anything else.
    The model runs in eval mode (its train/eval flags are restored afterwards); batches are
    padded on the right; ``max_length`` is checked against the model's position limit before
    anything is written.

    Parameters
    ----------
    cfg : CaptureConfig
        Model, corpus, layers, pooling, token selection, output directory.
    progress : bool, default True
        Show the progress bar.
    loaded : tuple, optional
        An already loaded ``(model, tokenizer, model_id, weights_hash)``, as returned by
        :func:`repscope.data.models.load_model` (skips loading ``cfg.model``).
    stats : list, optional
        If given, a :class:`CaptureStats` is appended to it.
    model, tokenizer : optional
        Any ``torch.nn.Module`` to capture instead of ``cfg.model``, with either a
        ``tokenizer`` (Hugging Face style; documents from ``cfg.corpus``) or ``batches``.
    batches : iterable of dicts, optional
        Dicts with ``input_ids`` ``(b, t)`` and ``attention_mask`` (left or right padding) and
        any other model inputs; materialised once (its hash is the store's data identity).
        Each sequence is a document (``doc_id`` counts them).
    model_id : str, optional
        The id recorded for ``model`` (default: its class); its weights hash is the sha256 of
        its state dict.

    Returns
    -------
    ActivationStore
        The complete store at ``cfg.out``.
    """
    import torch

    from repscope._io import check_output_dir
    from repscope.capture.batches import iter_batch_chunks
    from repscope.capture.hf import (
        POOLED_COLUMNS,
        TOKEN_COLUMNS,
        check_max_length,
        default_layers,
        iter_chunks,
        layer_modules,
        probe_causal,
    )
    from repscope.capture.hooks import resolve_layers
    from repscope.capture.predictions import make_predictor
    from repscope.capture.tokens import TokenSelection, plan_documents, template
    from repscope.config import config_to_dict

    _check(cfg)
    check_output_dir(cfg.out, "out", "CaptureConfig")
    if batches is not None and model is None and loaded is None:
        raise ValueError("run_capture: 'batches' needs a 'model' (an nn.Module) to run them.")
    if model is not None:
        if tokenizer is None and batches is None:
            raise ValueError("run_capture: a 'model' needs a 'tokenizer' or 'batches'.")
        loaded = (model, tokenizer, model_id or f"python:{type(model).__qualname__}",
                  _weights_digest(model))
    if loaded is None:
        from repscope.data.models import load_model

        loaded = load_model(cfg.model, device=cfg.device)
    net, tok, net_id, digest = loaded
    selection = TokenSelection(tuple(int(p) for p in cfg.exclude_positions),
                               bool(cfg.exclude_special_tokens))
    names = _layer_names(net, cfg.layers, resolve_layers, default_layers)
    if cfg.attention:
        from repscope._validate import param_error
        from repscope.capture.hf import block_layers
        from repscope.capture.predictions import attention_output_modules

        blocks = [n for n in names if n in set(block_layers(net))]
        if not blocks:
            raise param_error("CaptureConfig", "attention", "False when no transformer block is "
                              "among the captured layers", cfg.attention)
        names = _layer_names(net, [*names, *attention_output_modules(net, blocks).values()],
                             resolve_layers, default_layers)
    modules = layer_modules(net, names)
    token_level = cfg.pooling == "none"
    if batches is None:
        from repscope.data.corpus import load_corpus

        check_max_length(net, cfg.max_length)
        corpus = load_corpus(cfg.corpus)
        documents = select_documents(corpus.documents, cfg.max_docs, cfg.seed)
        tpl = template(tok)
        overlap = _overlap(cfg, tpl.frame)
        causal = True
        if cfg.long_documents == "window" and overlap:
            causal = probe_causal(net, tok, documents, names, cfg.device)
        plan = plan_documents(tok, tpl, documents, max_length=cfg.max_length,
                              mode=cfg.long_documents, overlap=overlap, selection=selection,
                              causal=causal)
        if not token_level and (plan.n_selected == 0).any():
            d = int(np.flatnonzero(plan.n_selected == 0)[0])
            raise ValueError(
                f"Document {d} has no token left to pool after the token selection "
                f"{selection.to_dict()}; it is {int(plan.n_tokens[d])} token(s) long.")
        data_id, data_hash, n_corpus = corpus.id, corpus.hash, len(corpus)
        dims = _probe_dims(net, iter_chunks(net, tok, documents[:1], layers=names,
                                            pooling="first", max_length=min(8, cfg.max_length),
                                            device=cfg.device))
        predictor = make_predictor(cfg.predictions, net, tok, causal=(
            probe_causal(net, tok, documents, names, cfg.device)
            if cfg.predictions == "next_token" else None))

        def chunks(start: int) -> Any:
            return iter_chunks(net, tok, documents, layers=names, pooling=cfg.pooling,
                               dtype=cfg.dtype, batch_size=cfg.batch_size,
                               max_length=cfg.max_length, device=cfg.device, start=start,
                               long_documents=cfg.long_documents, overlap=overlap,
                               selection=selection, plan=plan, causal=causal,
                               predictor=predictor)
        n_chunks = len(_chunk_ranges(plan, cfg.batch_size))
    else:
        batch_list = list(batches)
        if not batch_list:
            raise ValueError("run_capture: 'batches' is empty.")
        documents, plan, overlap, causal = None, None, 0, True
        data_id, data_hash, n_corpus = "batches", _batches_digest(batch_list), None
        specials = getattr(tok, "all_special_ids", []) if tok is not None else []
        predictor = make_predictor(cfg.predictions, net, tok)

        def chunks(start: int) -> Any:
            return iter_batch_chunks(net, batch_list, layers=names, pooling=cfg.pooling,
                                     dtype=cfg.dtype, device=cfg.device, start=start,
                                     selection=selection, specials=specials,
                                     predictor=predictor)
        dims = _probe_dims(net, iter_batch_chunks(net, batch_list[:1], layers=names,
                                                  pooling="first", device=cfg.device))
        n_chunks = len(batch_list)
    n_docs = len(documents) if documents is not None else None
    token_info = {"long_documents": cfg.long_documents, "max_length": cfg.max_length,
                  "overlap": overlap, "padding": "right"}
    rule = None
    if cfg.long_documents == "window":
        rule = ("earlier window (causal model)" if causal
                else "first half of the overlap from the earlier window (bidirectional model)")
    identity = {
        "model": {"id": net_id, "weights_sha256": digest},
        "data": {"id": data_id, "sha256": data_hash, "max_docs": cfg.max_docs, "seed": cfg.seed,
                 "n_documents": n_docs},
        "pooling": cfg.pooling, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
        "device_type": torch.device(cfg.device).type, "torch_version": torch.__version__,
        "tokens": token_info, "token_selection": selection.to_dict(),
    }
    if predictor is not None:  # absent otherwise: stores captured before predictions keep their identity
        identity["predictions"] = predictor.kind
    info: dict[str, Any] = {
        "model": {"id": net_id, "class": type(net).__name__, "weights_sha256": digest},
        "data": {"id": data_id, "sha256": data_hash, "n_documents": n_docs,
                 "n_corpus_documents": n_corpus, "max_docs": cfg.max_docs, "seed": cfg.seed},
        "pooling": cfg.pooling, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "config": config_to_dict(cfg), "token_selection": selection.to_dict(),
        "tokens": {**token_info, "window_rule": rule,
                   **(plan.summary() if plan is not None else {})},
        "layer_modules": modules,
        "predictions": None if predictor is None else {
            "kind": predictor.kind, "columns": list(predictor.columns),
            "convention": ("row t: log p(token t+1 | tokens <= t), NaN on a sequence's last token; "
                           "entropy of p(. | tokens <= t)") if predictor.kind == "next_token"
            else "row t: log p(token t | all other tokens), token t masked; NaN on special tokens"},
    }
    if plan is not None:
        info["document_tokens"] = plan.to_lists()
        if plan.summary()["n_truncated"]:
            log.warning("%s", _stats_of(plan, 0, 0.0, 0).warning())
    vocab = None
    if token_level and tok is not None:
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    writer = ActivationStore.create(
        cfg.out, layers=dims, dtype=cfg.dtype, shard_rows=cfg.shard_rows,
        meta_columns=({**TOKEN_COLUMNS, **(predictor.columns if predictor else {})} if token_level
                      else POOLED_COLUMNS), identity=identity,
        info=info, documents=documents, vocab=vocab)
    with writer:
        if writer.complete:
            log.info("store %s is already complete", cfg.out)
            if stats is not None:
                stats.append(_stats_of(plan, 0, 0.0, writer.n_shards))
            return writer.finish()
        resumed = writer.n_shards
        start = writer.resume_point[0]
        t0, tokens = time.perf_counter(), 0
        with _Progress(progress, n_chunks, start, str(cfg.out)) as advance:
            for chunk in chunks(start):
                writer.append(chunk.acts, chunk.meta, chunk=chunk.index)
                tokens += chunk.n_tokens
                advance(chunk.n_tokens)
                del chunk
            store = writer.finish()
        seconds = time.perf_counter() - t0
    if stats is not None:
        stats.append(_stats_of(plan, tokens, seconds, resumed))
    log.info("captured %d tokens in %.1f s into %s", tokens, seconds, cfg.out)
    return store


def _layer_names(model: Any, layers: Any, resolve: Any, default: Any) -> list[str]:
    """Requested layers (globs expanded, ``final_norm`` kept as a name) in module order."""
    from repscope.capture.hf import FINAL_NORM, final_norm

    if not layers:
        names = default(model)
    else:
        names = []
        for pattern in layers:
            found = [FINAL_NORM] if pattern == FINAL_NORM else resolve(model, [pattern])
            names.extend(n for n in found if n not in names)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    module = {n: final_norm(model) if n == FINAL_NORM else n for n in names}
    # module (registration) order: embeddings first; the final norm after the blocks
    return sorted(names, key=lambda n: (order[module[n]], n == FINAL_NORM))


def _chunk_ranges(plan: Any, batch_size: int) -> list[tuple[int, int]]:
    from repscope.capture.tokens import chunk_plan

    return chunk_plan(plan.n_windows, batch_size)


def _stats_of(plan: Any, tokens: int, seconds: float, resumed: int) -> CaptureStats:
    if plan is None:
        return CaptureStats(tokens, seconds, resumed)
    s = plan.summary()
    return CaptureStats(tokens, seconds, resumed, documents=s["n_documents"],
                        truncated=s["n_truncated"], tokens_cut=s["tokens_cut"],
                        windowed=s["n_windowed"])


class _Progress:
    """A rich progress bar over batches (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int, label: str) -> None:
        self.enabled, self.total, self.done, self.label = enabled, total, done, label
        self.tokens = 0

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n_tokens: None
        from repscope._progress import rich_progress

        self.bar = rich_progress("capture", "batches", "{task.fields[rate]}")
        self.bar.start()
        self.task = self.bar.add_task("capture", total=self.total, completed=self.done, rate="")
        self.t0 = time.perf_counter()

        def advance(n_tokens: int) -> None:
            self.tokens += n_tokens
            rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=1, rate=f"{rate:,.0f} tok/s")

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.stop()
