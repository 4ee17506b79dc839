"""Static figures for papers (matplotlib, Agg backend): the report's plots as PNG/PDF files.

:func:`write_figures` draws, from a results database, one figure per family of scalar measures
across layers (with error bars), one heat map per pair measure, the eigenvalue spectra per
layer (log-log), the per-point distributions per layer and, for a checkpoint sweep, each scalar
measure against the training step (one line per layer); it returns the written paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from repscope.report.data import FAMILIES, ReportData, gather, preferred_spectrum

__all__ = ["write_figures"]

FORMATS = ("png", "pdf", "svg")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight"})
    return plt


def _short(layer: str) -> str:
    parts = layer.split(".")
    return f"{parts[-2]} {parts[-1]}" if len(parts) >= 2 and parts[-1].isdigit() else layer


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:80]


def _save(plt: Any, fig: Any, out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, format=fmt)
        paths.append(path)
    plt.close(fig)
    return paths


def _family(plt: Any, data: ReportData, family: str) -> Any:
    series = [s for s in data.series if s.family == family]
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    x = np.arange(len(data.layers))
    handles = []
    for s in series:
        y = np.array([np.nan if v is None else v for v in s.values], dtype=float)
        lo = np.array([0.0 if e is None else e for e in s.err_low])
        hi = np.array([0.0 if e is None else e for e in s.err_high])
        handles.append(ax.errorbar(x, y, yerr=np.vstack([lo, hi]), marker="o", ms=4,
                                   capsize=2.5, lw=1.5))
    ax.set_xticks(x, [_short(layer) for layer in data.layers], rotation=30, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel("value")
    ax.set_title(FAMILIES.get(family, family))
    ax.legend(handles, [s.label for s in series], fontsize=7, frameon=False, loc="best")
    return fig


def _matrix(plt: Any, m: Any) -> Any:
    L = len(m.layers)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * L, 0.6 + 0.55 * L))
    cmap = "viridis" if m.higher_is_better is not False else "viridis_r"
    im = ax.imshow(np.ma.masked_invalid(m.values), cmap=cmap)
    ticks = [_short(layer) for layer in m.layers]
    ax.set_xticks(range(L), ticks, rotation=45, ha="right")
    ax.set_yticks(range(L), ticks)
    ax.grid(False)
    for i in range(L):
        for j in range(L):
            if np.isfinite(m.values[i, j]):
                ax.text(j, i, f"{m.values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if im.norm(m.values[i, j]) < 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(m.label)
    return fig


def _spectra(plt: Any, label: str, spectra: dict[str, np.ndarray], layers: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    present = [x for x in layers if x in spectra]
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(present), 1)))
    lines = []
    for layer, color in zip(present, colors, strict=False):
        ev = np.sort(spectra[layer])[::-1]
        ev = ev[ev > ev[0] * 1e-9] if ev.size and ev[0] > 0 else ev[:0]  # drop numerical zeros
        lines += ax.loglog(np.arange(1, ev.size + 1), ev, color=color, lw=1.3)
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"Eigenvalue spectra ({label})")
    ax.legend(lines, [_short(x) for x in present], fontsize=7, frameon=False)
    return fig


def _local(plt: Any, label: str, local: dict[str, np.ndarray], layers: list[str]) -> Any:
    present = [x for x in layers if x in local]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(present) + 1.5), 3.4))
    parts = ax.violinplot([local[x] for x in present], showmedians=True, showextrema=False)
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(present), 1)))
    for body, color in zip(parts["bodies"], colors, strict=False):
        body.set_facecolor(color)
        body.set_alpha(0.6)
    ax.set_xticks(range(1, len(present) + 1), [_short(x) for x in present], rotation=30,
                  ha="right")
    ax.set_ylabel("local value")
    ax.set_title(f"Per-point distribution: {label}")
    return fig


def _training(plt: Any, ts: Any) -> Any:
    """A scalar measure against training step (or checkpoint), one line per layer."""
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    numeric = all(s is not None for s in ts.steps)
    x = np.array(ts.steps, dtype=float) if numeric else np.arange(len(ts.checkpoints))
    cmap = plt.get_cmap("viridis")
    for i, (layer, values) in enumerate(ts.lines.items()):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, y, marker="o", ms=4, lw=1.5, label=_short(layer),
                color=cmap(i / max(len(ts.lines) - 1, 1)))
    if not numeric:
        ax.set_xticks(x, ts.checkpoints, rotation=30, ha="right")
    ax.set_xlabel("training step" if numeric else "checkpoint")
    ax.set_ylabel("value")
    ax.set_title(f"{ts.label} over training")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


def write_figures(db_path: str | Path, out_dir: str | Path, *,
                  formats: Sequence[str] = ("png", "pdf"), run_id: str | None = None,
                  checkpoint: str | None = None) -> list[Path]:
    """Write static figures for the results at ``db_path`` into ``out_dir``; return the paths.

    Nothing is written for plots without data (e.g. no pair measure was run). In a checkpoint
    sweep the per-layer figures show the last checkpoint, or the one named ``checkpoint``.
    """
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise ValueError(f"Figure formats must be a non-empty subset of {list(FORMATS)}; "
                         f"got {list(formats)}.")
    data = _at_checkpoint(gather(db_path, run_id), checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    paths: list[Path] = []
    for family in dict.fromkeys(s.family for s in data.series):
        paths += _save(plt, _family(plt, data, family), out_dir, f"family_{family}", formats)
    for m in data.matrices:
        paths += _save(plt, _matrix(plt, m), out_dir, f"similarity_{_slug(m.label)}", formats)
    if data.spectra:
        label = preferred_spectrum(data.spectra)
        paths += _save(plt, _spectra(plt, label, data.spectra[label], data.layers), out_dir,
                       "spectra", formats)
    for label, local in data.local.items():
        paths += _save(plt, _local(plt, label, local, data.layers), out_dir,
                       f"local_{_slug(label)}", formats)
    for ts in data.training:
        paths += _save(plt, _training(plt, ts), out_dir, f"training_{_slug(ts.label)}", formats)
    return paths


def _at_checkpoint(data: ReportData, checkpoint: str | None) -> ReportData:
    """``data`` with its per-layer content taken from the sweep checkpoint named ``checkpoint``."""
    if checkpoint is None:
        return data
    names = [v.name for v in data.views] or [str(c.get("name")) for c in data.checkpoints]
    view = next((v for v in data.views if v.name == checkpoint), None)
    if view is None:
        known = f"its checkpoints are {names}" if names else "it is not a checkpoint sweep"
        raise ValueError(f"Unknown checkpoint {checkpoint!r} for these results: {known}.")
    return replace(data, series=view.series, matrices=view.matrices, spectra=view.spectra,
                   local=view.local, n_results=view.n_results)
