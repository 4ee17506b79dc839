"""Everything the report shows, gathered once from the results database.

:func:`gather` reads ``results.duckdb`` and returns a :class:`ReportData`: the layer order,
scalar results per family, layer x layer matrices for pair measures, eigenvalue spectra and
per-point (local) distributions from the diagnostics, failures, the measures that were not run
and the provenance of the latest run. The HTML report and the static figures both draw from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repscope import registry

__all__ = ["FAMILIES", "CheckpointView", "Matrix", "ReportData", "Series", "TrainingSeries",
           "gather", "preferred_spectrum"]

#: family -> panel title, in report order: the registry's known families.
FAMILIES = registry.FAMILIES


@dataclass(frozen=True)
class Series:
    """One estimator's values across layers (a line with error bars)."""

    label: str
    "Measure name, with its variant when not the defaults."
    family: str
    layers: list[str]
    values: list[float | None]
    err_low: list[float | None]
    "Distance from value down to the interval's low end (or stderr), None when unknown."
    err_high: list[float | None]
    n: list[int | None]


@dataclass(frozen=True)
class Matrix:
    """A pair measure over layers: ``values[i][j]`` compares ``layers[i]`` and ``layers[j]``."""

    label: str
    layers: list[str]
    values: np.ndarray
    "(L, L) with NaN where not computed."
    hover: list[list[str]]
    "Per-cell text: value, interval, p-value, n."
    higher_is_better: bool | None
    stats: dict[str, float]
    "Summary numbers (mean off-diagonal, mean adjacent-layer value)."


@dataclass(frozen=True)
class TrainingSeries:
    """One scalar measure over the checkpoints of a sweep: a line per layer."""

    label: str
    "Measure name, with its variant when not the defaults."
    family: str
    checkpoints: list[str]
    "Checkpoint names in training order."
    steps: list[int | None]
    "Training step of each checkpoint (None when its name has no number)."
    lines: dict[str, list[float | None]]
    "layer -> value at each checkpoint (None where missing or failed), in layer order."


@dataclass(frozen=True)
class CheckpointView:
    """The per-layer content of one checkpoint of a sweep (what the report's checkpoint picker
    switches between)."""

    name: str
    step: int | None
    series: list[Series]
    matrices: list[Matrix]
    spectra: dict[str, dict[str, np.ndarray]]
    local: dict[str, dict[str, np.ndarray]]
    n_results: int


@dataclass(frozen=True)
class ReportData:
    """The content of a report; empty lists mean 'not run' and render as empty states."""

    db_path: str
    layers: list[str]
    series: list[Series]
    matrices: list[Matrix]
    spectra: dict[str, dict[str, np.ndarray]]
    "measure label -> {layer: eigenvalues, descending}."
    local: dict[str, dict[str, np.ndarray]]
    "measure label -> {layer: per-point values}."
    failures: list[dict[str, str]]
    skipped: list[dict[str, str]]
    provenance: dict[str, Any]
    plan: dict[str, Any]
    run: dict[str, Any]
    n_results: int
    n_other_sources: int = 0
    "Results in the database from other stores or row selections, not shown."
    registered: dict[str, list[str]] = field(default_factory=dict)
    "family -> registered measure names (for empty states)."
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    "The sweep's checkpoints (name, step, store, source_id); empty outside a sweep."
    training: list[TrainingSeries] = field(default_factory=list)
    "Scalar measures over checkpoints; only with more than one checkpoint."
    views: list[CheckpointView] = field(default_factory=list)
    "Every checkpoint's results in training order; only with more than one checkpoint."


def _label(measure: str, variant: str | None) -> str:
    return f"{measure} ({variant})" if variant else measure


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _decode(text: Any) -> Any:
    from repscope.results import _from_jsonable

    if not isinstance(text, str):
        return {}
    return _from_jsonable(json.loads(text))


def _registered() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in registry.specs():
        out.setdefault(spec.family, []).append(spec.name)
    return out


