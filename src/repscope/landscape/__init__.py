"""Intrinsic dimension of objective landscapes: training in random subspaces.

``d_int90`` is the smallest number of trainable parameters, in a random subspace
``theta = theta_0 + P z`` of a network's parameters, that reaches 90 % of full training's
performance (Li, Farkhoor, Liu, Yosinski, ICLR 2018); SAID scales each parameter tensor's part
of ``P z`` by a trained factor (Aghajanyan, Zettlemoyer, Gupta, ACL 2021). See
``docs/landscape.md``.

- :func:`intrinsic_dimension_sweep` (``search``): baselines, geometric sweep, bisection, on any
  executor, resumable through the results database; returns a :class:`LandscapeResult`.
- :class:`Subspace` (``subspace``): any ``nn.Module`` evaluated at ``theta_0 + P z``.
- :func:`make_projection` (``projections``): dense, sparse and Fastfood projections;
  :func:`fwht` (``hadamard``) the fast Walsh-Hadamard transform.
- :class:`SupervisedTask`, :func:`ready_task` (``tasks``): your model, or the ready tasks on
  offline data (digits, Fashion-MNIST, chatterbot-corpus sentences, least squares).
- ``report`` / ``figures``: the HTML page and the static figure of the curves.

The public names load on first use, so ``import repscope.landscape`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "intrinsic_dimension_sweep": "repscope.landscape.search",
    "plan_sweep": "repscope.landscape.search",
    "run_sweep_plan": "repscope.landscape.search",
    "LandscapeError": "repscope.landscape.search",
    "Subspace": "repscope.landscape.subspace",
    "make_projection": "repscope.landscape.projections",
    "fwht": "repscope.landscape.hadamard",
    "SupervisedTask": "repscope.landscape.tasks",
    "TaskSpec": "repscope.landscape.tasks",
    "ready_task": "repscope.landscape.tasks",
    "READY_TASKS": "repscope.landscape.tasks",
    "TrainConfig": "repscope.landscape.train",
    "train_point": "repscope.landscape.train",
    "LandscapeResult": "repscope.landscape.results",
    "DimensionEstimate": "repscope.landscape.results",
    "PointResult": "repscope.landscape.results",
    "LandscapeDB": "repscope.landscape.db",
    "load_points": "repscope.landscape.db",
    "write_landscape_report": "repscope.landscape.report",
    "write_landscape_figure": "repscope.landscape.figures",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'repscope.landscape' has no attribute {name!r}")
