"""What a landscape sweep produces: one result per training run, the performance-vs-d curve and
the intrinsic-dimension estimates with their spread over seeds.

Definitions (Li, Farkhoor, Liu, Yosinski, ICLR 2018, Sec. 2; Aghajanyan, Zettlemoyer, Gupta, ACL
2021, Sec. 3): the *baseline* is the performance of ordinary ("direct") training of all
parameters, averaged over the seeds; ``d_int`` at fraction ``f`` (``d_int90`` for ``f = 0.9``) is the
smallest subspace dimension ``d`` whose performance, averaged over the seeds, reaches ``f`` times
the baseline. That is for a metric where higher is better (accuracy). For a loss (lower is
better, e.g. the known-answer least squares) "reaching ``f``" means closing the fraction ``f`` of the
gap between the loss at the starting point ``theta_0`` and the baseline loss, so ``f = 1`` means
reaching the baseline loss (``d_int100``). ``tolerance`` forgives float rounding: a value passes
when it is within ``tolerance`` times the scale (``|baseline|``, or the gap for a loss) of the
threshold. A run whose loss became non-finite has value NaN and never passes.

The per-seed ``d_int`` is the smallest evaluated ``d`` at which that seed's run passes the same
threshold; their range over seeds is the interval reported with each estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from repscope._version import __version__
from repscope.results import Estimate, _from_jsonable, from_dict, result_type, to_jsonable

__all__ = [
    "DimensionEstimate",
    "LandscapeResult",
    "PointResult",
    "estimate_dimension",
    "reached",
    "threshold_for",
]


@dataclass(frozen=True)
class PointResult:
    """One training run: at the start (``init``), full training (``full``) or in a subspace."""

    kind: str
    "``'init'`` (theta_0, no training), ``'full'`` (all parameters) or ``'subspace'``."
    d: int | None
    "Subspace dimension (trainable numbers, SAID scales included); None for init and full."
    seed: int
    "Seed of theta_0, of the projection and of the batch order."
    value: float
    "The task's metric on its evaluation split (NaN when training diverged)."
    loss: float
    "The task's loss on its evaluation split."
    train_loss: float
    "Mean training loss over the last epoch (the loss at theta_0 for ``init``)."
    steps: int
    "Optimiser steps taken."
    seconds: float
    "Wall time of the run (building, training, evaluating)."
    n_trainable: int
    "Numbers the optimiser updated."
    diverged: bool = False
    "The training loss became NaN or infinite (the run stopped there)."

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def threshold_for(fraction: float, baseline: float, initial: float,
                  higher_is_better: bool) -> float:
    """The performance a run must reach for ``fraction`` (see the module docstring)."""
    if higher_is_better:
        return fraction * baseline
    return initial - fraction * (initial - baseline)


def reached(value: float, threshold: float, *, scale: float, tolerance: float,
            higher_is_better: bool) -> bool:
    """Whether ``value`` passes ``threshold`` up to ``tolerance * scale``; NaN never passes."""
    if not math.isfinite(value):
        return False
    slack = tolerance * abs(scale)
    return value >= threshold - slack if higher_is_better else value <= threshold + slack


@result_type
@dataclass(frozen=True)
class DimensionEstimate(Estimate):
    """``d_int`` at one fraction of the baseline; ``value`` is NaN when no evaluated ``d`` reached
    it (``censored``), ``ci`` the range of the per-seed estimates (``inf`` above when a seed never
    reached it), ``n_samples`` the number of seeds."""

    fraction: float = 0.9
    "Fraction of the baseline performance (0.9 for d_int90)."
    threshold: float = math.nan
    "The performance that had to be reached."
    bracket: tuple[int, int] | None = None
    "``(largest failing d, smallest passing d)`` among the evaluated dimensions (0 = theta_0)."
    per_seed: tuple[float, ...] = ()
    "Each seed's smallest passing d (NaN: never reached), in the order of the seeds."
    censored: bool = False
    "No evaluated d reached the threshold: d_int is above ``max_dim``."
    max_dim: int = 0
    "The largest evaluated d."


def estimate_dimension(fraction: float, dims: np.ndarray, values: np.ndarray, baseline: float,
                       initial: float, *, higher_is_better: bool, tolerance: float,
                       n_params: int, params: Mapping[str, Any] | None = None
                       ) -> DimensionEstimate:
    """``d_int`` at ``fraction`` from the evaluated dimensions ``dims`` (``(n_d,)``, ascending) and
    the per-seed performances ``values`` (``(n_d, n_seeds)``)."""
    thr = threshold_for(fraction, baseline, initial, higher_is_better)
    scale = baseline if higher_is_better else initial - baseline
    ok = dict(scale=scale, tolerance=tolerance, higher_is_better=higher_is_better)
    mean = values.mean(axis=1) if values.size else np.zeros(0)  # (n_d,) NaN stays NaN
    passing = [i for i, v in enumerate(mean) if reached(float(v), thr, **ok)]
    per_seed = []
    for s in range(values.shape[1]):
        hit = [int(dims[i]) for i in range(len(dims)) if reached(float(values[i, s]), thr, **ok)]
        per_seed.append(float(hit[0]) if hit else math.nan)
    max_dim = int(dims[-1]) if len(dims) else 0
    if passing:
        hi = int(dims[passing[0]])
        lo = int(dims[passing[0] - 1]) if passing[0] > 0 else 0
        value, bracket, censored = float(hi), (lo, hi), False
    else:
        value, bracket, censored = math.nan, None, True
    seeds = np.asarray(per_seed, dtype=float)
    ci = None
    if np.isfinite(seeds).any():
        ci = (float(np.nanmin(seeds)), float(np.nanmax(seeds)) if np.isfinite(seeds).all()
              else math.inf)
    return DimensionEstimate(
        measure=f"d_int{fraction * 100:g}", value=value, n_samples=values.shape[1], ci=ci,
        params={**(params or {}), "fraction": fraction, "tolerance": tolerance,
                "interval": "range of the per-seed estimates"},
        diagnostics={"relative": value / n_params if n_params else math.nan},
        fraction=fraction, threshold=thr, bracket=bracket, per_seed=tuple(per_seed),
        censored=censored, max_dim=max_dim)


@dataclass(frozen=True)
class LandscapeResult:
    """A task's performance-vs-d curve and its intrinsic-dimension estimates."""

    task: str
    "Task name."
    n_params: int
    "D: the number of parameters in the subspace's ambient space."
    projection: str
    "'fastfood', 'sparse' or 'dense'."
    said: bool
    "Whether the structure-aware (SAID) map was used."
    n_scales: int
    "SAID scales (one per parameter tensor) counted in every d; 0 without SAID."
    metric: str
    "'accuracy' (higher is better) or 'loss' (lower is better)."
    higher_is_better: bool
    seeds: tuple[int, ...]
    baseline: tuple[float, ...]
    "Full-training performance, per seed."
    initial: tuple[float, ...]
    "Performance at theta_0 (d = 0), per seed."
    dims: np.ndarray
    "Evaluated subspace dimensions, ascending ``(n_d,)``."
    values: np.ndarray
    "Performance per dimension and seed ``(n_d, n_seeds)``."
    estimates: tuple[DimensionEstimate, ...]
    "One estimate per requested fraction."
    params: Mapping[str, Any] = field(default_factory=dict)
    "Every setting of the sweep: task parameters, training, search."
    seconds: float = 0.0
    "Summed wall time of the training runs."
    version: str = __version__

    @property
    def baseline_mean(self) -> float:
        return float(np.mean(self.baseline))

    @property
    def initial_mean(self) -> float:
        return float(np.mean(self.initial))

    def d_int(self, fraction: float = 0.9) -> DimensionEstimate:
        """The estimate at ``fraction`` (one of those the sweep was run for)."""
        from repscope._validate import param_error

        for e in self.estimates:
            if math.isclose(e.fraction, fraction):
                return e
        raise param_error("LandscapeResult.d_int", "fraction",
                          f"one of {[e.fraction for e in self.estimates]}", fraction)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["estimates"] = [e.to_dict() for e in self.estimates]
        return out

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self.to_dict()), allow_nan=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LandscapeResult:
        raw = dict(data)
        estimates = tuple(from_dict(e) for e in raw.pop("estimates"))
        raw = _from_jsonable(to_jsonable(raw))
        raw["dims"] = np.asarray(raw["dims"], dtype=np.int64).reshape(-1)
        raw["values"] = np.asarray(raw["values"], dtype=float).reshape(len(raw["dims"]), -1)
        for key in ("seeds", "baseline", "initial"):
            raw[key] = tuple(raw[key])
        return cls(estimates=estimates, **raw)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, text: str) -> LandscapeResult:
        return cls.from_dict(json.loads(text))


