"""The report's interactive figures as plotly figure dicts (no plotly import needed to build them).

Every axis has a title object (``{"text": ...}``: plotly.js ignores a plain string there) with
the unit of what it shows; every trace drawn with error bars names the interval's kind and level
in its legend entry and hover text. Scalar measures of one family are split into panels of one
order of magnitude each (:func:`scale_groups`), so a dimension count of ~200 never flattens a
kNN estimate of ~5 into one band; a panel whose lines still differ in scale gets buttons that
switch between raw values and each line divided by its largest ``|value|``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repscope.report.data import FAMILIES, Matrix, Series, TrainingSeries

__all__ = ["FONT", "family_figure", "local_figure", "matrix_figure", "scale_groups",
           "short_layer", "spectrum_figure", "training_figure", "unit_of", "value_range"]

PALETTE = ["#1f5fa8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d405b", "#8ab17d",
           "#b5651d", "#00a6d6", "#c0392b", "#7f8c8d", "#9b59b6"]
FONT = "Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
#: Lines whose largest |value| differ by more than this factor go to separate panels.
PANEL_RATIO = 8.0
#: Within one panel, lines whose peaks differ by more than this get the rescaling buttons.
BUTTON_RATIO = 3.0


def axis(title: str, **kw: Any) -> dict[str, Any]:
    """An axis with a title object (the form plotly.js reads), plus any other settings."""
    return {"title": {"text": title}, "automargin": True, **kw}


def base_layout(title: str, **kw: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top",
                  "font": {"size": 15}},
        "template": "plotly_white", "font": {"family": FONT, "size": 12},
        "margin": {"l": 70, "r": 20, "t": 86, "b": 70}, "height": 420,
        "legend": {"orientation": "v", "x": 1.01, "y": 1},
        "hoverlabel": {"font": {"family": FONT}},
    }
    layout.update(kw)
    return layout


def short_layer(layer: str) -> str:
    """'encoder.layer.3' -> 'layer 3' for tick labels (full names stay in hover text)."""
    parts = layer.split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        return f"{parts[-2]} {parts[-1]}"
    return layer


def unit_of(measure: str, params: Mapping[str, Any] | None = None) -> str:
    """The registered unit of ``measure`` ('' when unknown or not registered); a ``unit``
    parameter of the call (e.g. entropy in bits or nats) wins."""
    from repscope import registry

    if params and isinstance(params.get("unit"), str):
        return str(params["unit"])
    try:
        return registry.get(measure).unit
    except KeyError:
        return ""


def _peak(s: Series) -> float:
    vals = [abs(v) for v in s.values if v is not None]
    return max(vals) if vals and max(vals) > 0 else 1.0


def scale_groups(series: Sequence[Series], ratio: float = PANEL_RATIO) -> list[list[Series]]:
    """``series`` split into panels of one unit and one order of magnitude: grouped by the
    measures' registered unit, then sorted by largest |value| (descending), a new panel starting
    when a line's peak is below the panel's first peak / ``ratio``. Order inside a panel is kept
    (lines with a verdict, i.e. a recommended estimate, first)."""
    by_unit: dict[str, list[int]] = {}
    for i, s in enumerate(series):
        by_unit.setdefault(unit_of(s.measure or s.label, s.params), []).append(i)
    groups: list[list[int]] = []
    for members in by_unit.values():
        start = len(groups)
        for i in sorted(members, key=lambda i: -_peak(series[i])):
            if len(groups) > start and _peak(series[groups[-1][0]]) / _peak(series[i]) <= ratio:
                groups[-1].append(i)
            else:
                groups.append([i])
    groups.sort(key=min)  # panels in the order of their first line
    return [[series[i] for i in sorted(g)] for g in groups]


def value_range(series: Sequence[Series], reach: float = 1.5) -> tuple[float, float, bool] | None:
    """A y range that shows every value and every interval end within ``reach`` x the values'
    span of them: ``(low, high, cut)``, ``cut`` when some interval reaches beyond (its bar is
    cut at the axis edge, the hover gives its ends). None without values."""
    vals = [v for s in series for v in s.values if v is not None]
    if not vals:
        return None
    vmin, vmax = min(vals), max(vals)
    span = vmax - vmin or 0.1 * max(abs(vmax), 1e-12)
    lows = [v - e for s in series for v, e in zip(s.values, s.err_low, strict=True)
            if v is not None and e is not None]
    highs = [v + e for s in series for v, e in zip(s.values, s.err_high, strict=True)
             if v is not None and e is not None]
    lo = min([vmin, *lows])
    hi = max([vmax, *highs])
    lo_c, hi_c = max(lo, vmin - reach * span), min(hi, vmax + reach * span)
    pad = 0.04 * (hi_c - lo_c)
    return lo_c - pad, hi_c + pad, (lo_c > lo or hi_c < hi)


def _y_title(series: Sequence[Series]) -> str:
    units = list(dict.fromkeys(unit_of(s.measure or s.label, s.params) for s in series))
    units = [u for u in units if u]
    return f"value ({', '.join(units)})" if units else "value"


def family_figure(family: str, series: list[Series], *, title: str | None = None
                  ) -> dict[str, Any]:
    """One line per estimator across layers, error bars from the CI or the standard error; the
    legend entry and hover text name the interval's kind and level."""
    traces = []
    for i, s in enumerate(series):
        has_err = any(e is not None for e in s.err_low + s.err_high)
        lo = [None if v is None or e is None else v - e for v, e in zip(s.values, s.err_low,
                                                                          strict=True)]
        hi = [None if v is None or e is None else v + e for v, e in zip(s.values, s.err_high,
                                                                          strict=True)]
        kind = html.escape(s.interval)
        band = (f"{kind}: [%{{customdata[2]:.4g}}, %{{customdata[3]:.4g}}]<br>" if has_err
                else "no interval computed<br>")
        trace: dict[str, Any] = {
            "type": "scatter", "mode": "lines+markers",
            "name": f"{s.label} ({s.interval})" if has_err else f"{s.label} (no interval)",
            "x": [short_layer(layer) for layer in s.layers], "y": s.values,
            "customdata": [[layer, n, a, b] for layer, n, a, b in
                           zip(s.layers, s.n, lo, hi, strict=True)],
            "hovertemplate": f"<b>{html.escape(s.label)}</b><br>%{{customdata[0]}}<br>"
                             f"value = %{{y:.4g}}<br>{band}n = %{{customdata[1]}}<extra></extra>",
            "line": {"color": PALETTE[i % len(PALETTE)], "width": 2},
            "marker": {"size": 7}, "connectgaps": False,
            "meta": {"interval": s.interval if has_err else "no interval"},
        }
        if has_err:
            trace["error_y"] = {"type": "data", "symmetric": False, "visible": True,
                                "array": [e or 0 for e in s.err_high],
                                "arrayminus": [e or 0 for e in s.err_low], "thickness": 1.2}
        traces.append(trace)
    y_title = _y_title(series)
    yaxis = axis(y_title, zeroline=False)
    rng = value_range(series)
    if rng is not None and rng[2]:  # a few very wide intervals would flatten every line
        yaxis["range"] = [rng[0], rng[1]]
    layout = base_layout(title or FAMILIES.get(family, family),
                         xaxis=axis("layer (input to output)", type="category"),
                         yaxis=yaxis,
                         legend={"orientation": "h", "x": 0, "y": -0.22, "yanchor": "top"},
                         showlegend=True,
                         margin={"l": 70, "r": 20, "t": 86, "b": 40},
                         height=440 + 22 * ((len(series) + 1) // 2))
    if len(series) > 1 and max(map(_peak, series)) / min(map(_peak, series)) > BUTTON_RATIO:
        layout["updatemenus"] = [_scale_buttons(series, y_title, yaxis.get("range"))]
    return {"data": traces, "layout": layout}


def _scale_buttons(series: list[Series], y_title: str, y_range: list[float] | None
                   ) -> dict[str, Any]:
    """Buttons switching between raw values and each line divided by its largest |value|."""

    def restyle(scale: bool) -> dict[str, Any]:
        f = [(1 / _peak(s) if scale else 1.0) for s in series]
        pairs = list(zip(series, f, strict=True))
        return {
            "y": [[None if v is None else v * k for v in s.values] for s, k in pairs],
            "error_y.array": [[(e or 0) * k for e in s.err_high] for s, k in pairs],
            "error_y.arrayminus": [[(e or 0) * k for e in s.err_low] for s, k in pairs],
        }

    return {
        "type": "buttons", "direction": "right", "x": 0.0, "xanchor": "left", "y": 1.02,
        "yanchor": "bottom", "showactive": True, "active": 0, "font": {"size": 11},
        "pad": {"r": 4, "t": 0, "b": 0, "l": 0},
        "buttons": [
            {"label": "values", "method": "update",
             "args": [restyle(False), {"yaxis.title.text": y_title, **(
                 {"yaxis.range": y_range} if y_range else {"yaxis.autorange": True})}]},
            {"label": "scaled to max |value|", "method": "update",
             "args": [restyle(True), {"yaxis.title.text": "value / max |value| of the line",
                                      "yaxis.autorange": True}]},
        ],
    }


def training_figure(ts: TrainingSeries, unit: str = "") -> dict[str, Any]:
    """A measure against training step (or checkpoint, when steps are unknown), a line per layer."""
    numeric = all(s is not None for s in ts.steps)
    x = ts.steps if numeric else ts.checkpoints
    traces = []
    for i, (layer, values) in enumerate(ts.lines.items()):
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": short_layer(layer), "x": x,
            "y": values, "customdata": ts.checkpoints, "connectgaps": False,
            "line": {"color": layer_color(i, len(ts.lines)), "width": 2}, "marker": {"size": 6},
            "hovertemplate": f"<b>{html.escape(layer)}</b><br>checkpoint %{{customdata}}<br>"
                             "value = %{y:.4g}<extra></extra>",
        })
    layout = base_layout(ts.label, height=340,
                         xaxis=axis("training step" if numeric else "checkpoint",
                                    type="linear" if numeric else "category"),
                         yaxis=axis(f"{ts.label} ({unit})" if unit else ts.label,
                                    zeroline=False))
    return {"data": traces, "layout": layout}


