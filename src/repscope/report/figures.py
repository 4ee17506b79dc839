"""Static figures for papers (matplotlib, Agg backend): the report's plots as PNG/PDF/SVG files.

:func:`write_figures` draws, from a results database, one figure per family of scalar measures
across layers (one panel per unit and order of magnitude, as in the HTML report, error bars with
their kind and level in the legend), one heat map per pair measure (shared colour range, cell
text black or white by the luminance of the cell's own colour), the eigenvalue spectra per layer
(log-log), the per-point distributions per layer and, for a checkpoint sweep, each scalar
measure against the training step (one line per layer); it returns the written paths and writes
``captions.md`` beside them with each figure's caption (the HTML report's). PDFs and PostScript
embed TrueType (Type 42) fonts, as journals ask, never Type 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from repscope.report.data import FAMILIES, ReportData, gather, preferred_spectrum
from repscope.report.plots import local_axis, scale_groups, unit_of, value_range
from repscope.report.sections import (
    SPECTRA_CAPTION,
    family_caption,
    local_caption,
    matrix_caption,
    matrix_ranges,
)

__all__ = ["write_figures"]

FORMATS = ("png", "pdf", "svg")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight",
                         "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"})
    return plt


def _short(layer: str) -> str:
    parts = layer.split(".")
    return f"{parts[-2]} {parts[-1]}" if len(parts) >= 2 and parts[-1].isdigit() else layer


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:80]


def _plain(text: str) -> str:
    """A caption without its HTML markup."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _save(plt: Any, drawn: tuple[Any, str], out_dir: Path, name: str, formats: Sequence[str],
          captions: dict[str, str]) -> list[Path]:
    fig, caption = drawn
    captions[name] = _plain(caption)
    meta = {"pdf": {"Subject": captions[name], "Creator": "repscope"},
            "svg": {"Description": captions[name]}}
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, metadata=meta.get(fmt))
        paths.append(path)
    plt.close(fig)
    return paths


def _family(plt: Any, data: ReportData, family: str) -> tuple[Any, str]:
    series = sorted((s for s in data.series if s.family == family),
                    key=lambda s: (not any(s.notes), s.label))
    groups = scale_groups(series)
    fig, axes = plt.subplots(len(groups), 1, figsize=(6.0, 0.4 + 3.0 * len(groups)),
                             sharex=True, squeeze=False)
    x = np.arange(len(data.layers))
    for ax, group in zip(axes[:, 0], groups, strict=True):
        handles, labels = [], []
        for s in group:
            y = np.array([np.nan if v is None else v for v in s.values], dtype=float)
            lo = np.array([0.0 if e is None else e for e in s.err_low])
            hi = np.array([0.0 if e is None else e for e in s.err_high])
            has_err = bool(np.any(lo) or np.any(hi))
            handles.append(ax.errorbar(x, y, yerr=np.vstack([lo, hi]) if has_err else None,
                                       marker="o", ms=4, capsize=2.5, lw=1.5))
            labels.append(f"{s.label} ({s.interval})")
        units = [u for u in dict.fromkeys(unit_of(s.measure or s.label, s.params) for s in group)
                 if u]
        ax.set_ylabel(f"value ({', '.join(units)})" if units else "value")
        rng = value_range(group)
        if rng is not None and rng[2]:  # very wide intervals are cut at the axis edge
            ax.set_ylim(rng[0], rng[1])
        ax.legend(handles, labels, fontsize=7, frameon=False, loc="best")
    axes[-1, 0].set_xticks(x, [_short(layer) for layer in data.layers], rotation=30, ha="right")
    axes[-1, 0].set_xlabel("layer (input to output)")
    axes[0, 0].set_title(FAMILIES.get(family, family))
    return fig, family_caption(family, series, len(groups))


def text_color(rgba: Sequence[float]) -> str:
    """'black' or 'white', whichever reads better on the colour ``rgba`` (WCAG relative
    luminance of the sRGB colour: black on colours lighter than ~0.18).

    >>> text_color((1.0, 1.0, 0.0, 1.0)), text_color((0.27, 0.0, 0.33, 1.0))
    ('black', 'white')
    """
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if lum > 0.179 else "white"


