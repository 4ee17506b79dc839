"""One self-contained HTML report with interactive plots, readable with no network.

:func:`write_report` renders a results database into ``report.html``: scalar measures across
layers with error bars (one panel per family, one line per estimator), a layer x layer heat map
per pair measure with its statistics, eigenvalue spectra per layer on log-log axes, per-point
(local) distributions per layer, failures, an empty state for every family that was not run,
and the provenance of the run (model, data, hashes, plan, versions, machine). plotly.js is
inlined, so the file opens offline.

Every plot is a ``<div class="rs-plot" data-traces="N">``; when all plots are drawn the page
sets ``document.body.dataset.plotsRendered`` to their number (used by the browser test).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from repscope.feature_pages import FeaturePageInfo, find_feature_pages
from repscope.report.data import (
    FAMILIES,
    Matrix,
    ReportData,
    Series,
    TrainingSeries,
    gather,
    preferred_spectrum,
)

__all__ = ["render_report", "write_report"]

_PALETTE = ["#1f5fa8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d405b", "#8ab17d",
            "#b5651d", "#00a6d6", "#c0392b", "#7f8c8d", "#9b59b6"]
_FONT = "Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def write_report(db_path: str | Path, out: str | Path | None = None, *,
                 run_id: str | None = None) -> Path:
    """Render the database at ``db_path`` (file or results directory) to ``out`` (HTML).

    ``out`` defaults to ``report.html`` next to the database. Returns the written path.
    """
    from repscope._io import atomic_write_text

    data = gather(db_path, run_id)
    out = Path(out) if out is not None else Path(data.db_path).with_name("report.html")
    pages = find_feature_pages(out.parent)  # `repscope sae inspect` pages under the report's dir
    atomic_write_text(out, render_report(data, feature_pages=pages))
    return out


# -- figures (plotly figure dicts) -------------------------------------------------------------


def _base_layout(title: str, **kw: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": "plotly_white", "font": {"family": _FONT, "size": 12},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 80}, "height": 420,
        "legend": {"orientation": "v", "x": 1.01, "y": 1},
        "hoverlabel": {"font": {"family": _FONT}},
    }
    layout.update(kw)
    return layout


def _short(layer: str) -> str:
    """'encoder.layer.3' -> 'layer 3' for tick labels (full names stay in hover text)."""
    parts = layer.split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        return f"{parts[-2]} {parts[-1]}"
    return layer


def family_figure(family: str, series: list[Series]) -> dict[str, Any]:
    """One line per estimator across layers, with error bars from the CI or stderr."""
    traces = []
    for i, s in enumerate(series):
        has_err = any(e is not None for e in s.err_low + s.err_high)
        trace: dict[str, Any] = {
            "type": "scatter", "mode": "lines+markers", "name": s.label,
            "x": [_short(layer) for layer in s.layers], "y": s.values,
            "customdata": [[layer, n] for layer, n in zip(s.layers, s.n, strict=True)],
            "hovertemplate": f"<b>{html.escape(s.label)}</b><br>%{{customdata[0]}}<br>"
                             "value = %{y:.4g}<br>n = %{customdata[1]}<extra></extra>",
            "line": {"color": _PALETTE[i % len(_PALETTE)], "width": 2},
            "marker": {"size": 7}, "connectgaps": False,
        }
        if has_err:
            trace["error_y"] = {"type": "data", "symmetric": False, "visible": True,
                                "array": [e or 0 for e in s.err_high],
                                "arrayminus": [e or 0 for e in s.err_low], "thickness": 1.2}
        traces.append(trace)
    layout = _base_layout(FAMILIES.get(family, family),
                          xaxis={"title": "layer", "type": "category"},
                          yaxis={"title": "value", "zeroline": False})
    if _mixed_scales(series):
        layout["updatemenus"] = [_scale_buttons(series)]
    return {"data": traces, "layout": layout}


def _peak(s: Series) -> float:
    vals = [abs(v) for v in s.values if v is not None]
    return max(vals) if vals and max(vals) > 0 else 1.0


def _mixed_scales(series: list[Series]) -> bool:
    peaks = [_peak(s) for s in series]
    return len(series) > 1 and max(peaks) / min(peaks) > 5


def _scale_buttons(series: list[Series]) -> dict[str, Any]:
    """Buttons switching between raw values and each line divided by its largest |value|."""

    def restyle(scale: bool) -> dict[str, Any]:
        f = [(1 / _peak(s) if scale else 1.0) for s in series]
        return {
            "y": [[None if v is None else v * k for v in s.values] for s, k in zip(series, f, strict=True)],
            "error_y.array": [[(e or 0) * k for e in s.err_high] for s, k in zip(series, f, strict=True)],
            "error_y.arrayminus": [[(e or 0) * k for e in s.err_low] for s, k in zip(series, f, strict=True)],
        }

    return {
        "type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.13,
        "yanchor": "top", "showactive": True, "font": {"size": 11},
        "buttons": [
            {"label": "values", "method": "update",
             "args": [restyle(False), {"yaxis.title.text": "value"}]},
            {"label": "scaled to max |value|", "method": "update",
             "args": [restyle(True), {"yaxis.title.text": "value / max |value| of the line"}]},
        ],
    }


def training_figure(ts: TrainingSeries) -> dict[str, Any]:
    """A measure against training step (or checkpoint, when steps are unknown), a line per layer."""
    numeric = all(s is not None for s in ts.steps)
    x = ts.steps if numeric else ts.checkpoints
    traces = []
    for i, (layer, values) in enumerate(ts.lines.items()):
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": _short(layer), "x": x,
            "y": values, "customdata": ts.checkpoints, "connectgaps": False,
            "line": {"color": _layer_color(i, len(ts.lines)), "width": 2}, "marker": {"size": 6},
            "hovertemplate": f"<b>{html.escape(layer)}</b><br>checkpoint %{{customdata}}<br>"
                             "value = %{y:.4g}<extra></extra>",
        })
    layout = _base_layout(ts.label, height=320,
                          xaxis={"title": "training step" if numeric else "checkpoint",
                                 "type": "linear" if numeric else "category"},
                          yaxis={"title": "value", "zeroline": False})
    return {"data": traces, "layout": layout}


def matrix_figure(m: Matrix) -> dict[str, Any]:
    """Heat map of a pair measure over layers, the value written in each cell."""
    z = [[None if not np.isfinite(v) else float(v) for v in row] for row in m.values]
    ticks = [_short(layer) for layer in m.layers]
    trace = {
        "type": "heatmap", "z": z, "x": ticks, "y": ticks, "colorscale": "Viridis",
        "reversescale": m.higher_is_better is False,  # bright = similar, for distances too
        "text": m.hover, "hovertemplate": "%{text}<extra></extra>",
        "texttemplate": "%{z:.2f}", "textfont": {"size": 10},
        "colorbar": {"title": {"text": m.label.split(" ")[0]}, "thickness": 14},
        "xgap": 1, "ygap": 1,
    }
    size = max(380, 48 * len(ticks) + 160)
    layout = _base_layout(m.label, height=size, width=size + 120,
                          xaxis={"title": "layer", "type": "category", "constrain": "domain"},
                          yaxis={"title": "layer", "type": "category", "autorange": "reversed",
                                 "scaleanchor": "x"},
                          margin={"l": 90, "r": 20, "t": 50, "b": 90})
    return {"data": [trace], "layout": layout}


def spectrum_figure(label: str, spectra: Mapping[str, np.ndarray], layers: list[str]
                    ) -> dict[str, Any]:
    """Eigenvalue against rank for each layer, log-log."""
    traces = []
    for i, layer in enumerate(x for x in layers if x in spectra):
        ev = np.sort(np.asarray(spectra[layer], dtype=float))[::-1]
        ev = ev[ev > ev[0] * 1e-9] if ev.size and ev[0] > 0 else ev[:0]  # drop numerical zeros
        traces.append({
            "type": "scatter", "mode": "lines", "name": _short(layer),
            "x": list(range(1, ev.size + 1)), "y": ev.tolist(),
            "line": {"color": _layer_color(i, len(layers)), "width": 1.8},
            "hovertemplate": f"{html.escape(layer)}<br>rank %{{x}}<br>eigenvalue %{{y:.3g}}"
                             "<extra></extra>",
        })
    layout = _base_layout(f"Covariance eigenvalue spectra (from {label}; values below 1e-9 x "
                          "the largest are not drawn)",
                          xaxis={"title": "rank", "type": "log"},
                          yaxis={"title": "eigenvalue", "type": "log", "exponentformat": "power"})
    return {"data": traces, "layout": layout}


def local_figure(label: str, local: Mapping[str, np.ndarray], layers: list[str]
                 ) -> dict[str, Any]:
    """Distribution of per-point values for each layer (violins with the median)."""
    traces = []
    present = [x for x in layers if x in local]
    for i, layer in enumerate(present):
        vals = np.asarray(local[layer], dtype=float)
        traces.append({
            "type": "violin", "name": _short(layer), "y": np.round(vals, 5).tolist(),
            "box": {"visible": True}, "meanline": {"visible": True}, "points": False,
            "line": {"color": _layer_color(i, len(present)), "width": 1.3},
            "spanmode": "hard", "hoverinfo": "y+name",
        })
    title = f"Per-point distribution: {label}"
    yaxis: dict[str, Any] = {"title": "local value", "zeroline": False}
    both = np.concatenate([np.asarray(local[x], dtype=float) for x in present]) if present \
        else np.zeros(0)
    if both.size:
        lo, hi = np.quantile(both, [0.01, 0.99])
        if both.max() - both.min() > 3 * (hi - lo) > 0:  # long tails would flatten the violins
            pad = 0.05 * (hi - lo)
            yaxis["range"] = [float(lo - pad), float(hi + pad)]
            title += " (axis: 1-99 % of the values; zoom out for the tails)"
    layout = _base_layout(title, showlegend=False,
                          xaxis={"title": "layer", "type": "category"}, yaxis=yaxis)
    return {"data": traces, "layout": layout}


def _layer_color(i: int, n: int) -> str:
    """A sequential colour from dark blue (first layer) to yellow (last layer)."""
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = i / max(n - 1, 1) * (len(stops) - 1)
    k = min(int(t), len(stops) - 2)
    a, b, f = stops[k], stops[k + 1], t - k
    return "rgb({},{},{})".format(*(round(a[c] + (b[c] - a[c]) * f) for c in range(3)))


# -- HTML --------------------------------------------------------------------------------------


class _Page:
    """Accumulates sections and figures; renders the final document."""

    def __init__(self, prefix: str = "", figures: list[dict[str, Any]] | None = None) -> None:
        self.prefix = prefix
        "Prepended to plot ids (one sub-page per checkpoint shares the figure list)."
        self.figures: list[dict[str, Any]] = [] if figures is None else figures
        self.sections: list[tuple[str, str, str]] = []  # (id, title, html)

    def plot(self, fig: dict[str, Any], plot_id: str) -> str:
        plot_id = self.prefix + plot_id
        self.figures.append({"id": plot_id, **fig})
        n = len(fig["data"])
        return (f'<div class="rs-plot" id="{plot_id}" data-traces="{n}" '
                f'data-kind="{fig["data"][0]["type"] if n else "none"}"></div>')

    def section(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))


def _empty(message: str, hint: str = "") -> str:
    hint_html = f'<div class="hint">{hint}</div>' if hint else ""
    return f'<div class="empty"><div class="empty-title">{message}</div>{hint_html}</div>'


def _code(names: list[str]) -> str:
    return ", ".join(f"<code>{html.escape(n)}</code>" for n in names)


def _not_run_hint(family: str, data: ReportData) -> str:
    names = data.registered.get(family, [])
    if not names:
        return "No measure of this family is registered in this installation."
    example = names[0]
    labels = " --labels COLUMN" if family == "classes" else ""
    return (f"Registered: {_code(names)}. Run one with "
            f"<code>repscope analyze --measures {html.escape(example)}{labels}</code>.")


def _scalar_sections(page: _Page, data: ReportData) -> None:
    by_family: dict[str, list[Series]] = {}
    for s in data.series:
        by_family.setdefault(s.family, []).append(s)
    parts = []
    for family, title in FAMILIES.items():
        if family == "similarity":
            continue
        series = by_family.get(family)
        if series:
            parts.append(page.plot(family_figure(family, series), f"plot-family-{family}"))
        else:
            parts.append(f"<h3>{html.escape(title)}</h3>"
                         + _empty("Not run.", _not_run_hint(family, data)))
    for family in sorted(set(by_family) - set(FAMILIES)):
        parts.append(page.plot(family_figure(family, by_family[family]), f"plot-family-{family}"))
    note = ("<p class='note'>Error bars: the estimator's confidence interval where it reports "
            "one, else &plusmn; one standard error. Values of different estimators are not "
            "always on the same scale; see <code>docs/</code> for which are comparable "
            "across widths.</p>")
    page.section("scalars", "Measures across layers", note + "".join(parts))


def _training_section(page: _Page, data: ReportData) -> None:
    if not data.training:
        if len(data.checkpoints) > 1:
            msg = "The checkpoints of this sweep have no scalar results yet."
        elif data.checkpoints:
            msg = "This sweep has a single checkpoint: nothing to draw over training."
        else:
            msg = "Not a checkpoint sweep."
        body = _empty(msg, "Analyse every checkpoint of a training run with one plan: "
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
            parts.append(f"<h3>{html.escape(FAMILIES.get(family, family))}</h3><div class='grid2'>"
                         + "".join(page.plot(training_figure(ts), f"plot-training-{family}-{i}")
                                   for i, ts in enumerate(by_family[family])) + "</div>")
        body = note + "".join(parts)
    page.section("training", "Over training", body)


def _similarity_section(page: _Page, data: ReportData) -> None:
    if not data.matrices:
        body = _empty("No layer x layer similarity was computed.",
                      _not_run_hint("similarity", data))
    else:
        blocks = []
        for i, m in enumerate(data.matrices):
            stats = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.4g}</td></tr>"
                            for k, v in m.stats.items())
            direction = {True: "higher = more similar", False: "lower = more similar",
                         None: ""}[m.higher_is_better]
            blocks.append(
                f'<div class="matrix">{page.plot(matrix_figure(m), f"plot-sim-{i}")}'
                f'<div class="stats"><h4>{html.escape(m.label)}</h4>'
                f'<p class="note">{direction}. Hover a cell for its interval and n (and the '
                f'permutation p-value with <code>--permutations N</code>).</p>'
                f"<table>{stats}</table></div></div>")
        body = "".join(blocks)
    page.section("similarity", "Layer x layer similarity", body)


def _spectra_section(page: _Page, data: ReportData) -> None:
    if not data.spectra:
        body = _empty("No eigenvalue spectra in the results.",
                      "Spectra come from measures that report diagnostics['eigenvalues'] "
                      "(family 'spectrum'). " + _not_run_hint("spectrum", data))
    else:
        label = preferred_spectrum(data.spectra)
        body = page.plot(spectrum_figure(label, data.spectra[label], data.layers), "plot-spectra")
    page.section("spectra", "Eigenvalue spectra", body)


def _local_section(page: _Page, data: ReportData) -> None:
    if not data.local:
        body = _empty("No per-point (local) estimates in the results.",
                      "They come from measures that report diagnostics['local']. "
                      + _not_run_hint("local_dimension", data))
    else:
        body = "".join(page.plot(local_figure(label, data.local[label], data.layers),
                                 f"plot-local-{i}") for i, label in enumerate(sorted(data.local)))
    page.section("local", "Local distributions per layer", body)


def _fmt(v: float | None) -> str:
    return "&ndash;" if v is None else f"{v:.4g}"


def _table_section(page: _Page, data: ReportData) -> None:
    if not data.series:
        page.section("table", "Results table", _empty("No scalar results."))
        return
    head = "".join(f"<th>{html.escape(_short(x))}</th>" for x in data.layers)
    rows = "".join(
        f"<tr><td class='name'>{html.escape(s.label)}</td><td>{html.escape(s.family)}</td>"
        + "".join(f"<td>{_fmt(v)}</td>" for v in s.values) + "</tr>"
        for s in sorted(data.series, key=lambda s: (list(FAMILIES).index(s.family)
                                                     if s.family in FAMILIES else 99, s.label)))
    page.section("table", "Results table",
                 f"<div class='scroll'><table class='grid'><thead><tr><th>measure</th>"
                 f"<th>family</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def _status_section(page: _Page, data: ReportData) -> None:
    parts = []
    if data.failures:
        rows = "".join(f"<tr><td>{html.escape(f['measure'])}</td><td>{html.escape(f['layer'])}"
                       f"</td><td><code>{html.escape(f['error'])}</code></td></tr>"
                       for f in data.failures)
        parts.append(f"<h3>Failed ({len(data.failures)})</h3><table class='grid'><thead><tr>"
                     f"<th>measure</th><th>layer</th><th>error</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    else:
        parts.append("<p>No measure failed.</p>")
    if data.skipped:
        rows = "".join(f"<tr><td><code>{html.escape(s['measure'])}</code></td>"
                       f"<td>{html.escape(s['reason'])}</td></tr>" for s in data.skipped)
        parts.append(f"<details><summary>Registered measures not run ({len(data.skipped)})"
                     f"</summary><table class='grid'><tbody>{rows}</tbody></table></details>")
    if data.n_other_sources:
        parts.append(f"<p class='note'>{data.n_other_sources} result(s) in the database come "
                     "from other stores or row selections and are not shown.</p>")
    page.section("status", "Run status", "".join(parts))


def _kv(rows: Mapping[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_show(v))}</td></tr>"
                   for k, v in rows.items() if v not in (None, "", {}))
    return f"<table class='kv'>{body}</table>"


def _show(v: Any) -> str:
    if isinstance(v, Mapping | list):
        return json.dumps(v, default=str)
    return str(v)


def _provenance_section(page: _Page, data: ReportData) -> None:
    src = data.plan.get("source", {})
    rows = data.plan.get("rows", {})
    run = data.run
    source = {
        "model": src.get("model"), "model hash": src.get("model_hash"),
        "data": src.get("data"), "data hash": src.get("data_hash"),
        "checkpoint": src.get("checkpoint"), "pooling": src.get("pooling"),
        "store": src.get("store"), "store content id": src.get("source_id"),
        "rows in store": src.get("n_rows"),
        "rows analysed": f"{rows.get('n')} (seed {rows.get('seed')}, digest {rows.get('digest')})",
        "run id": run.get("run_id"), "started": run.get("started_at"),
        "finished": run.get("finished_at"), "status": run.get("status"),
        "database": data.db_path,
    }
    prov = data.provenance
    plan_json = html.escape(json.dumps(data.plan, indent=2, default=str))
    manifest = html.escape(json.dumps(prov.get("manifest", {}), indent=2, default=str))
    body = (f"<div class='cols'><div><h3>Source</h3>{_kv(source)}</div>"
            f"<div><h3>Versions</h3>{_kv(prov.get('versions', {}))}"
            f"<h3>Machine</h3>{_kv(prov.get('machine', {}))}</div></div>"
            f"<details><summary>Resolved plan (plan.json)</summary><pre>{plan_json}</pre></details>"
            f"<details><summary>Store manifest</summary><pre>{manifest}</pre></details>")
    page.section("provenance", "Provenance", body)


def _features_section(page: _Page, pages: Sequence[FeaturePageInfo]) -> None:
    """Links to the sparse-feature pages (``repscope sae inspect``) under the report's directory."""
    if not pages:
        return
    head = ("<tr><th>feature page</th><th>layer</th><th>architecture</th><th>d_in</th>"
            "<th>d_sae</th><th>FVU</th><th>L0</th><th>SAE</th></tr>")
    body = []
    for p in pages:
        s = p.summary
        text = [html.escape("" if s.get(k) is None else str(s.get(k)))
                for k in ("layer", "architecture", "d_in", "d_sae")]
        cells = [*text, *(_fmt(_number(s.get(k))) for k in ("fvu", "l0_mean")),
                 html.escape(str(s.get("sae") or ""))]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        body.append(f"<tr><td class='name'><a class='feature-page' href='{html.escape(p.href)}'>"
                    f"{html.escape(p.title)}</a></td>{tds}</tr>")
    page.section("features", "Sparse features",
                 "<p class='note'>Sparse-autoencoder feature pages (<code>repscope sae inspect</code>) "
                 "found next to this report: top-activating inputs per latent. FVU and L0 on the "
                 "rows the page inspected.</p>"
                 f"<div class='scroll'><table class='grid'>{head}{''.join(body)}</table></div>")


