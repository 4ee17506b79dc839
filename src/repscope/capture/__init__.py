"""Capture activations of PyTorch models and store them on disk.

- :func:`capture`: forward hooks on modules selected by name or glob, always removed;
- :class:`ActivationStore`: a crash-safe, append-only, memory-mappable activation store;
- :func:`run_capture` / :class:`CaptureConfig`: model + corpus -> store, resumable
  (the ``repscope capture`` command);
- :func:`discover_checkpoints` / :func:`capture_checkpoints`: a training run's checkpoints in
  step order, each captured into its own store (:mod:`repscope.capture.checkpoints`).

Names are imported on first use (PEP 562), so ``import repscope.capture`` and the CLI's help
stay cheap; torch is imported with the hooks, transformers only when a model is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static names for type checkers and IDEs
    from repscope.capture.checkpoints import (
        Checkpoint,
        capture_checkpoints,
        discover_checkpoints,
        load_checkpoint,
    )
    from repscope.capture.hooks import LayerNotFoundError, StopForward, capture, resolve_layers
    from repscope.capture.pooling import pool
    from repscope.capture.run import CaptureConfig, CaptureStats, run_capture
    from repscope.capture.store import ActivationStore, StoreError
    from repscope.capture.writer import StoreWriter

__all__ = [
    "ActivationStore",
    "CaptureConfig",
    "CaptureStats",
    "Checkpoint",
    "LayerNotFoundError",
    "StopForward",
    "StoreError",
    "StoreWriter",
    "capture",
    "capture_checkpoints",
    "discover_checkpoints",
    "load_checkpoint",
    "pool",
    "resolve_layers",
    "run_capture",
]

_WHERE = {
    "ActivationStore": "store", "StoreError": "store", "StoreWriter": "writer",
    "CaptureConfig": "run", "CaptureStats": "run", "run_capture": "run",
    "LayerNotFoundError": "hooks", "StopForward": "hooks", "capture": "hooks",
    "resolve_layers": "hooks", "pool": "pooling", "Checkpoint": "checkpoints",
    "capture_checkpoints": "checkpoints", "discover_checkpoints": "checkpoints",
    "load_checkpoint": "checkpoints",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"repscope.capture.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'repscope.capture' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
