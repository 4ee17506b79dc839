"""The main job end to end: measure (:mod:`repscope.analysis`) and report (:mod:`repscope.report`).

This is what ``repscope analyze`` runs. It sits above both layers so that the analysis never
imports the report: :func:`repscope.analysis.run.run_analysis` does the capture, planning and
measuring, and this module hands it the HTML report writer.

>>> from repscope.pipeline import analyze  # doctest: +SKIP
>>> run = analyze(AnalyzeConfig(max_docs=40, out="runs/demo"))  # doctest: +SKIP
>>> run.report_path  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from typing import Any

from repscope.analysis.plan import AnalyzeConfig
from repscope.analysis.run import AnalysisRun, run_analysis

__all__ = ["AnalysisRun", "AnalyzeConfig", "analyze"]


def analyze(cfg: AnalyzeConfig | None = None, *, progress: bool = False,
            console: Any = None) -> AnalysisRun:
    """Capture (or open a store), measure every layer, write ``results.duckdb`` and the report.

    Parameters
    ----------
    cfg : AnalyzeConfig, optional
        What to analyse and how; the default is the README's main job (the bundled MiniLM on
        the bundled corpus, the default measure panel, layer x layer similarity).
    progress : bool
        Show progress bars and stage lines on ``console`` (or stderr).
    console : rich.console.Console, optional
        Where progress goes.

    Returns
    -------
    AnalysisRun
        The run's id, output paths (database, plan, report) and counts of computed, cached and
        failed results.
    """
    from repscope.report.html import write_report

    return run_analysis(cfg if cfg is not None else AnalyzeConfig(), progress=progress,
                        console=console, write_report=write_report)
