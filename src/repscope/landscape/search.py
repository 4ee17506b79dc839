"""The d-sweep: full-training baselines, a geometric sweep over ``d``, then bisection.

:func:`intrinsic_dimension_sweep` measures ``d_int`` (:mod:`repscope.landscape.results`) of a
task the way Li et al. (ICLR 2018, Sec. 2) and Aghajanyan et al. (ACL 2021, Sec. 3) do, with
the search automated:

1. every seed's run at theta_0 (``d = 0``) and its full ("direct") training: the baseline;
2. the geometric grid ``d_min, d_min g, d_min g^2, ... <= d_max`` (``g = growth``), walked upwards
   until the seed-averaged performance has reached every requested fraction, plus ``overshoot``
   grid points above (so the curve shows the plateau);
3. for each fraction, bisection (at the geometric mean, rounded) between the largest failing
   and the smallest passing ``d`` until they are ``max(1, precision * d)`` apart.

Every ``(d, seed)`` run is an independent task on an executor (:mod:`repscope.analysis.executors`:
local, process pool or Ray); the runs of one stage go out together. Each finished run is
recorded in the results database before the next stage starts, under a key that hashes the task
and every setting that changes the run, so a sweep run again (or killed and restarted) redoes
nothing already recorded and reaches the same result: the search is a deterministic function
of the recorded runs.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repscope.landscape.db import POINT_COLUMNS, LandscapeDB
from repscope.landscape.projections import PROJECTIONS
from repscope.landscape.results import LandscapeResult, PointResult, reached, summarize
from repscope.landscape.tasks import (
    SupervisedTask,
    TaskSpec,
    n_params,
    resolve_task,
    task_fingerprint,
)

__all__ = ["LandscapeError", "Point", "SweepPlan", "intrinsic_dimension_sweep", "plan_sweep",
           "run_point", "run_sweep_plan"]

log = logging.getLogger(__name__)


class LandscapeError(RuntimeError):
    """A training run failed after its retries (the sweep stops; running it again resumes)."""


@dataclass(frozen=True)
class Point:
    """One training run as sent to a worker (picklable; the task travels by name if ready)."""

    task: SupervisedTask | TaskSpec
    kind: str
    d: int | None
    seed: int
    projection: str
    said: bool
    block: int | None
    device: str
    key: str


def run_point(point: Point) -> PointResult:
    """The worker function: rebuild the task if needed and run :func:`train_point`."""
    from repscope.landscape.train import train_point

    task = resolve_task(point.task) if isinstance(point.task, TaskSpec) else point.task
    return train_point(task, point.kind, point.d, point.seed, projection=point.projection,
                       said=point.said, block=point.block, device=point.device)


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep will do, resolved before any training (written to ``plan.json``)."""

    task: SupervisedTask | TaskSpec
    task_name: str
    task_key: str
    description: str
    n_params: int
    n_scales: int
    metric: str
    metric_label: str
    higher_is_better: bool
    projection: str
    said: bool
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    grid: tuple[int, ...]
    precision: float
    tolerance: float
    overshoot: int
    block: int | None
    device: str
    training: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The sweep's key: task and every setting that changes its result."""
        return _digest(self.task_key, self.projection, self.said, self.seeds, self.fractions,
                       self.grid, self.precision, self.tolerance, self.overshoot, self.block)

    def point(self, kind: str, d: int | None, seed: int) -> Point:
        sub = kind == "subspace"
        key = _digest(self.task_key, kind, d, seed, self.projection if sub else None,
                      self.said if sub else None,
                      self.block if sub and self.projection == "fastfood" else None)
        return Point(self.task, kind, d, seed, self.projection, self.said, self.block,
                     self.device, key)

    def to_dict(self) -> dict[str, Any]:
        task = ({"ready": self.task.name, "params": dict(self.task.params)}
                if isinstance(self.task, TaskSpec) else {"own": self.task_name})
        return {"task": task, "task_name": self.task_name, "task_key": self.task_key,
                "sweep_key": self.key, "description": self.description,
                "n_params": self.n_params, "n_scales": self.n_scales, "metric": self.metric,
                "metric_label": self.metric_label,
                "higher_is_better": self.higher_is_better, "projection": self.projection,
                "said": self.said, "seeds": list(self.seeds), "fractions": list(self.fractions),
                "grid": list(self.grid), "precision": self.precision,
                "tolerance": self.tolerance, "overshoot": self.overshoot, "block": self.block,
                "device": self.device, "training": dict(self.training)}


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def geometric_grid(d_min: int, d_max: int, growth: float) -> tuple[int, ...]:
    """``d_min``, then each value ``max(previous + 1, round(previous * growth))`` below ``d_max``,
    then ``d_max``."""
    out = [int(d_min)]
    while out[-1] < d_max:
        out.append(min(int(d_max), max(out[-1] + 1, int(round(out[-1] * growth)))))
    return tuple(out)


