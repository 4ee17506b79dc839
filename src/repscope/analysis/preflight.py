"""Preflight: the time and peak memory a plan will take, measured on this machine beforehand.

:func:`estimate` times every planned measure on the plan's own rows at two small sizes
(``probe`` and ``2 * probe`` rows of the first planned layer), fits the growth exponent
``p`` of ``t = c n^p`` (clamped to [1, 3]) and extrapolates to the plan's rows, times the
number of results. A pair measure with permutations costs one more call per draw, so its
estimate is ``(1 + permutations)`` calls (the permutation test runs the measure once per
shuffle). Peak memory is the larger of the rows a task holds at once (a similarity matrix
task holds every planned layer's rows in float32) and the probe's traced allocation peak
(numpy via ``tracemalloc``, plus torch's CPU allocations are not traced) scaled the same way.

The estimate is refined as the run goes: :class:`Refiner` turns each finished task's measured
seconds into a new total (the planned remainder scaled by measured / estimated so far).
"""

from __future__ import annotations

import math
import time
import tracemalloc
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope._progress import format_bytes, format_seconds

__all__ = ["PlanEstimate", "Refiner", "estimate"]


@dataclass(frozen=True)
class PlanEstimate:
    """Estimated cost of the pending results of a plan."""

    seconds: float
    "Estimated wall time of the pending measures (one worker)."
    peak_bytes: int
    "Estimated peak memory of one task."
    per_measure: Mapping[str, float] = field(default_factory=dict)
    "Measure label -> estimated seconds over all its pending results."
    probe_rows: int = 0
    "Rows of the larger probe."
    probe_seconds: float = 0.0
    "What the probing itself took."

    def lines(self) -> list[str]:
        """The plan's estimate for people: a total, then the costliest measures."""
        out = [f"estimate: {format_seconds(self.seconds)} of measures, peak memory "
               f"~{format_bytes(self.peak_bytes)} (timed on {self.probe_rows} rows of this "
               f"machine in {self.probe_seconds:.1f} s, extrapolated)"]
        top = sorted(self.per_measure.items(), key=lambda kv: -kv[1])[:5]
        if top:
            out.append("  costliest: " + ", ".join(f"{k} {format_seconds(v)}" for k, v in top))
        return out


def estimate(plan: Any, store: Any, tasks: Sequence[Any], *, permutations: int = 0,
             probe: int = 128) -> PlanEstimate:
    """Estimate the pending ``tasks`` of ``plan`` (see the module docstring)."""
    from repscope import registry

    t_start = time.perf_counter()
    items = [it for t in tasks for it in t.items]
    if not items:
        return PlanEstimate(0.0, 0, {}, 0, 0.0)
    n = int(plan.rows.n)
    idx = np.asarray(plan.rows.indices())
    rng = np.random.default_rng(0)
    m2 = min(n, 2 * probe)
    m1 = max(min(n, probe), 2)
    rows = np.sort(rng.choice(idx, size=m2, replace=False)) if m2 < len(idx) else idx
    layer = plan.layers[0]
    X2 = store.read(layer, rows=rows)  # (m2, d)
    second = plan.layers[1] if len(plan.layers) > 1 else layer
    Y2 = store.read(second, rows=rows)  # (m2, d')
    by_label: dict[str, list[Any]] = {}
    for it in items:
        by_label.setdefault(f"{it.measure}" + (f" ({it.variant})" if it.variant else ""),
                            []).append(it)
    per: dict[str, float] = {}
    peak_probe = 0.0
    for label, its in by_label.items():
        spec = registry.get(its[0].measure)
        params = dict(its[0].params)
        args2 = (X2, Y2) if spec.kind == "pair" else (X2,)
        args1 = tuple(a[:m1] for a in args2)
        if spec.needs_labels:
            per[label] = float("nan")
            continue
        t1, _ = _timed(spec.fn, args1, params)
        t2, mem2 = _timed(spec.fn, args2, params)
        p = _exponent(t1, t2, m1, m2)
        each = t2 * (n / m2) ** p
        calls = len(its)
        if spec.kind == "pair":
            calls *= 1 + permutations
        per[label] = each * calls
        peak_probe = max(peak_probe, mem2 * (n / m2) ** max(p, 1.0))
    d_total = sum(int(store.dim(x)) for x in plan.layers)
    held = 4 * n * max(d_total if any(t.kind == "matrix" for t in tasks) else
                       max(int(store.dim(x)) for x in plan.layers), 1)
    total = float(sum(v for v in per.values() if math.isfinite(v)))
    return PlanEstimate(total, int(max(held, peak_probe)), per, m2,
                        time.perf_counter() - t_start)


def _timed(fn: Any, args: tuple[Any, ...], params: Mapping[str, Any]) -> tuple[float, float]:
    """Seconds and traced peak bytes of one call (errors count as 0: the run records them)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **params)
    except Exception:  # noqa: BLE001 (an estimate never fails a run; the task records errors)
        pass
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, float(peak)


def _exponent(t1: float, t2: float, m1: int, m2: int) -> float:
    """Growth exponent of time with rows between the two probes, clamped to [1, 3]."""
    if m2 <= m1 or t1 <= 0 or t2 <= 0:
        return 1.0
    return float(min(max(math.log(t2 / t1) / math.log(m2 / m1), 1.0), 3.0))


@dataclass
class Refiner:
    """Running estimate: planned seconds per result, rescaled by what finished tasks took."""

    planned: float
    "The preflight total (seconds)."
    n_total: int
    "Results pending at the start."
    done: int = 0
    elapsed: float = 0.0

    def update(self, n_results: int, seconds: float) -> float:
        """Record ``n_results`` finished in ``seconds``; return the estimated seconds left."""
        self.done += n_results
        self.elapsed += seconds
        left = max(self.n_total - self.done, 0)
        if not self.done:
            return self.planned
        planned_done = self.planned * self.done / max(self.n_total, 1)
        scale = self.elapsed / planned_done if planned_done > 0 else 1.0
        return self.planned * left / max(self.n_total, 1) * scale