def gather(db_path: str | Path, run_id: str | None = None) -> ReportData:
    """Collect the report's content for ``run_id`` (default: the latest run) from the database.

    Results are those of the run's store and row selection, whichever run computed them.
    """
    from repscope.analysis.db import ResultsDB, load_results, load_runs

    db = ResultsDB.at(db_path)
    runs = load_runs(db.path)
    if runs.empty:
        raise ValueError(f"The database {str(db.path)!r} holds no runs; run 'repscope analyze'.")
    if run_id is None:
        run = runs.iloc[-1]
    else:
        hit = runs[runs["run_id"] == run_id]
        if hit.empty:
            raise ValueError(f"Unknown run id {run_id!r}; the database has {list(runs['run_id'])}.")
        run = hit.iloc[0]
    plan = json.loads(run["plan"]) if isinstance(run["plan"], str) else {}
    prov = json.loads(run["provenance"]) if isinstance(run["provenance"], str) else {}
    df = load_results(db.path, status=None)
    source_id = plan.get("source", {}).get("source_id")
    digest = plan.get("rows", {}).get("digest")
    mine = (df["source_id"] == source_id) & (df["rows_hash"] == digest)
    checkpoints = list(plan.get("checkpoints") or [])
    sweep = df["source_id"].isin([c.get("source_id") for c in checkpoints]) & \
        (df["rows_hash"] == digest)
    other = int((~(mine | sweep)).sum())
    training = _training(df[sweep & (df["status"] == "ok") & (df["kind"] == "single")],
                         checkpoints, plan.get("layers") or []) if len(checkpoints) > 1 else []
    views = _views(df[sweep & (df["status"] == "ok")], checkpoints,
                   list(plan.get("layers") or _layer_order(df[sweep]))) if len(checkpoints) > 1 else []
    df = df[mine]
    layers = list(plan.get("layers") or _layer_order(df))
    ok = df[df["status"] == "ok"]
    return ReportData(
        db_path=str(db.path), layers=layers,
        series=_series(ok[ok["kind"] == "single"], layers),
        matrices=_matrices(ok[ok["kind"] == "pair"], layers),
        spectra=_arrays(ok, "eigenvalues"), local=_arrays(ok, "local"),
        failures=[{"measure": _label(r.measure, r.variant), "layer": _pair_name(r),
                   "error": str(r.error or "").strip().splitlines()[0] if r.error else ""}
                  for r in df[df["status"] != "ok"].itertuples()],
        skipped=list(plan.get("skipped", [])), provenance=prov, plan=plan,
        run={k: (str(run[k]) if run[k] is not None else None) for k in run.index
             if k not in ("plan", "provenance")},
        n_results=int(len(ok)), n_other_sources=other, registered=_registered(),
        checkpoints=checkpoints, training=training, views=views,
    )


def _views(ok: Any, checkpoints: list[dict[str, Any]], layers: list[str]) -> list[CheckpointView]:
    """One :class:`CheckpointView` per checkpoint, from its successful results."""
    views = []
    for c in checkpoints:
        df = ok[ok["source_id"] == c.get("source_id")]
        views.append(CheckpointView(
            str(c.get("name")), None if c.get("step") is None else int(c["step"]),
            _series(df[df["kind"] == "single"], layers), _matrices(df[df["kind"] == "pair"], layers),
            _arrays(df, "eigenvalues"), _arrays(df, "local"), int(len(df))))
    return views


def _training(df: Any, checkpoints: list[dict[str, Any]], layers: list[str]
              ) -> list[TrainingSeries]:
    """Scalar results of a sweep as value-vs-checkpoint lines, one per layer."""
    order = {c.get("source_id"): i for i, c in enumerate(checkpoints)}
    names = [str(c.get("name")) for c in checkpoints]
    steps = [None if c.get("step") is None else int(c["step"]) for c in checkpoints]
    out = []
    for (family, measure, variant), g in df.groupby(["family", "measure", "variant"], sort=True):
        present = set(g["layer"])
        lines = {layer: [None] * len(checkpoints) for layer in layers if layer in present}
        for r in g.itertuples():
            i = order.get(r.source_id)
            if i is not None and r.layer in lines:
                lines[r.layer][i] = _num(r.value)
        if lines:
            out.append(TrainingSeries(_label(measure, variant), family, names, steps, lines))
    return out


def _pair_name(r: Any) -> str:
    return f"{r.layer} x {r.layer_b}" if isinstance(r.layer_b, str) else str(r.layer)


def _layer_order(df: Any) -> list[str]:
    pairs = sorted({(int(i), name) for i, name in zip(df["layer_index"], df["layer"], strict=True)
                    if i == i})
    return [name for _, name in pairs]


