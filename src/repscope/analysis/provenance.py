"""What a run records about where its numbers came from: model, data, versions, machine."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

__all__ = ["provenance"]


def provenance(plan: Any, store: Any) -> dict[str, Any]:
    """Model, data, hashes, versions and machine, for the runs table and the report."""
    import os

    versions = {}
    for mod in ("repscope", "torch", "numpy", "scipy", "transformers", "duckdb", "plotly"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    machine = {"platform": platform.platform(), "python": platform.python_version(),
               "processor": _cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import torch

        machine["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return {"source": dict(plan.source), "manifest": _plain(store.manifest),
            "versions": versions, "machine": machine}


def _plain(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