def matrix_figure(m: Matrix, zrange: tuple[float, float] | None = None, unit: str = ""
                  ) -> dict[str, Any]:
    """Heat map of a pair measure over layers, the value written in each cell; ``zrange`` fixes
    the colour scale (shared by every heat map of the measure)."""
    z = [[None if not np.isfinite(v) else float(v) for v in row] for row in m.values]
    ticks = [short_layer(layer) for layer in m.layers]
    name = m.label.split(" ")[0]
    trace: dict[str, Any] = {
        "type": "heatmap", "z": z, "x": ticks, "y": ticks, "colorscale": "Viridis",
        "reversescale": m.higher_is_better is False,  # bright = similar, for distances too
        "text": m.hover, "hovertemplate": "%{text}<extra></extra>",
        "texttemplate": "%{z:.2f}", "textfont": {"size": 10},
        "colorbar": {"title": {"text": f"{name} ({unit})" if unit and unit != "unitless"
                               else name}, "thickness": 14},
        "xgap": 1, "ygap": 1,
    }
    if zrange is not None:
        trace["zmin"], trace["zmax"] = zrange
    size = max(400, 48 * len(ticks) + 180)
    layout = base_layout(m.label, height=size, width=size + 130,
                         xaxis=axis("layer (column)", type="category", constrain="domain"),
                         yaxis=axis("layer (row)", type="category", autorange="reversed",
                                    scaleanchor="x"),
                         margin={"l": 90, "r": 20, "t": 60, "b": 90})
    return {"data": [trace], "layout": layout}


