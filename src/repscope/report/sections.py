"""The report's figure sections: measures across layers, over training, layer x layer
similarity, eigenvalue spectra and per-point distributions.

Each section function takes a :class:`~repscope.report.page.Page` and the
:class:`~repscope.report.data.ReportData` and adds one section; every figure comes with a
caption saying what it plots and how to read it, and every empty family says how to run it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np

from repscope.report.data import FAMILIES, Matrix, ReportData, Series, TrainingSeries
from repscope.report.page import Page, code, empty
from repscope.report.plots import (
    family_figure,
    local_figure,
    matrix_figure,
    scale_groups,
    short_layer,
    spectrum_figure,
    training_figure,
    unit_of,
    value_range,
)

__all__ = ["SPECTRA_CAPTION", "family_caption", "local_caption", "local_section",
           "matrix_caption", "matrix_ranges", "scalar_sections", "similarity_section",
           "spectra_section", "training_section"]

#: How to read a family's panel (what a higher value means); families are the registry's.
READING = {
    "dimension": "Higher = the points spread over more independent directions (a global "
                 "intrinsic or linear dimension).",
    "local_dimension": "Each point's local dimension, summarised over the points (see the "
                       "legend for median or mean). Higher = locally higher-dimensional.",
    "spectrum": "Summaries of the covariance eigenvalue spectrum: ranks and entropies grow "
                "as variance spreads over more directions; a larger power-law exponent means "
                "faster decay.",
    "spread": "Geometry of the cloud as a whole (anisotropy, isotropy, mean share); see each "
              "measure's range in the Measures section.",
    "outliers": "Coordinates or rows that dominate the variance or the norm; higher = more "
                "outliers.",
    "classes": "Label-aware geometry; the Measures section says which direction is better.",
}


def not_run_hint(family: str, data: ReportData) -> str:
    names = data.registered.get(family, [])
    if not names:
        return "No measure of this family is registered in this installation."
    labels = " --labels COLUMN" if family == "classes" else ""
    return (f"Registered: {code(names)}. Run one with "
            f"<code>repscope analyze --measures {html.escape(names[0])}{labels}</code>.")


def _legend_label(s: Series) -> Series:
    """Local-dimension lines say which per-point summary they plot (median by default)."""
    how = s.params.get("summary")
    if s.family == "local_dimension" and isinstance(how, str) and f"({how}" not in s.label:
        from dataclasses import replace

        return replace(s, label=f"{s.label} ({how} over points)")
    return s


def _verdicts(series: list[Series], layers: list[str]) -> str:
    """The sentences a measure wrote for the reader (the recommended ID's verdict), per layer."""
    out = []
    for s in series:
        items = "".join(f"<li><b>{html.escape(short_layer(layer))}</b>: "
                        f"{html.escape(' '.join(notes))}</li>"
                        for layer, notes in zip(layers, s.notes, strict=False) if notes)
        if items:
            out.append(f"<div class='verdict' data-measure='{html.escape(s.label)}'>"
                       f"<b>{html.escape(s.label)}</b>, verdict per layer:<ul>{items}</ul></div>")
    return "".join(out)


def family_caption(family: str, group: list[Series], n_groups: int) -> str:
    kinds = sorted({s.interval for s in group if s.interval != "no interval"})
    none = [s.label for s in group if s.interval == "no interval"]
    bars = (f"Error bars: {html.escape('; '.join(kinds))} (each line's kind in its legend "
            "entry and hover)." if kinds else "No interval was computed for these measures.")
    if none and kinds:
        bars += f" Without interval: {code(none)}."
    split = (" Lines of very different magnitude are drawn in separate panels "
             f"({n_groups} for this family)." if n_groups > 1 else "")
    rng = value_range(group)
    if rng is not None and rng[2]:
        split += (" Error bars longer than the axis are cut at its edge (hover a point for "
                  "its interval).")
    return (f"One line per measure across layers (x: layer, input to output; y: the value in "
            f"its unit). {READING.get(family, '')} {bars}{split}")


def scalar_sections(page: Page, data: ReportData) -> None:
    by_family: dict[str, list[Series]] = {}
    for s in data.series:
        by_family.setdefault(s.family, []).append(_legend_label(s))
    parts = []
    for family in [f for f in FAMILIES if f != "similarity"] + sorted(set(by_family) - set(FAMILIES)):
        title = FAMILIES.get(family, family)
        series = by_family.get(family)
        if not series:
            parts.append(f"<h3>{html.escape(title)}</h3>" + empty("Not run.",
                                                                 not_run_hint(family, data)))
            continue
        # measures with a verdict (the recommended estimate) first, then by name
        series = sorted(series, key=lambda s: (not any(s.notes), s.label))
        groups = scale_groups(series)
        groups.sort(key=lambda g: not any(any(s.notes) for s in g))
        for k, group in enumerate(groups):
            names = ", ".join(s.label for s in group)
            sub = title if len(groups) == 1 else f"{title}: {names}"
            plot_id = f"plot-family-{family}" + (f"-{k + 1}" if k else "")
            parts.append(page.plot(family_figure(family, group, title=sub), plot_id,
                                   family_caption(family, group, len(groups))))
            parts.append(_verdicts(group, data.layers))
    note = ("<p class='note'>Each panel holds measures of one order of magnitude; the "
            "Measures section below defines every measure, its unit, range and the parameters "
            "of this run.</p>")
    page.section("scalars", "Measures across layers", note + "".join(parts))


def training_section(page: Page, data: ReportData) -> None:
    if not data.training:
        if len(data.checkpoints) > 1:
            msg = "The checkpoints of this sweep have no scalar results yet."
        elif data.checkpoints:
            msg = "This sweep has a single checkpoint: nothing to draw over training."
        else:
            msg = "Not a checkpoint sweep."
        body = empty(msg, "Analyse every checkpoint of a training run with one plan: "
                          "<code>repscope analyze --model BASE --checkpoints DIR</code> (a "
                          "directory of state dicts or Hugging Face checkpoint directories).")
    else:
        names = ", ".join(html.escape(str(c.get("name"))) for c in data.checkpoints)
        note = (f"<p class='note'>{len(data.checkpoints)} checkpoints ({names}); one line per "
                "layer. The checkpoint picker in the bar at the top chooses which checkpoint the "
                "other sections show (the last one at first).</p>")
        by_family: dict[str, list[TrainingSeries]] = {}
        for ts in data.training:
            by_family.setdefault(ts.family, []).append(ts)
        order = [f for f in FAMILIES if f in by_family] + sorted(set(by_family) - set(FAMILIES))
        parts = []
        for family in order:
            figs = "".join(
                page.plot(training_figure(ts, unit_of(ts.label.split(" ")[0])),
                          f"plot-training-{family}-{i}",
                          f"{html.escape(ts.label)} at each checkpoint (x: training step), one "
                          "line per layer (dark = first layer, yellow = last).")
                for i, ts in enumerate(by_family[family]))
            parts.append(f"<h3>{html.escape(FAMILIES.get(family, family))}</h3>"
                         f"<div class='grid2'>{figs}</div>")
        body = note + "".join(parts)
    page.section("training", "Over training", body)


def matrix_ranges(matrices: list[Matrix]) -> dict[str, tuple[float, float]]:
    """measure label -> the colour range every heat map of it shares: the registered range when
    finite and holding the values, else the values' range over all the matrices given."""
    values: dict[str, list[np.ndarray]] = {}
    bounds: dict[str, tuple[float | None, float | None]] = {}
    for m in matrices:
        finite = m.values[np.isfinite(m.values)]
        values.setdefault(m.label, []).append(finite)
        bounds[m.label] = m.bounds
    out = {}
    for label, parts in values.items():
        v = np.concatenate(parts) if parts else np.zeros(0)
        lo, hi = bounds[label]
        if lo is not None and hi is not None and np.isfinite([lo, hi]).all() and \
                (v.size == 0 or (v.min() >= lo - 1e-9 and v.max() <= hi + 1e-9)):
            out[label] = (float(lo), float(hi))
        elif v.size:
            out[label] = (float(v.min()), float(v.max()) if v.max() > v.min() else
                          float(v.min()) + 1.0)
    return out


def matrix_caption(m: Matrix, zr: tuple[float, float] | None) -> str:
    direction = {True: "higher = more similar", False: "lower = more similar",
                 None: "see the Measures section for its direction"}[m.higher_is_better]
    scale = (f" Colour scale fixed to [{zr[0]:.3g}, {zr[1]:.3g}] for every heat map of this "
             "measure." if zr else "")
    interval = ("Hover a cell for its value, interval and n." if m.interval != "no interval"
                else "No interval was computed for these cells.")
    return (f"{html.escape(m.label)} between every pair of layers (row x column); "
            f"{direction}.{scale} {interval}")


SPECTRA_CAPTION = ("Covariance eigenvalues against their rank, log-log, one line per layer (dark "
                   "= first, yellow = last). A straight line is a power law; a flatter line "
                   "spreads variance over more directions. Values below 1e-9 x the largest are "
                   "numerical zeros and not drawn.")


def local_caption(label: str, how: str) -> str:
    return (f"Distribution of the per-point values of {html.escape(label)} in each layer: "
            "violin = density, box = quartiles with the median inside, line across the violin "
            f"= mean. The layer curve above plots the {html.escape(how)}.")


def similarity_section(page: Page, data: ReportData,
                       ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
    if not data.matrices:
        body = empty("No layer x layer similarity was computed.",
                     not_run_hint("similarity", data))
        page.section("similarity", "Layer x layer similarity", body)
        return
    ranges = ranges if ranges is not None else matrix_ranges(data.matrices)
    blocks = []
    for i, m in enumerate(data.matrices):
        stats = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.4g}</td></tr>"
                        for k, v in m.stats.items())
        zr = ranges.get(m.label)
        direction = {True: "higher = more similar", False: "lower = more similar",
                     None: "see the Measures section for its direction"}[m.higher_is_better]
        note = matrix_caption(m, zr)
        fig = matrix_figure(m, zr, unit_of(m.measure or m.label))
        blocks.append(
            f'<div class="matrix">{page.plot(fig, f"plot-sim-{i}", note)}'
            f'<div class="stats"><h4>{html.escape(m.label)}</h4>'
            f'<p class="note">{direction}. Interval: {html.escape(m.interval)}. The '
            f'permutation p-value appears in the hover and the results table with '
            f'<code>--permutations N</code>.</p>'
            f"<table>{stats}</table></div></div>")
    page.section("similarity", "Layer x layer similarity", "".join(blocks))


