"""``repscope landscape``: plan every task's sweep, run them, write the database and the report.

:func:`run_landscape` is what the command calls. Stages: the config is checked and every
task's sweep planned (``plan.json``, ``config.json``) before any training; the sweeps run one
after the other on the configured executor, each recording its runs in ``results.duckdb`` as
they finish (a rerun skips them); ``landscape.html`` and ``landscape.png`` are written from
the results.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repscope.landscape.config import LandscapeConfig
from repscope.landscape.results import LandscapeResult

__all__ = ["LandscapeRun", "run_landscape"]


@dataclass(frozen=True)
class LandscapeRun:
    """What :func:`run_landscape` did and where it put it."""

    out: Path
    db_path: Path
    plan_path: Path
    report_path: Path | None
    figure_path: Path | None
    results: tuple[LandscapeResult, ...] = field(repr=False)
    n_runs: int
    "Training runs the sweeps needed."
    n_computed: int
    "Training runs this invocation performed (the others were in the database)."
    seconds: float


def run_landscape(cfg: LandscapeConfig, *, progress: bool = False,
                  say: Any = None) -> LandscapeRun:
    """Run every sweep of ``cfg``; ``say(text)`` receives one line per stage."""
    from repscope._io import atomic_write_text
    from repscope.config import config_to_dict
    from repscope.landscape.db import LandscapeDB
    from repscope.landscape.search import plan_sweep, run_sweep_plan

    t0 = time.perf_counter()
    out = Path(cfg.out)
    params = dict(cfg.task_params)
    if cfg.training_overrides():
        params["training"] = {**dict(params.get("training", {})), **cfg.training_overrides()}
    plans = [plan_sweep(name, task_params=params, fractions=cfg.fractions, seeds=cfg.seeds,
                        projection=cfg.projection, said=cfg.said, d_min=cfg.d_min,
                        d_max=cfg.d_max, growth=cfg.growth, precision=cfg.precision,
                        tolerance=cfg.tolerance, overshoot=cfg.overshoot, block=cfg.block,
                        device=cfg.device) for name in cfg.task]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(config_to_dict(cfg), indent=2))
    plan_path = out / "plan.json"
    atomic_write_text(plan_path, json.dumps([p.to_dict() for p in plans], indent=2, default=str))
    db = LandscapeDB.at(out)
    before = len(db.done_keys())
    results = tuple(run_sweep_plan(p, executor=cfg.executor, workers=cfg.workers,
                                   address=cfg.address, db=db, retries=cfg.retries,
                                   timeout=cfg.task_timeout, progress=progress, on_stage=say)
                    for p in plans)
    n_runs = sum(len(p.seeds) * (2 + len(r.dims)) for p, r in zip(plans, results, strict=True))
    report_path = figure_path = None
    if cfg.report:
        from repscope.landscape.figures import write_landscape_figure
        from repscope.landscape.report import write_landscape_report

        report_path = write_landscape_report(results, out / "landscape.html")
        figure_path = write_landscape_figure(results, out / "landscape.png")
    return LandscapeRun(out, db.path, plan_path, report_path, figure_path, results, n_runs,
                        len(db.done_keys()) - before, time.perf_counter() - t0)
