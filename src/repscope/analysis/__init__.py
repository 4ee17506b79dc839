"""Plans, execution and the results database behind ``repscope analyze``.

The public names load on first use (``repscope.analysis.run_analysis``), so importing this package
does not import duckdb or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AnalyzeConfig": "repscope.analysis.plan",
    "make_plan": "repscope.analysis.plan",
    "run_analysis": "repscope.analysis.run",
    "ResultsDB": "repscope.analysis.db",
    "load_results": "repscope.analysis.db",
    "load_runs": "repscope.analysis.db",
    "export_results": "repscope.analysis.db",
    "make_executor": "repscope.analysis.executors",
    "discover_checkpoints": "repscope.capture.checkpoints",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'repscope.analysis' has no attribute {name!r}")