def spectra_section(page: Page, data: ReportData) -> None:
    from repscope.report.data import preferred_spectrum

    if not data.spectra:
        body = empty("No eigenvalue spectra in the results.",
                     "Spectra come from measures that report diagnostics['eigenvalues'] "
                     "(family 'spectrum'). " + not_run_hint("spectrum", data))
    else:
        label = preferred_spectrum(data.spectra)
        body = page.plot(spectrum_figure(label, data.spectra[label], data.layers),
                         "plot-spectra", SPECTRA_CAPTION)
    page.section("spectra", "Eigenvalue spectra", body)


def local_section(page: Page, data: ReportData) -> None:
    if not data.local:
        body = empty("No per-point (local) estimates in the results.",
                     "They come from measures that report diagnostics['local']. "
                     + not_run_hint("local_dimension", data))
    else:
        summaries = {s.label: s for s in data.series}
        parts = []
        for i, label in enumerate(sorted(data.local)):
            s = summaries.get(label)
            how = str(s.params.get("summary", "median")) if s is not None else "median"
            unit = unit_of(s.measure if s is not None else label.split(" ")[0])
            parts.append(page.plot(
                local_figure(label, data.local[label], data.layers, summary=how, unit=unit),
                f"plot-local-{i}", local_caption(label, how)))
        body = "".join(parts)
    page.section("local", "Local distributions per layer", body)