def _number(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _per_checkpoint(page: _Page, data: ReportData,
                    section: Callable[[_Page, ReportData], None]) -> None:
    """``section`` as is, or in a sweep once per checkpoint, each in a ``ckpt-view`` block of
    which the picker shows one (the last checkpoint at first)."""
    if not data.views:
        section(page, data)
        return
    titles: dict[str, str] = {}
    bodies: dict[str, list[str]] = {}
    last = len(data.views) - 1
    for i, view in enumerate(data.views):
        sub = _Page(prefix=f"ckpt{i}-", figures=page.figures)
        section(sub, replace(data, series=view.series, matrices=view.matrices,
                             spectra=view.spectra, local=view.local, n_results=view.n_results))
        for sid, title, body in sub.sections:
            titles[sid] = title
            hidden = "" if i == last else " hidden"
            bodies.setdefault(sid, []).append(
                f"<div class='ckpt-view' data-ckpt='{i}'{hidden}>"
                f"<p class='note ckpt-label'>Checkpoint <b>{html.escape(view.name)}</b>"
                f"{'' if view.step is None else f' (step {view.step})'}</p>{body}</div>")
    for sid, title in titles.items():
        page.section(sid, title, "".join(bodies[sid]))


def _checkpoint_picker(data: ReportData) -> str:
    if not data.views:
        return ""
    options = "".join(
        f"<option value='{i}'{' selected' if i == len(data.views) - 1 else ''}>"
        f"{html.escape(v.name)}{'' if v.step is None else f' (step {v.step})'}</option>"
        for i, v in enumerate(data.views))
    return (f"<label class='picker'>Checkpoint <select id='rs-ckpt' "
            f"aria-label='Checkpoint shown'>{options}</select></label>")


def _header(data: ReportData) -> str:
    src = data.plan.get("source", {})
    rows = data.plan.get("rows", {})
    cards = {
        "layers": len(data.layers), "rows per layer": rows.get("n", "?"),
        "results": data.n_results, "failed": len(data.failures),
        "measures": len({s.label for s in data.series} | {m.label for m in data.matrices}),
    }
    card_html = "".join(f"<div class='card'><div class='num'>{v}</div><div class='lbl'>{k}</div>"
                        f"</div>" for k, v in cards.items())
    subtitle = " &middot; ".join(html.escape(str(x)) for x in (
        src.get("model"), src.get("data"),
        f"pooling {src['pooling']}" if src.get("pooling") else None,
        f"run {data.run.get('run_id')}") if x)
    return (f"<header><div class='brand'>repscope report</div><div class='sub'>{subtitle}</div>"
            f"<div class='cards'>{card_html}</div></header>")


def render_report(data: ReportData, *, feature_pages: Sequence[FeaturePageInfo] = ()) -> str:
    """The complete HTML document for ``data`` (plotly.js inlined); ``feature_pages`` adds a
    "Sparse features" section linking to them."""
    from plotly.offline import get_plotlyjs
    from plotly.utils import PlotlyJSONEncoder

    from repscope._version import __version__

    page = _Page()
    _per_checkpoint(page, data, _scalar_sections)
    _training_section(page, data)
    for section in (_similarity_section, _spectra_section, _local_section, _table_section):
        _per_checkpoint(page, data, section)
    _features_section(page, feature_pages)
    _status_section(page, data)
    _provenance_section(page, data)
    nav = "".join(f"<a href='#{sid}'>{html.escape(title)}</a>" for sid, title, _ in page.sections)
    nav += _checkpoint_picker(data)
    sections = "".join(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{body}</section>"
                       for sid, title, body in page.sections)
    figs = json.dumps(page.figures, cls=PlotlyJSONEncoder).replace("</", "<\\/")
    return _TEMPLATE.format(
        title=html.escape(f"repscope report: {data.plan.get('source', {}).get('model', '')}"),
        css=_CSS, header=_header(data), nav=nav, sections=sections, plotly=get_plotlyjs(),
        figures=figs, version=html.escape(__version__),
    )


_CSS = """
:root { --ink:#1d2433; --muted:#5b6577; --line:#e3e7ee; --bg:#f6f8fb; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font-family:""" + _FONT + """; color:var(--ink); background:var(--bg);
       font-size:14px; line-height:1.5; }
header { background:linear-gradient(120deg,#16325c,#1f5fa8); color:#fff; padding:28px 40px 22px; }
.brand { font-size:24px; font-weight:700; letter-spacing:.2px; }
.sub { opacity:.85; margin-top:4px; }
.cards { display:flex; gap:14px; margin-top:18px; flex-wrap:wrap; }
.card { background:rgba(255,255,255,.12); border-radius:10px; padding:10px 16px; min-width:110px; }
.card .num { font-size:22px; font-weight:700; } .card .lbl { font-size:12px; opacity:.85; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
      padding:10px 40px; display:flex; gap:22px; flex-wrap:wrap; }
nav a { color:var(--accent); text-decoration:none; font-weight:600; font-size:13px; }
nav .picker { margin-left:auto; font-size:13px; color:var(--muted); }
nav select { font:inherit; margin-left:6px; }
main { max-width:1280px; margin:0 auto; padding:10px 40px 60px; }
section { background:#fff; border:1px solid var(--line); border-radius:12px; padding:18px 24px;
          margin:22px 0; box-shadow:0 1px 2px rgba(16,24,40,.04); }
h2 { margin:0 0 12px; font-size:18px; } h3 { font-size:15px; margin:18px 0 8px; }
h4 { margin:4px 0; }
.rs-plot { width:100%; min-height:380px; }
.matrix { display:flex; gap:24px; align-items:flex-start; flex-wrap:wrap;
          border-top:1px solid var(--line); padding-top:12px; margin-top:12px; }
.matrix:first-child { border-top:0; margin-top:0; }
.matrix .rs-plot { width:auto; flex:0 0 auto; } .stats { flex:1 1 260px; max-width:420px; }
.empty { border:1px dashed #c5ccd8; border-radius:10px; padding:18px; background:#fafbfd;
         color:var(--muted); margin:8px 0 16px; }
.empty-title { font-weight:600; color:var(--ink); } .hint { margin-top:4px; }
.note { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; } td, th { padding:4px 10px; text-align:left; }
table.grid { width:100%; font-size:13px; } table.grid th { background:#f1f4f9; }
table.grid td, table.grid th { border-bottom:1px solid var(--line); }
table.grid td { font-variant-numeric:tabular-nums; } td.name { font-weight:600; }
table.kv th { color:var(--muted); font-weight:500; white-space:nowrap; vertical-align:top; }
table.kv td { word-break:break-all; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(520px, 1fr)); gap:8px 18px; }
.grid2 .rs-plot { min-height:300px; }
.scroll { overflow-x:auto; } .cols { display:grid; grid-template-columns:1fr 1fr; gap:24px; }
code { background:#f1f4f9; padding:1px 5px; border-radius:4px; font-size:12.5px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:8px; overflow:auto;
      max-height:420px; font-size:12px; }
summary { cursor:pointer; font-weight:600; margin:10px 0; }
footer { text-align:center; color:var(--muted); font-size:12px; padding:20px; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style>
<script type="text/javascript">{plotly}</script>
</head><body>
{header}
<nav>{nav}</nav>
<main>{sections}</main>
<footer>Generated by repscope {version}. Self-contained: opens without a network.</footer>
<script type="text/javascript">
(function () {{
  const figures = {figures};
  const config = {{responsive: true, displaylogo: false}};
  Promise.all(figures.map(f => Plotly.newPlot(f.id, f.data, f.layout, config)))
    .then(() => {{ document.body.dataset.plotsRendered = String(figures.length); }});
  const picker = document.getElementById('rs-ckpt');
  if (picker) {{
    picker.addEventListener('change', () => {{
      document.querySelectorAll('.ckpt-view').forEach(v => {{
        v.hidden = v.dataset.ckpt !== picker.value;
      }});
      document.querySelectorAll('.ckpt-view:not([hidden]) .rs-plot')
        .forEach(el => Plotly.Plots.resize(el));
      document.body.dataset.checkpoint = picker.value;
    }});
  }}
}})();
</script>
</body></html>
"""