def plan_sweep(task: str | SupervisedTask | TaskSpec, *, task_params: Mapping[str, Any] | None = None,
               fractions: Sequence[float] = (0.9,), seeds: Sequence[int] = (0, 1, 2),
               projection: str = "fastfood", said: bool | None = None, d_min: int | None = None,
               d_max: int | None = None, growth: float = 2.0, precision: float = 0.05,
               tolerance: float = 1e-6, overshoot: int = 1, block: int | None = None,
               device: str = "cpu") -> SweepPlan:
    """Resolve a sweep's settings (see :func:`intrinsic_dimension_sweep`) without training."""
    from repscope._validate import check_choice, check_float, check_int, param_error

    fn = "intrinsic_dimension_sweep"
    if isinstance(task, str):
        task = TaskSpec.of(task, task_params)
    elif task_params:
        raise param_error(fn, "task_params", "empty unless 'task' is a ready task's name",
                          dict(task_params))
    if not isinstance(task, SupervisedTask | TaskSpec):
        raise param_error(fn, "task", "a ready task's name, a TaskSpec or a SupervisedTask",
                          type(task).__name__)
    local = resolve_task(task) if isinstance(task, TaskSpec) else task
    projection = check_choice(projection, "projection", fn, PROJECTIONS)
    said = local.said if said is None else bool(said)
    fractions = tuple(check_float(f, "fractions", fn, low=0.0, high=1.0, low_inclusive=False)
                      for f in fractions)
    seeds = tuple(check_int(s, "seeds", fn, low=0) for s in seeds)
    if not fractions or not seeds or len(set(seeds)) != len(seeds):
        raise param_error(fn, "seeds" if fractions else "fractions",
                          "a non-empty sequence (seeds distinct)", seeds if fractions else fractions)
    D, tensors = n_params(local)
    m = tensors if said else 0
    d_min = check_int(m + 1 if d_min is None else d_min, "d_min", fn, low=m + 1)
    top = D + m
    d_max = check_int(top if d_max is None else d_max, "d_max", fn, low=d_min, high=top,
                      high_inclusive=True)
    growth = check_float(growth, "growth", fn, low=1.0, low_inclusive=False)
    precision = check_float(precision, "precision", fn, low=0.0, high=1.0)
    tolerance = check_float(tolerance, "tolerance", fn, low=0.0)
    overshoot = check_int(overshoot, "overshoot", fn, low=0)
    return SweepPlan(
        task=task, task_name=local.name, task_key=task_fingerprint(task),
        description=local.description, n_params=D, n_scales=m, metric=local.metric,
        metric_label=_metric_label(local),
        higher_is_better=local.higher_is_better, projection=projection, said=said, seeds=seeds,
        fractions=tuple(sorted(fractions)), grid=geometric_grid(d_min, d_max, growth),
        precision=precision, tolerance=tolerance, overshoot=overshoot, block=block,
        device=str(device), training=asdict(local.training))


def _metric_label(task: SupervisedTask) -> str:
    """The metric with its unit and split, for axis titles."""
    split = "training" if task.test is None else "test"
    if task.metric == "accuracy":
        return f"accuracy on the {split} split (fraction correct)"
    loss = task.loss if isinstance(task.loss, str) else "loss"
    return {"mse": "mean squared error", "cross_entropy": "cross-entropy (nats)"}.get(
        loss, loss) + f" on the {split} split"


class _Memory:
    """Where a sweep without a database keeps its runs."""

    def __init__(self) -> None:
        self.results: dict[str, PointResult] = {}

    def points(self, keys: Iterable[str]) -> dict[str, PointResult]:
        return {k: self.results[k] for k in keys if k in self.results}

    def write(self, plan: SweepPlan, point: Point, outcome: Any) -> None:
        if outcome.ok:
            self.results[outcome.key] = outcome.result


def _row(plan: SweepPlan, p: Point, outcome: Any) -> dict[str, Any]:
    """The ``landscape_points`` row of one outcome."""
    from repscope._version import __version__
    from repscope.landscape.db import _now

    row: dict[str, Any] = {
        "key": p.key, "sweep_key": plan.key, "task": plan.task_name, "task_key": plan.task_key,
        "kind": p.kind, "d": p.d, "seed": p.seed,
        "projection": p.projection if p.kind == "subspace" else None,
        "said": p.said if p.kind == "subspace" else None, "metric": plan.metric,
        "status": "ok" if outcome.ok else "error", "error": outcome.error,
        "attempts": outcome.attempts, "worker": outcome.worker,
        "repscope_version": __version__, "recorded_at": _now()}
    if outcome.ok:
        row.update({k: v for k, v in outcome.result.to_dict().items()
                    if k in POINT_COLUMNS and k not in row})
    return row