def _matrix(plt: Any, m: Any, zrange: tuple[float, float] | None) -> tuple[Any, str]:
    L = len(m.layers)
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * L, 0.9 + 0.55 * L))
    cmap = "viridis" if m.higher_is_better is not False else "viridis_r"
    vmin, vmax = zrange if zrange is not None else (None, None)
    im = ax.imshow(np.ma.masked_invalid(m.values), cmap=cmap, vmin=vmin, vmax=vmax)
    ticks = [_short(layer) for layer in m.layers]
    ax.set_xticks(range(L), ticks, rotation=45, ha="right")
    ax.set_yticks(range(L), ticks)
    ax.set_xlabel("layer (column)")
    ax.set_ylabel("layer (row)")
    ax.grid(False)
    for i in range(L):
        for j in range(L):
            if np.isfinite(m.values[i, j]):
                ax.text(j, i, f"{m.values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color=text_color(im.cmap(im.norm(m.values[i, j]))))
    unit = unit_of(m.measure or m.label)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(m.label + (f" ({unit})" if unit and unit != "unitless" else ""))
    ax.set_title(m.label)
    return fig, matrix_caption(m, zrange)


def _spectra(plt: Any, label: str, spectra: dict[str, np.ndarray], layers: list[str]) -> Any:
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    present = [x for x in layers if x in spectra]
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(present), 1)))
    lines = []
    for layer, color in zip(present, colors, strict=False):
        ev = np.sort(spectra[layer])[::-1]
        ev = ev[ev > ev[0] * 1e-9] if ev.size and ev[0] > 0 else ev[:0]  # drop numerical zeros
        lines += ax.loglog(np.arange(1, ev.size + 1), ev, color=color, lw=1.3)
    ax.set_xlabel("rank of the eigenvalue (1 = largest)")
    ax.set_ylabel("eigenvalue (squared activation units)")
    ax.set_title(f"Eigenvalue spectra ({label})")
    ax.legend(lines, [_short(x) for x in present], fontsize=7, frameon=False)
    return fig, SPECTRA_CAPTION


def _local(plt: Any, data: ReportData, label: str) -> tuple[Any, str]:
    local, layers = data.local[label], data.layers
    s = next((s for s in data.series if s.label == label), None)
    how = str(s.params.get("summary", "median")) if s is not None else "median"
    unit = unit_of(s.measure if s is not None else label.split(" ")[0])
    present = [x for x in layers if x in local]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(present) + 1.5), 3.4))
    parts = ax.violinplot([local[x] for x in present], showmedians=True, showmeans=True,
                          showextrema=False)
    colors = plt.cm.viridis(np.linspace(0, 0.95, max(len(present), 1)))
    for body, color in zip(parts["bodies"], colors, strict=False):
        body.set_facecolor(color)
        body.set_alpha(0.6)
    ax.set_xticks(range(1, len(present) + 1), [_short(x) for x in present], rotation=30,
                  ha="right")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel(f"local value ({unit})" if unit else "local value")
    clip = local_axis([local[x] for x in present])
    if clip is not None:  # long tails would flatten the violins
        ax.set_ylim(*clip)
        ax.set_title(f"Per-point distribution: {label}\n(axis cut at 3 IQR beyond the "
                     "quartiles)", fontsize=9)
    else:
        ax.set_title(f"Per-point distribution: {label}")
    return fig, local_caption(label, how)


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
    unit = unit_of(ts.label.split(" ")[0])
    ax.set_ylabel(f"{ts.label} ({unit})" if unit else ts.label)
    ax.set_title(f"{ts.label} over training")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig, (f"{ts.label} at each checkpoint (x: training step), one line per layer "
                 "(dark = first layer, yellow = last).")


def write_figures(db_path: str | Path, out_dir: str | Path, *,
                  formats: Sequence[str] = ("png", "pdf"), run_id: str | None = None,
                  checkpoint: str | None = None) -> list[Path]:
    """Write static figures for the results at ``db_path`` into ``out_dir``; return the paths.

    Nothing is written for plots without data (e.g. no pair measure was run). In a checkpoint
    sweep the per-layer figures show the last checkpoint, or the one named ``checkpoint``.
    ``captions.md`` in ``out_dir`` gives each figure's caption (also in the PDF's Subject and
    the SVG's description); it is not among the returned paths.
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
    captions: dict[str, str] = {}
    for family in dict.fromkeys(s.family for s in data.series):
        paths += _save(plt, _family(plt, data, family), out_dir, f"family_{family}", formats,
                       captions)
    full = gather(db_path, run_id) if checkpoint is not None else data
    ranges = matrix_ranges(full.matrices + [m for v in full.views for m in v.matrices])
    for m in data.matrices:
        paths += _save(plt, _matrix(plt, m, ranges.get(m.label)), out_dir,
                       f"similarity_{_slug(m.label)}", formats, captions)
    if data.spectra:
        label = preferred_spectrum(data.spectra)
        paths += _save(plt, _spectra(plt, label, data.spectra[label], data.layers), out_dir,
                       "spectra", formats, captions)
    for label in data.local:
        paths += _save(plt, _local(plt, data, label), out_dir, f"local_{_slug(label)}", formats,
                       captions)
    for ts in data.training:
        paths += _save(plt, _training(plt, ts), out_dir, f"training_{_slug(ts.label)}", formats,
                       captions)
    if captions:
        from repscope._io import atomic_write_text

        atomic_write_text(out_dir / "captions.md", "".join(
            f"**{name}**: {text}\n\n" for name, text in captions.items()))
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
