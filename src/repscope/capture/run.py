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
        "help": "'minilm' (the bundled all-MiniLM-L6-v2) or a local Hugging Face model directory."})
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
    batch_size: int = field(default=32, metadata={"help": "Documents per forward pass."})
    max_length: int = field(default=128, metadata={
        "help": "Tokens per document (longer documents are truncated)."})
    max_docs: int | None = field(default=None, metadata={
        "help": "Capture a seeded random subset of this many documents (kept in corpus order)."})
    shard_rows: int = field(default=8192, metadata={"help": "Rows per shard file."})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda."})
    seed: int = field(default=0, metadata={"help": "Seed of the max_docs document subset."})


@dataclass(frozen=True)
class CaptureStats:
    """What one ``run_capture`` call did (the store itself is the result)."""

    tokens: int
    """Real tokens run through the model in this call (0 if the store was complete)."""
    seconds: float
    """Wall time of the capture loop."""
    resumed_from_shard: int
    """Complete shards found at the start (0 for a fresh store)."""


def select_documents(documents: list[str], max_docs: int | None, seed: int) -> list[str]:
    """All documents, or a seeded random subset of ``max_docs`` kept in corpus order."""
    if max_docs is None or max_docs >= len(documents):
        return list(documents)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(documents), size=max_docs, replace=False))
    return [documents[i] for i in keep]


def _check(cfg: CaptureConfig) -> None:
    from repscope._validate import check_choice, check_int

    fn = "CaptureConfig"
    check_choice(cfg.pooling, "pooling", fn, ("none", "mean", "first", "last"))
    check_choice(cfg.dtype, "dtype", fn, ("float32", "float16", "bfloat16"))
    check_int(cfg.batch_size, "batch_size", fn, low=1)
    check_int(cfg.max_length, "max_length", fn, low=1)
    check_int(cfg.shard_rows, "shard_rows", fn, low=1)
    check_int(cfg.seed, "seed", fn, low=0)
    if cfg.max_docs is not None:
        check_int(cfg.max_docs, "max_docs", fn, low=1)


def _probe_dims(model: Any, tokenizer: Any, layers: list[str], doc: str, device: str) -> dict[str, int]:
    """Feature count of each layer, from a forward pass over a few tokens."""
    from repscope.capture.hf import iter_chunks

    chunk = next(iter_chunks(model, tokenizer, [doc], layers=layers, pooling="first",
                             max_length=8, device=device))
    return {name: int(chunk.acts[name].shape[1]) for name in layers}


def run_capture(cfg: CaptureConfig, progress: bool = True, *,
                loaded: tuple[Any, Any, str, str] | None = None,
                stats: list[CaptureStats] | None = None) -> ActivationStore:
    """Capture ``cfg.layers`` of ``cfg.model`` over ``cfg.corpus`` into the store ``cfg.out``.

    Resumes a partial store of the same capture; returns a complete store at once if it is
    already complete; refuses (``StoreError``) an output directory holding anything else.

    Args:
        progress: show a rich progress bar on stderr.
        loaded: an already loaded ``(model, tokenizer, model_id, weights_hash)``, as returned
            by :func:`repscope.data.models.load_model` (skips loading ``cfg.model``).
        stats: if given, a :class:`CaptureStats` is appended to it.
    """
    import torch

    from repscope._io import check_output_dir
    from repscope.capture.hf import default_layers, iter_chunks
    from repscope.capture.hooks import resolve_layers
    from repscope.config import config_to_dict
    from repscope.data.corpus import load_corpus
    from repscope.data.models import load_model

    _check(cfg)
    check_output_dir(cfg.out, "out", "CaptureConfig")
    corpus = load_corpus(cfg.corpus)
    documents = select_documents(corpus.documents, cfg.max_docs, cfg.seed)
    model, tokenizer, model_id, digest = loaded or load_model(cfg.model, device=cfg.device)
    layers = resolve_layers(model, list(cfg.layers)) if cfg.layers else default_layers(model)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    layers.sort(key=order.__getitem__)  # module (registration) order: embeddings first
    dims = _probe_dims(model, tokenizer, layers, documents[0], cfg.device)
    identity = {
        "model": {"id": model_id, "weights_sha256": digest},
        "data": {"id": corpus.id, "sha256": corpus.hash, "max_docs": cfg.max_docs, "seed": cfg.seed,
                 "n_documents": len(documents)},
        "pooling": cfg.pooling, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
        "device_type": torch.device(cfg.device).type, "torch_version": torch.__version__,
    }
    info = {
        "model": {"id": model_id, "class": type(model).__name__, "weights_sha256": digest},
        "data": {"id": corpus.id, "sha256": corpus.hash, "n_documents": len(documents),
                 "n_corpus_documents": len(corpus), "max_docs": cfg.max_docs, "seed": cfg.seed},
        "pooling": cfg.pooling, "max_length": cfg.max_length, "batch_size": cfg.batch_size,
        "config": config_to_dict(cfg),
    }
    token_level = cfg.pooling == "none"
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) if token_level else None
    meta_columns = ({"doc_id": "int64", "position": "int32", "token_id": "int32"} if token_level
                    else {"doc_id": "int64"})
    writer = ActivationStore.create(
        cfg.out, layers=dims, dtype=cfg.dtype, shard_rows=cfg.shard_rows,
        meta_columns=meta_columns, identity=identity, info=info, documents=documents, vocab=vocab)
    with writer:
        if writer.complete:
            log.info("store %s is already complete", cfg.out)
            if stats is not None:
                stats.append(CaptureStats(0, 0.0, writer.n_shards))
            return writer.finish()
        resumed = writer.n_shards
        start = writer.resume_point[0]
        chunks = iter_chunks(model, tokenizer, documents, layers=layers, pooling=cfg.pooling,
                             dtype=cfg.dtype, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, device=cfg.device, start=start)
        t0, tokens = time.perf_counter(), 0
        n_batches = -(-len(documents) // cfg.batch_size)
        with _Progress(progress, n_batches, start, str(cfg.out)) as advance:
            for chunk in chunks:
                writer.append(chunk.acts, chunk.meta, chunk=chunk.index)
                tokens += chunk.n_tokens
                advance(chunk.n_tokens)
            store = writer.finish()
        seconds = time.perf_counter() - t0
    if stats is not None:
        stats.append(CaptureStats(tokens, seconds, resumed))
    log.info("captured %d tokens in %.1f s into %s", tokens, seconds, cfg.out)
    return store


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