def _series(df: Any, layers: list[str]) -> list[Series]:
    out = []
    for (family, measure, variant), g in df.groupby(["family", "measure", "variant"], sort=True):
        by_layer = {r.layer: r for r in g.itertuples()}
        vals, lo, hi, ns = [], [], [], []
        for layer in layers:
            r = by_layer.get(layer)
            v = _num(r.value) if r is not None else None
            vals.append(v)
            ns.append(int(r.n) if r is not None and r.n == r.n else None)
            low, high = (_num(r.ci_low), _num(r.ci_high)) if r is not None else (None, None)
            se = _num(r.stderr) if r is not None else None
            if v is not None and low is not None and high is not None:
                lo.append(max(v - low, 0.0))
                hi.append(max(high - v, 0.0))
            else:
                lo.append(se)
                hi.append(se)
        out.append(Series(_label(measure, variant), family, layers, vals, lo, hi, ns))
    return out


def _matrices(df: Any, layers: list[str]) -> list[Matrix]:
    index = {name: i for i, name in enumerate(layers)}
    out = []
    for (measure, variant), g in df.groupby(["measure", "variant"], sort=True):
        try:
            spec = registry.get(measure)
            symmetric, hib = spec.symmetric, spec.higher_is_better
        except KeyError:
            symmetric, hib = False, None
        L = len(layers)
        M = np.full((L, L), np.nan)  # (L, L)
        hover = [["not computed"] * L for _ in range(L)]
        for r in g.itertuples():
            i, j = index.get(r.layer), index.get(r.layer_b)
            if i is None or j is None or _num(r.value) is None:
                continue
            text = _cell_text(r)
            M[i, j] = r.value
            hover[i][j] = text
            if symmetric and i != j:
                M[j, i] = r.value
                hover[j][i] = text
        out.append(Matrix(_label(measure, variant), layers, M, hover, hib, _matrix_stats(M)))
    return out


def _cell_text(r: Any) -> str:
    parts = [f"{r.layer} x {r.layer_b}", f"value = {r.value:.4g}"]
    if _num(r.ci_low) is not None and _num(r.ci_high) is not None:
        parts.append(f"CI = [{r.ci_low:.4g}, {r.ci_high:.4g}]")
    elif _num(r.stderr) is not None:
        parts.append(f"stderr = {r.stderr:.3g}")
    diag = _decode(r.diagnostics)
    extra = _decode(r.extra)
    diag = diag if isinstance(diag, Mapping) else {}
    extra = extra if isinstance(extra, Mapping) else {}
    for name in ("p_value", "calibrated", "null_mean", "n_perm"):
        v = _num(extra.get(name, diag.get(name)))
        if v is not None:
            parts.append(f"{name} = {v:.3g}")
    if r.n == r.n and r.n is not None:
        parts.append(f"n = {int(r.n)}")
    return "<br>".join(parts)


def _matrix_stats(M: np.ndarray) -> dict[str, float]:
    L = M.shape[0]
    off = M[~np.eye(L, dtype=bool)]
    adj = np.array([M[i, i + 1] for i in range(L - 1)] + [M[i + 1, i] for i in range(L - 1)])
    stats = {}
    if np.isfinite(off).any():
        stats["mean off-diagonal"] = float(np.nanmean(off))
        stats["min off-diagonal"] = float(np.nanmin(off))
    if adj.size and np.isfinite(adj).any():
        stats["mean adjacent layers"] = float(np.nanmean(adj))
    return stats


def _arrays(df: Any, key: str) -> dict[str, dict[str, np.ndarray]]:
    """measure label -> layer -> diagnostics[key] (1-D float arrays) for single measures."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in df[df["kind"] == "single"].itertuples():
        if not isinstance(r.diagnostics, str) or f'"{key}"' not in r.diagnostics:
            continue
        arr = _decode(r.diagnostics).get(key)
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=float).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size:
            out.setdefault(_label(r.measure, r.variant), {})[r.layer] = arr
    return out


def preferred_spectrum(spectra: Mapping[str, Any]) -> str:
    """The measure whose eigenvalues the report plots (several measures carry the same one)."""
    for name in ("spectrum", "eigenspectrum", "pca_spectrum"):
        for label in spectra:
            if label.split(" ")[0] == name:
                return label
    return sorted(spectra)[0]