def spectrum_figure(label: str, spectra: Mapping[str, np.ndarray], layers: list[str]
                    ) -> dict[str, Any]:
    """Eigenvalue against rank for each layer, log-log."""
    traces = []
    for i, layer in enumerate(x for x in layers if x in spectra):
        ev = np.sort(np.asarray(spectra[layer], dtype=float))[::-1]
        ev = ev[ev > ev[0] * 1e-9] if ev.size and ev[0] > 0 else ev[:0]  # drop numerical zeros
        traces.append({
            "type": "scatter", "mode": "lines", "name": short_layer(layer),
            "x": list(range(1, ev.size + 1)), "y": [float(f"{v:.5g}") for v in ev],
            "line": {"color": layer_color(i, len(layers)), "width": 1.8},
            "hovertemplate": f"{html.escape(layer)}<br>rank %{{x}}<br>eigenvalue %{{y:.3g}}"
                             "<extra></extra>",
        })
    layout = base_layout(f"Covariance eigenvalue spectra (from {label})",
                         xaxis=axis("rank of the eigenvalue (1 = largest)", type="log"),
                         yaxis=axis("eigenvalue (squared activation units)", type="log",
                                    exponentformat="power"))
    return {"data": traces, "layout": layout}


def local_figure(label: str, local: Mapping[str, np.ndarray], layers: list[str], *,
                 summary: str = "median", unit: str = "dimensions") -> dict[str, Any]:
    """Distribution of per-point values for each layer (violins with box, median and mean)."""
    traces = []
    present = [x for x in layers if x in local]
    for i, layer in enumerate(present):
        vals = np.asarray(local[layer], dtype=float)
        traces.append({
            "type": "violin", "name": short_layer(layer), "y": [float(f"{v:.4g}") for v in vals],
            "box": {"visible": True, "width": 0.25}, "meanline": {"visible": True},
            "points": False, "width": 0.9,
            "line": {"color": layer_color(i, len(present)), "width": 1.3},
            "spanmode": "hard", "hoverinfo": "y+name",
        })
    title = f"Per-point distribution: {label}"
    yaxis = axis(f"local value ({unit})" if unit else "local value", zeroline=False)
    clip = local_axis([np.asarray(local[x], dtype=float) for x in present])
    if clip is not None:  # long tails would flatten the violins
        yaxis["range"] = list(clip)
        title += " (axis cut 3 IQR beyond the quartiles; zoom out for the tails)"
    layout = base_layout(title, showlegend=False, violingap=0.05, height=460,
                         xaxis=axis("layer (input to output)", type="category"), yaxis=yaxis,
                         margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return {"data": traces, "layout": layout}


def local_axis(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The y range of per-point violins when long tails would flatten them: Tukey's far-out
    fences ``q25 - 3 IQR`` and ``q75 + 3 IQR``, the widest over the layers (padded) and never
    inside the data's own range where nothing lies beyond; None when no value lies beyond."""
    vals = [v[np.isfinite(v)] for v in values]
    vals = [v for v in vals if v.size]
    if not vals:
        return None
    qs = [np.quantile(v, [0.25, 0.75]) for v in vals]
    lo_f = min(q[0] - 3 * (q[1] - q[0]) for q in qs)
    hi_f = max(q[1] + 3 * (q[1] - q[0]) for q in qs)
    bottom, top = min(float(v.min()) for v in vals), max(float(v.max()) for v in vals)
    if hi_f <= lo_f or (top <= hi_f and bottom >= lo_f):
        return None
    lo, hi = max(lo_f, bottom), min(hi_f, top)
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def layer_color(i: int, n: int) -> str:
    """A sequential colour from dark blue (first layer) to yellow (last layer)."""
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = i / max(n - 1, 1) * (len(stops) - 1)
    k = min(int(t), len(stops) - 2)
    a, b, f = stops[k], stops[k + 1], t - k
    return "rgb({},{},{})".format(*(round(a[c] + (b[c] - a[c]) * f) for c in range(3)))