def summarize(task: str, points: Sequence[PointResult], seeds: Sequence[int],
              fractions: Sequence[float], *, n_params: int, projection: str, said: bool,
              n_scales: int, metric: str, higher_is_better: bool, tolerance: float,
              params: Mapping[str, Any]) -> LandscapeResult:
    """Assemble a :class:`LandscapeResult` from the runs of one sweep (all seeds present)."""
    by = {(p.kind, p.d, p.seed): p for p in points}
    seeds = tuple(int(s) for s in seeds)
    baseline = tuple(by[("full", None, s)].value for s in seeds)
    initial = tuple(by[("init", None, s)].value for s in seeds)
    dims = np.asarray(sorted({p.d for p in points if p.kind == "subspace"}), dtype=np.int64)
    values = np.array([[by[("subspace", int(d), s)].value for s in seeds] for d in dims],
                      dtype=float).reshape(len(dims), len(seeds))  # (n_d, n_seeds)
    base, init = float(np.mean(baseline)), float(np.mean(initial))
    estimates = tuple(
        estimate_dimension(f, dims, values, base, init, higher_is_better=higher_is_better,
                           tolerance=tolerance, n_params=n_params,
                           params={"task": task, "projection": projection, "said": said})
        for f in fractions)
    return LandscapeResult(task=task, n_params=n_params, projection=projection, said=said,
                           n_scales=n_scales, metric=metric, higher_is_better=higher_is_better,
                           seeds=seeds, baseline=baseline, initial=initial, dims=dims,
                           values=values, estimates=estimates, params=dict(params),
                           seconds=float(sum(p.seconds for p in points)))
