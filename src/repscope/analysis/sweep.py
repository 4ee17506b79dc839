"""Checkpoint sweeps: one analysis plan over every checkpoint of a training run.

``repscope analyze --model BASE --checkpoints DIR`` (``AnalyzeConfig.checkpoints``) turns
"metrics over training" into a single plan:

1. :func:`parse_checkpoints` + :func:`~repscope.capture.checkpoints.discover_checkpoints`
   find the checkpoints (a directory of state dicts, of Hugging Face checkpoint directories,
   a local HF cache entry, or a comma-separated list), ordered by training step;
2. :func:`checkpoint_sources` captures each into its own store ``OUT/stores/<name>`` with
   :func:`~repscope.capture.checkpoints.capture_checkpoints` (the base model loaded once, each
   checkpoint's weights loaded into it; complete stores are reused, so a rerun captures
   nothing);
3. :func:`~repscope.analysis.plan.make_plan` expands the same config over every store; every
   result carries ``checkpoint`` (the name) and ``checkpoint_step``, and its key includes the
   checkpoint, so a rerun skips every result already in the database;
4. :func:`sweep_summary` is the saved plan: the last checkpoint's plan plus the list of
   checkpoints, from which the report draws its "over training" view.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repscope.capture.checkpoints import HF_WEIGHT_FILES, capture_checkpoints, discover_checkpoints
from repscope.capture.run import capture_config

__all__ = ["Source", "checkpoint_sources", "parse_checkpoints", "sweep_summary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One store an analysis reads: the store, its path and the checkpoint it holds (if any)."""

    store: Any
    "An open :class:`~repscope.capture.ActivationStore`."
    path: Path
    checkpoint: Any = None
    "The :class:`~repscope.capture.checkpoints.Checkpoint`, None outside a sweep."


def parse_checkpoints(text: str) -> str | list[str]:
    """``AnalyzeConfig.checkpoints`` as :func:`discover_checkpoints` takes it.

    An existing path (a directory of checkpoints, or one checkpoint file or model directory)
    names those checkpoints; otherwise the text is a comma-separated list of checkpoint files
    or directories, kept in its order.
    """
    text = str(text).strip()
    path = Path(text)
    if path.is_dir() and any((path / f).is_file() for f in HF_WEIGHT_FILES):
        return [text]  # one Hugging Face model directory, not a directory of checkpoints
    if path.exists() or "," not in text:
        return text
    return [part.strip() for part in text.split(",") if part.strip()]


def checkpoint_sources(cfg: Any, *, progress: bool = False) -> list[Source]:
    """Discover ``cfg.checkpoints`` and capture each into ``cfg.out/stores/<name>`` (resumable).

    ``cfg.model`` is the base model (its architecture and tokenizer); each checkpoint's weights
    are loaded into it strictly, so a checkpoint of another architecture fails with the list of
    mismatched names.
    """
    ckpts = discover_checkpoints(parse_checkpoints(cfg.checkpoints))
    log.info("checkpoint sweep over %d checkpoints: %s", len(ckpts), [c.name for c in ckpts])
    stores_dir = Path(cfg.out) / "stores"
    ccfg = capture_config(cfg, out=stores_dir, layers=tuple(cfg.layers))
    captured = capture_checkpoints(ccfg, ckpts, stores_dir, progress=progress)
    return [Source(store, Path(store.path), ckpt) for ckpt, store in captured]


def sweep_summary(plans: Sequence[Any]) -> dict[str, Any]:
    """The JSON plan of a sweep: the last checkpoint's plan, with ``checkpoints`` listing every
    checkpoint (name, step, store, source id, results) and the sweep's task and result totals."""
    summary = plans[-1].to_dict()
    summary["checkpoints"] = [
        {"name": p.source.get("checkpoint"), "step": p.source.get("checkpoint_step"),
         "store": p.store, "source_id": p.source.get("source_id"),
         "n_results": sum(len(t.items) for t in p.tasks)} for p in plans
    ]
    summary["n_tasks"] = sum(len(p.tasks) for p in plans)
    summary["n_results"] = sum(len(t.items) for p in plans for t in p.tasks)
    summary["n_map_tasks"] = sum(p.to_dict()["n_map_tasks"] for p in plans)
    return summary
