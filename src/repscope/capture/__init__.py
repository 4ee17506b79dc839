"""Capture activations of PyTorch models and store them on disk.

- :func:`capture`: forward hooks on modules selected by name or glob, always removed;
- :class:`ActivationStore`: a crash-safe, append-only, memory-mappable activation store;
- :func:`run_capture` / :class:`CaptureConfig`: model + corpus -> store, resumable
  (the ``repscope capture`` command).

Heavy dependencies (transformers) are imported only when a model is loaded.
"""

from repscope.capture.hooks import LayerNotFoundError, StopForward, capture, resolve_layers
from repscope.capture.pooling import pool
from repscope.capture.run import CaptureConfig, CaptureStats, run_capture
from repscope.capture.store import ActivationStore, StoreError, StoreWriter

__all__ = [
    "ActivationStore",
    "CaptureConfig",
    "CaptureStats",
    "LayerNotFoundError",
    "StopForward",
    "StoreError",
    "StoreWriter",
    "capture",
    "pool",
    "resolve_layers",
    "run_capture",
]
