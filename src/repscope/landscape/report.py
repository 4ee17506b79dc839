"""The landscape report: one self-contained HTML page (plotly.js inlined, opens offline).

:func:`write_landscape_report` renders the sweeps recorded in a results database (or given as
:class:`~repscope.landscape.results.LandscapeResult` objects): a summary table (parameters,
baseline, every ``d_int`` with its per-seed range and its ratio to ``D``), one interactive plot
per sweep (seed-mean curve, every seed's run, the range over seeds, the baseline, the
thresholds and the estimates with their ranges), a plot of all sweeps relative to their own
baselines when there are several, and each sweep's plan. Like the analysis report, every plot
is a ``<div class="rs-plot">`` and the page sets ``document.body.dataset.plotsRendered`` once all
are drawn.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repscope.landscape.figures import X_LABEL, label, y_label
from repscope.landscape.results import LandscapeResult

__all__ = ["render_landscape_report", "write_landscape_report"]

_COLORS = ["#1f5fa8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d405b", "#8ab17d"]
_FONT = "Inter, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def _layout(title: str, y_title: str) -> dict[str, Any]:
    return {"title": {"text": title, "x": 0.01, "font": {"size": 15}},
            "template": "plotly_white", "font": {"family": _FONT, "size": 12}, "height": 440,
            "margin": {"l": 70, "r": 20, "t": 50, "b": 60},
            "xaxis": {"title": {"text": X_LABEL}, "type": "log"},
            "yaxis": {"title": {"text": y_title}, "zeroline": False},
            "legend": {"orientation": "h", "y": -0.2}}


def sweep_figure(res: LandscapeResult, color: str = _COLORS[0]) -> dict[str, Any]:
    """The plotly figure of one sweep."""
    dims = [int(d) for d in res.dims]
    vals = res.values  # (n_d, n_seeds)
    mean = [_num(v) for v in vals.mean(axis=1)]
    low = [_num(v) for v in np.nanmin(vals, axis=1)] if vals.size else []
    high = [_num(v) for v in np.nanmax(vals, axis=1)] if vals.size else []
    traces: list[dict[str, Any]] = [
        {"type": "scatter", "x": dims + dims[::-1], "y": high + low[::-1], "fill": "toself",
         "fillcolor": _rgba(color, 0.14), "line": {"width": 0}, "hoverinfo": "skip",
         "name": "range over seeds"},
        {"type": "scatter", "mode": "markers", "name": "each seed's run",
         "x": [d for d in dims for _ in res.seeds],
         "y": [_num(v) for row in vals for v in row],
         "customdata": [s for _ in dims for s in res.seeds],
         "hovertemplate": "d = %{x}<br>seed %{customdata}<br>%{y:.4g}<extra></extra>",
         "marker": {"size": 5, "color": color, "opacity": 0.45}},
        {"type": "scatter", "mode": "lines+markers", "name": "mean over seeds", "x": dims,
         "y": mean, "line": {"color": color, "width": 2.5}, "marker": {"size": 7},
         "hovertemplate": "d = %{x}<br>mean %{y:.4g}<extra></extra>"},
    ]
    x0, x1 = (min(dims), max(dims)) if dims else (1, 2)
    traces.append({"type": "scatter", "mode": "lines", "x": [x0, x1],
                   "y": [res.baseline_mean] * 2, "name": f"full training (D = {res.n_params:,})",
                   "line": {"color": "#333", "dash": "dash", "width": 1.5}})
    for j, est in enumerate(res.estimates):
        shade = _COLORS[(j + 1) % len(_COLORS)]
        traces.append({"type": "scatter", "mode": "lines", "x": [x0, x1],
                       "y": [est.threshold] * 2, "name": f"threshold of {est.measure}",
                       "line": {"color": shade, "dash": "dot", "width": 1.5}})
        if not est.censored:
            lo, hi = est.ci if est.ci is not None else (est.value, est.value)
            hi = hi if math.isfinite(hi) else x1
            traces.append({"type": "scatter", "mode": "lines+markers",
                           "x": [lo, est.value, hi], "y": [est.threshold] * 3,
                           "name": f"{est.measure} = {est.value:,.0f} (range over seeds "
                                   f"{_range(est.ci)})",
                           "line": {"color": shade, "width": 6}, "opacity": 0.8,
                           "marker": {"size": [0, 12, 0], "symbol": "diamond"}})
    return {"data": traces, "layout": _layout(label(res), res.params.get("metric_label")
                                              or res.metric)}


def relative_figure(results: Sequence[LandscapeResult]) -> dict[str, Any]:
    """All sweeps' seed-mean curves divided by their own baselines (higher-is-better metrics)."""
    traces = []
    for i, res in enumerate(results):
        base = res.baseline_mean
        traces.append({"type": "scatter", "mode": "lines+markers", "name": label(res),
                       "x": [int(d) for d in res.dims],
                       "y": [_num(v / base) for v in res.values.mean(axis=1)],
                       "line": {"color": _COLORS[i % len(_COLORS)], "width": 2}})
    layout = _layout("all sweeps relative to their own full-training baseline",
                     "performance / full-training performance")
    layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": f, "y1": f,
                         "line": {"dash": "dot", "color": "#888"}}
                        for f in sorted({e.fraction for r in results for e in r.estimates})]
    return {"data": traces, "layout": layout}


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _range(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "none reached"
    hi = "not reached by all" if not math.isfinite(ci[1]) else f"{ci[1]:,.0f}"
    return f"{ci[0]:,.0f} to {hi}"


def _summary(results: Sequence[LandscapeResult]) -> str:
    fracs = sorted({e.fraction for r in results for e in r.estimates})
    head = "".join(f"<th>d_int{f * 100:g}</th><th>seed range</th><th>d / D</th>" for f in fracs)
    rows = []
    for r in results:
        cells = []
        for f in fracs:
            est = next((e for e in r.estimates if math.isclose(e.fraction, f)), None)
            if est is None:
                cells.append("<td></td>" * 3)
            elif est.censored:
                cells.append(f"<td>&gt; {est.max_dim:,}</td><td>{_range(est.ci)}</td><td></td>")
            else:
                cells.append(f"<td><b>{est.value:,.0f}</b></td><td>{_range(est.ci)}</td>"
                             f"<td>{est.value / r.n_params:.2e}</td>")
        base = (f"{r.baseline_mean:.4g} ({min(r.baseline):.4g} to {max(r.baseline):.4g})")
        rows.append(
            f"<tr><td class='name'>{html.escape(r.task)}</td>"
            f"<td>{html.escape(str(r.params.get('description', '')))}</td>"
            f"<td>{r.n_params:,}</td><td>{html.escape(r.projection)}"
            f"{' + SAID (' + str(r.n_scales) + ' scales)' if r.said else ''}</td>"
            f"<td>{len(r.seeds)}</td><td>{base}</td>{''.join(cells)}"
            f"<td>{len(r.dims)}</td><td>{r.seconds / 60:.1f}</td></tr>")
    return ("<div class='scroll'><table class='grid'><tr><th>task</th><th>what</th><th>D</th>"
            "<th>projection</th><th>seeds</th><th>full training: mean (range)</th>"
            f"{head}<th>dims run</th><th>run minutes (wall)</th></tr>{''.join(rows)}</table></div>"
            "<p class='note'>d_int is the smallest evaluated d whose seed-mean performance "
            "reaches the threshold (a fraction of the full-training mean; for a loss, that "
            "fraction of the gap from theta_0 closed); the seed range is the smallest d each "
            "seed reaches on its own. Li et al. (ICLR 2018) report d_int90 of about 750 for a "
            "784-200-200-10 MLP and about 290 for LeNet on MNIST.</p>")


def render_landscape_report(results: Sequence[LandscapeResult],
                            plans: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The complete HTML document for ``results`` (plans shown beside them when given)."""
    from plotly.offline import get_plotlyjs
    from plotly.utils import PlotlyJSONEncoder

    from repscope._version import __version__

    figures, sections = [], [("summary", "Summary", _summary(results))]
    for i, res in enumerate(results):
        fid = f"plot-sweep-{i}"
        figures.append({"id": fid, **sweep_figure(res, _COLORS[i % len(_COLORS)])})
        plan = plans[i] if plans is not None else res.params
        body = (f"<div class='rs-plot' id='{fid}' data-traces='{len(figures[-1]['data'])}'>"
                f"</div><details><summary>plan and settings</summary><pre>"
                f"{html.escape(json.dumps(plan, indent=2, default=str))}</pre></details>")
        sections.append((f"sweep-{i}", res.task + (f" ({res.projection})" if len(results) > 1
                                                   else ""), body))
    rel = [r for r in results if r.higher_is_better]
    if len(rel) > 1:
        figures.append({"id": "plot-relative", **relative_figure(rel)})
        sections.append(("compare", "All sweeps", "<div class='rs-plot' id='plot-relative' "
                         f"data-traces='{len(rel)}'></div>"))
    nav = "".join(f"<a href='#{sid}'>{html.escape(t)}</a>" for sid, t, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{html.escape(t)}</h2>{b}</section>"
                   for sid, t, b in sections)
    figs = json.dumps(figures, cls=PlotlyJSONEncoder).replace("</", "<\\/")
    tasks = ", ".join(html.escape(r.task) for r in results)
    return _TEMPLATE.format(css=_CSS, tasks=tasks, nav=nav, sections=body, plotly=get_plotlyjs(),
                            figures=figs, version=html.escape(__version__),
                            ylabel=html.escape(y_label(results)))


def write_landscape_report(source: str | Path | Sequence[LandscapeResult],
                           out: str | Path | None = None) -> Path:
    """Render a results database (file or directory) or a list of results to ``out``
    (default: ``landscape.html`` next to the database). Returns the written path."""
    from repscope._io import atomic_write_text
    from repscope._validate import param_error
    from repscope.landscape.db import LandscapeDB

    plans = None
    if isinstance(source, str | Path):
        db = LandscapeDB.at(source)
        sweeps = db.sweeps()
        if not sweeps:
            raise FileNotFoundError(f"No landscape sweep recorded in {str(db.path)!r}; run "
                                    "'repscope landscape' first.")
        results = [r for _, _, r in sweeps]
        plans = [p for _, p, _ in sweeps]
        out = Path(out) if out is not None else db.path.with_name("landscape.html")
    else:
        results = list(source)
        if not results or out is None:
            raise param_error("write_landscape_report", "out" if results else "source",
                              "a path" if results else "at least one LandscapeResult",
                              out if results else results)
        out = Path(out)
    atomic_write_text(out, render_landscape_report(results, plans))
    return out


_CSS = """
body { margin:0; font-family:""" + _FONT + """; color:#1d2433; background:#f6f8fb;
       font-size:14px; line-height:1.5; }
header { background:linear-gradient(120deg,#16325c,#1f5fa8); color:#fff; padding:24px 40px; }
.brand { font-size:22px; font-weight:700; } .sub { opacity:.85; margin-top:4px; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid #e3e7ee;
      padding:10px 40px; display:flex; gap:22px; flex-wrap:wrap; }
nav a { color:#1f5fa8; text-decoration:none; font-weight:600; font-size:13px; }
main { max-width:1280px; margin:0 auto; padding:10px 40px 60px; }
section { background:#fff; border:1px solid #e3e7ee; border-radius:12px; padding:18px 24px;
          margin:22px 0; }
h2 { margin:0 0 12px; font-size:18px; }
.rs-plot { width:100%; min-height:420px; }
table.grid { border-collapse:collapse; width:100%; font-size:13px; }
table.grid th { background:#f1f4f9; text-align:left; }
table.grid td, table.grid th { border-bottom:1px solid #e3e7ee; padding:4px 8px; }
td.name { font-weight:600; } .scroll { overflow-x:auto; }
.note { color:#5b6577; font-size:13px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:8px; overflow:auto;
      max-height:420px; font-size:12px; }
summary { cursor:pointer; font-weight:600; margin:10px 0; }
footer { text-align:center; color:#5b6577; font-size:12px; padding:20px; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>repscope landscape: {tasks}</title><style>{css}</style>
<script type="text/javascript">{plotly}</script>
</head><body>
<header><div class="brand">repscope landscape report</div>
<div class="sub">intrinsic dimension of the objective landscape: {tasks} &middot; y axis:
{ylabel}</div></header>
<nav>{nav}</nav>
<main>{sections}</main>
<footer>Generated by repscope {version}. Self-contained: opens without a network.</footer>
<script type="text/javascript">
(function () {{
  const figures = {figures};
  const config = {{responsive: true, displaylogo: false}};
  Promise.all(figures.map(f => Plotly.newPlot(f.id, f.data, f.layout, config)))
    .then(() => {{ document.body.dataset.plotsRendered = String(figures.length); }});
}})();
</script>
</body></html>
"""