class _Record:
    """The executors' done record for one stage: the runs found at its start, and every new
    outcome written to the store before it is handed on."""

    def __init__(self, store: Any, plan: SweepPlan, points: Mapping[str, Point]):
        self.store, self.plan, self.by_key = store, plan, points
        self.found = store.points(points)

    def done_keys(self) -> set[str]:
        return set(self.found)

    def record(self, outcome: Any) -> None:
        p = self.by_key[outcome.key]
        if isinstance(self.store, LandscapeDB):
            self.store.write_point(_row(self.plan, p, outcome))
        else:
            self.store.write(self.plan, p, outcome)
        if outcome.ok:
            self.found[outcome.key] = outcome.result


def _run_stage(ex: Any, plan: SweepPlan, points: list[Point], store: Any, *, retries: int,
               timeout: float | None, progress: bool) -> dict[str, PointResult]:
    """Run the points not yet recorded; return every point's result, or raise on a failure."""
    from repscope.analysis.executors import run_sweep

    by_key = {p.key: p for p in points}
    record = _Record(store, plan, by_key)
    failed = [o for o in run_sweep(ex, run_point, points, record=record, key=lambda p: p.key,
                                   retries=retries, progress=progress, timeout=timeout)
              if not o.ok]
    if failed:
        p = by_key[failed[0].key]
        first = (failed[0].error or "").splitlines()[0]
        raise LandscapeError(
            f"{len(failed)} run(s) of {plan.task_name} failed after their retries; first: "
            f"{p.kind} d={p.d} seed={p.seed}: {first}. Running the sweep again resumes "
            "from the recorded runs.")
    return record.found


def run_sweep_plan(plan: SweepPlan, *, executor: Any = "local", workers: int | None = None,
                   address: str | None = None, db: str | Path | LandscapeDB | None = None,
                   retries: int = 1, timeout: float | None = None, progress: bool = False,
                   on_stage: Callable[[str], None] | None = None) -> LandscapeResult:
    """Run a planned sweep (see the module docstring); ``executor`` is a kind or an executor."""
    from repscope.analysis.executors import Executor, make_executor

    store: Any = _Memory() if db is None else (db if isinstance(db, LandscapeDB)
                                               else LandscapeDB.at(db))
    own = not isinstance(executor, Executor)
    ex = make_executor(executor, workers=workers, address=address) if own else executor
    say = on_stage or (lambda text: log.info(text))
    results: dict[tuple[str, int | None, int], PointResult] = {}

    def run(specs: Iterable[tuple[str, int | None]], label: str) -> None:
        pts = [plan.point(kind, d, s) for kind, d in specs for s in plan.seeds]
        say(f"{plan.task_name}: {label} ({len(pts)} runs)")
        got = _run_stage(ex, plan, pts, store, retries=retries, timeout=timeout,
                         progress=progress)
        for p in pts:
            results[(p.kind, p.d, p.seed)] = got[p.key]

    try:
        run([("init", None), ("full", None)], "theta_0 and full training")
        per_stage = max(1, math.ceil(ex.workers / len(plan.seeds)))
        grid, i, stop_at = list(plan.grid), 0, None
        while i < len(grid) and (stop_at is None or i <= stop_at):
            batch = grid[i:i + per_stage]
            run([("subspace", d) for d in batch], f"grid d = {', '.join(map(str, batch))}")
            i += len(batch)
            if stop_at is None and all(_smallest_passing(plan, results, f) is not None
                                       for f in plan.fractions):
                stop_at = i - 1 + plan.overshoot
        while True:
            mids = sorted({m for f in plan.fractions if (m := _midpoint(plan, results, f))})
            if not mids:
                break
            run([("subspace", d) for d in mids], f"bisection d = {', '.join(map(str, mids))}")
    finally:
        if own:
            ex.close()
    result = summarize(plan.task_name, list(results.values()), plan.seeds, plan.fractions,
                       n_params=plan.n_params, projection=plan.projection, said=plan.said,
                       n_scales=plan.n_scales, metric=plan.metric,
                       higher_is_better=plan.higher_is_better, tolerance=plan.tolerance,
                       params=plan.to_dict())
    if isinstance(store, LandscapeDB):
        store.write_sweep(plan.key, plan.to_dict(), result)
    return result


def _curve(plan: SweepPlan, results: Mapping[tuple[str, int | None, int], PointResult]
           ) -> tuple[list[int], list[float], float, float]:
    """Evaluated dims (ascending), their seed-mean values, the baseline and initial means."""
    dims = sorted({d for kind, d, _ in results if kind == "subspace"})  # type: ignore[type-var]
    mean = [sum(results[("subspace", d, s)].value for s in plan.seeds) / len(plan.seeds)
            for d in dims]
    base = sum(results[("full", None, s)].value for s in plan.seeds) / len(plan.seeds)
    init = sum(results[("init", None, s)].value for s in plan.seeds) / len(plan.seeds)
    return dims, mean, base, init


