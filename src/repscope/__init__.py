"""repscope: capture the activations of any PyTorch model and measure their geometry.

Importing repscope is cheap and changes nothing global: heavy submodules (torch,
transformers, duckdb, plotly) are imported only when one of the names below is first used.

The main entry points (``help(repscope.<name>)`` for each):

- capture: :class:`CaptureConfig`, :func:`run_capture`, :class:`ActivationStore`
  (the hook context manager is ``repscope.capture.capture``);
- measures: :func:`intrinsic_dimension`, :func:`cka_linear`, :func:`massive_activations`,
  :func:`knn` (:class:`Neighbors`), the registry (:func:`get_measure`, :func:`list_measures`);
- statistics: :func:`permutation_test`, :func:`bootstrap_ci`, :func:`paired_test`;
- the analysis: :class:`AnalyzeConfig`, :func:`analyze` (returns :class:`AnalysisRun`, with
  ``to_pandas()``), :func:`load_results`, :func:`load_findings`, :func:`write_report`;
- sparse dictionaries: :class:`TrainConfig`, :func:`train_sae`;
- results: :class:`Estimate` (every measure returns a subclass).
"""

from __future__ import annotations

import importlib
from typing import Any

from repscope._version import __version__ as __version__
from repscope.results import Estimate as Estimate

_LAZY = {
    "ActivationStore": "repscope.capture.store",
    "AnalysisRun": "repscope.analysis.run",
    "AnalyzeConfig": "repscope.analysis.plan",
    "CaptureConfig": "repscope.capture.run",
    "Neighbors": "repscope.neighbors",
    "TrainConfig": "repscope.dictionaries.train",
    "analyze": "repscope.pipeline",
    "bootstrap_ci": "repscope.inference",
    "cka_linear": "repscope.measures.similarity",
    "intrinsic_dimension": "repscope.measures.dimension",
    "knn": "repscope.neighbors",
    "load_findings": "repscope.analysis.db",
    "load_results": "repscope.analysis.db",
    "massive_activations": "repscope.measures.massive",
    "paired_test": "repscope.inference",
    "permutation_test": "repscope.inference",
    "run_capture": "repscope.capture.run",
    "train_sae": "repscope.dictionaries.train",
    "write_report": "repscope.report.html",
}
"Public name -> the module defining it (imported on first use)."
_REGISTRY = {"get_measure": "get", "list_measures": "names"}
"""``repscope.get_measure(name)`` (a registered measure's spec: function, family, parameters)
and ``repscope.list_measures()`` (the registered names)."""

__all__ = sorted(["Estimate", "__version__", *_LAZY, *_REGISTRY])


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (keeps ``import repscope`` cheap)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _REGISTRY:
        value = getattr(importlib.import_module("repscope.registry"), _REGISTRY[name])
    else:
        raise AttributeError(f"module 'repscope' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