def _passes(plan: SweepPlan, value: float, fraction: float, base: float, init: float) -> bool:
    from repscope.landscape.results import threshold_for

    thr = threshold_for(fraction, base, init, plan.higher_is_better)
    scale = base if plan.higher_is_better else init - base
    return reached(value, thr, scale=scale, tolerance=plan.tolerance,
                   higher_is_better=plan.higher_is_better)


def _smallest_passing(plan: SweepPlan, results: Mapping[Any, PointResult],
                      fraction: float) -> tuple[int, int] | None:
    """``(largest failing d below it or 0, smallest passing d)`` on the seed-mean curve."""
    dims, mean, base, init = _curve(plan, results)
    for i, (d, v) in enumerate(zip(dims, mean, strict=True)):
        if _passes(plan, v, fraction, base, init):
            return (dims[i - 1] if i else 0), d
    return None


def _midpoint(plan: SweepPlan, results: Mapping[Any, PointResult], fraction: float) -> int | None:
    """The next d to evaluate for ``fraction``, or None when its bracket is resolved."""
    bracket = _smallest_passing(plan, results, fraction)
    if bracket is None:
        return None
    lo, hi = bracket
    lo = max(lo, plan.n_scales)  # with SAID, d must exceed the number of scales
    if hi - lo <= max(1.0, plan.precision * hi):
        return None
    mid = int(round(math.sqrt(lo * hi))) if lo >= 1 else hi // 2
    mid = min(max(mid, lo + 1), hi - 1)
    return mid if lo < mid < hi else None


def intrinsic_dimension_sweep(
    task: str | SupervisedTask | TaskSpec,
    *,
    task_params: Mapping[str, Any] | None = None,
    fractions: Sequence[float] = (0.9,),
    seeds: Sequence[int] = (0, 1, 2),
    projection: str = "fastfood",
    said: bool | None = None,
    d_min: int | None = None,
    d_max: int | None = None,
    growth: float = 2.0,
    precision: float = 0.05,
    tolerance: float = 1e-6,
    overshoot: int = 1,
    block: int | None = None,
    device: str = "cpu",
    executor: Any = "local",
    workers: int | None = None,
    address: str | None = None,
    db: str | Path | LandscapeDB | None = None,
    retries: int = 1,
    timeout: float | None = None,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> LandscapeResult:
    """Measure the intrinsic dimension of ``task``'s objective landscape (``d_int90`` by default).

    ``task``: a ready task's name (with ``task_params``, see
    :mod:`repscope.landscape.tasks`), a :class:`TaskSpec` or your :class:`SupervisedTask`.
    ``fractions``: the fractions of full-training performance (0.9 gives d_int90; for a loss
    metric 1.0 is reaching the full-training loss). ``seeds``: repeated runs (theta_0,
    projection and batch order), their spread is the interval of each estimate.
    ``projection``: 'fastfood' (default), 'sparse' or 'dense'; ``said``: the structure-aware
    map (default: the task's choice). The search: ``d_min`` (default 1, or the number of SAID
    scales + 1), ``d_max`` (default D), ``growth`` of the geometric grid, ``precision`` of the
    bisection (relative bracket width; 0 = exact integer), ``tolerance`` (see
    :func:`repscope.landscape.results.reached`), ``overshoot`` grid points past the crossing,
    ``block`` Fastfood's block size. Execution: ``executor`` ('local', 'process', 'ray' or an
    :class:`~repscope.analysis.executors.Executor`), ``workers``, ``address`` (Ray),
    ``retries`` and ``timeout`` per run; ``db`` a results database (file or directory) that
    records every run and makes the sweep resumable (None keeps them in memory).

    Returns a :class:`~repscope.landscape.results.LandscapeResult`; ``result.d_int(0.9)`` is the
    estimate with its bracket, per-seed values and their range. Raises
    :class:`LandscapeError` when a run fails after its retries.

    Example::

        res = intrinsic_dimension_sweep("digits-cnn", seeds=(0, 1), db="out/")
        est = res.d_int(0.9)
        print(est.value, est.ci, est.value / res.n_params)
    """
    plan = plan_sweep(task, task_params=task_params, fractions=fractions, seeds=seeds,
                      projection=projection, said=said, d_min=d_min, d_max=d_max, growth=growth,
                      precision=precision, tolerance=tolerance, overshoot=overshoot, block=block,
                      device=device)
    return run_sweep_plan(plan, executor=executor, workers=workers, address=address, db=db,
                          retries=retries, timeout=timeout, progress=progress, on_stage=on_stage)
