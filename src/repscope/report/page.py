"""The report's page: the section/figure accumulator, its stylesheet and its script.

:class:`Page` collects sections (id, title, HTML) and figures (plotly dicts); :func:`document`
assembles the final self-contained file. The script draws every figure, adds an SVG download
button beside plotly's PNG one, sorts the results table on a header click, copies or downloads
it as CSV, switches checkpoints, and records for tests and readers
``document.body.dataset.plotsRendered`` (number of plots) and ``renderMs`` (time from the
script's start to the last plot drawn).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from repscope.report.plots import FONT

__all__ = ["Page", "caption", "code", "document", "empty", "kv"]


class Page:
    """Accumulates sections and figures; renders the final document."""

    def __init__(self, prefix: str = "", figures: list[dict[str, Any]] | None = None) -> None:
        self.prefix = prefix
        "Prepended to plot ids (one sub-page per checkpoint shares the figure list)."
        self.figures: list[dict[str, Any]] = [] if figures is None else figures
        self.sections: list[tuple[str, str, str]] = []  # (id, title, html)

    def plot(self, fig: dict[str, Any], plot_id: str, note: str = "") -> str:
        """The plot's ``<figure>``: its div and a caption ``note`` (what it shows, how to read
        it) under it."""
        plot_id = self.prefix + plot_id
        self.figures.append({"id": plot_id, **fig})
        n = len(fig["data"])
        div = (f'<div class="rs-plot" id="{plot_id}" data-traces="{n}" '
               f'data-kind="{fig["data"][0]["type"] if n else "none"}"></div>')
        return f"<figure class='rs-fig'>{div}{caption(note)}</figure>" if note else div

    def section(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))


def caption(text: str) -> str:
    return f"<figcaption class='caption'>{text}</figcaption>" if text else ""


def empty(message: str, hint: str = "") -> str:
    hint_html = f'<div class="hint">{hint}</div>' if hint else ""
    return f'<div class="empty"><div class="empty-title">{message}</div>{hint_html}</div>'


def code(names: list[str]) -> str:
    return ", ".join(f"<code>{html.escape(n)}</code>" for n in names)


def kv(rows: Mapping[str, Any]) -> str:
    import json

    def show(v: Any) -> str:
        return json.dumps(v, default=str) if isinstance(v, Mapping | list) else str(v)

    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(show(v))}</td></tr>"
                   for k, v in rows.items() if v not in (None, "", {}))
    return f"<table class='kv'>{body}</table>"


def document(*, title: str, header: str, nav: str, sections: str, figures_json: str,
             version: str) -> str:
    """The complete HTML file (plotly.js inlined)."""
    from repscope._plotly import plotly_js

    return _TEMPLATE.format(title=title, css=CSS, header=header, nav=nav, sections=sections,
                            plotly=plotly_js(), figures=figures_json, script=_SCRIPT,
                            version=version)


CSS = """
:root { --ink:#1d2433; --muted:#5b6577; --line:#e3e7ee; --bg:#f6f8fb; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font-family:""" + FONT + """; color:var(--ink); background:var(--bg);
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
figure.rs-fig { margin:8px 0 18px; }
.caption { color:var(--muted); font-size:12.5px; margin:2px 4px 0; max-width:1000px; }
.rs-plot { width:100%; min-height:380px; }
.matrix { display:flex; gap:24px; align-items:flex-start; flex-wrap:wrap;
          border-top:1px solid var(--line); padding-top:12px; margin-top:12px; }
.matrix:first-child { border-top:0; margin-top:0; }
.matrix .rs-fig { flex:0 1 auto; max-width:640px; margin:0; } .matrix .rs-plot { width:auto; } .stats { flex:1 1 260px; max-width:420px; }
.empty { border:1px dashed #c5ccd8; border-radius:10px; padding:18px; background:#fafbfd;
         color:var(--muted); margin:8px 0 16px; }
.empty-title { font-weight:600; color:var(--ink); } .hint { margin-top:4px; }
.note { color:var(--muted); font-size:13px; }
.verdict { border-left:4px solid var(--accent); background:#f3f7fc; padding:8px 14px;
           margin:4px 0 16px; font-size:13px; }
.verdict ul { margin:4px 0; padding-left:18px; }
table { border-collapse:collapse; } td, th { padding:4px 10px; text-align:left; }
table.grid { width:100%; font-size:13px; } table.grid th { background:#f1f4f9; }
table.grid td, table.grid th { border-bottom:1px solid var(--line); }
table.grid td { font-variant-numeric:tabular-nums; } td.name { font-weight:600; }
table.sortable th { cursor:pointer; user-select:none; white-space:nowrap; }
table.sortable th[aria-sort=ascending]::after { content:" \\25B2"; font-size:10px; }
table.sortable th[aria-sort=descending]::after { content:" \\25BC"; font-size:10px; }
table.kv th { color:var(--muted); font-weight:500; white-space:nowrap; vertical-align:top; }
table.kv td { word-break:break-all; }
.measure-doc { border-top:1px solid var(--line); padding:10px 0; }
.measure-doc:first-of-type { border-top:0; }
.measure-doc dl { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:6px 0; }
.measure-doc dt { color:var(--muted); } .measure-doc dd { margin:0; }
.tools { display:flex; gap:10px; margin:6px 0 10px; }
button.tool { font:inherit; font-size:12.5px; border:1px solid var(--line); background:#f1f4f9;
              border-radius:6px; padding:4px 10px; cursor:pointer; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(520px, 1fr)); gap:8px 18px; }
.grid2 .rs-plot { min-height:300px; }
.scroll { overflow-x:auto; } .cols { display:grid; grid-template-columns:1fr 1fr; gap:24px; }
code { background:#f1f4f9; padding:1px 5px; border-radius:4px; font-size:12.5px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:8px; overflow:auto;
      max-height:420px; font-size:12px; }
summary { cursor:pointer; font-weight:600; margin:10px 0; }
footer { text-align:center; color:var(--muted); font-size:12px; padding:20px; }
"""

_SCRIPT = """
(function () {
  const t0 = performance.now();
  const figures = JSON.parse(document.getElementById('rs-figures').textContent);
  const svgButton = {
    name: 'Download plot as SVG', icon: Plotly.Icons.disk,
    click: gd => Plotly.downloadImage(gd, {format: 'svg', filename: gd.id}),
  };
  const config = f => ({responsive: true, displaylogo: false,
    modeBarButtonsToAdd: [svgButton],
    toImageButtonOptions: {format: 'png', filename: f.id, scale: 2}});
  Promise.all(figures.map(f => Plotly.newPlot(f.id, f.data, f.layout, config(f))))
    .then(() => {
      document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
      document.body.dataset.plotsRendered = String(figures.length);
    });
  const picker = document.getElementById('rs-ckpt');
  if (picker) {
    picker.addEventListener('change', () => {
      document.querySelectorAll('.ckpt-view').forEach(v => {
        v.hidden = v.dataset.ckpt !== picker.value;
      });
      document.querySelectorAll('.ckpt-view:not([hidden]) .rs-plot')
        .forEach(el => Plotly.Plots.resize(el));
      document.body.dataset.checkpoint = picker.value;
    });
  }
  const cellValue = td => {
    const v = td.dataset.v;
    return v === undefined || v === '' ? null : (isNaN(Number(v)) ? v : Number(v));
  };
  document.querySelectorAll('table.sortable').forEach(table => {
    table.querySelectorAll('thead th').forEach((th, col) => {
      th.addEventListener('click', () => {
        const up = th.getAttribute('aria-sort') !== 'ascending';
        table.querySelectorAll('thead th').forEach(h => h.removeAttribute('aria-sort'));
        th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
          if (x === null) return 1; if (y === null) return -1;
          const c = typeof x === 'number' && typeof y === 'number' ? x - y
                    : String(x).localeCompare(String(y));
          return up ? c : -c;
        });
        rows.forEach(r => body.appendChild(r));
      });
    });
  });
  const csvOf = table => {
    const q = s => /[",\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    const head = Array.from(table.tHead.rows[0].cells).map(c => q(c.dataset.col));
    const rows = Array.from(table.tBodies[0].rows).map(r =>
      Array.from(r.cells).map(c => q(c.dataset.v === undefined ? c.textContent : c.dataset.v)));
    return [head, ...rows].map(r => r.join(',')).join('\\n') + '\\n';
  };
  document.querySelectorAll('button[data-csv]').forEach(btn => {
    const table = document.getElementById(btn.dataset.csv);
    btn.addEventListener('click', () => {
      const text = csvOf(table);
      if (btn.dataset.action === 'download') {
        const a = document.createElement('a');
        a.href = URL.createObjectURL(new Blob([text], {type: 'text/csv'}));
        a.download = btn.dataset.file || 'results.csv';
        document.body.appendChild(a); a.click(); a.remove();
      } else {
        const done = () => { btn.textContent = 'Copied'; };
        const fallback = () => {
          const area = document.createElement('textarea');
          area.value = text; document.body.appendChild(area); area.select();
          document.execCommand('copy'); area.remove(); done();
        };
        if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, fallback);
        else fallback();
      }
    });
  });
})();
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
<script type="application/json" id="rs-figures">{figures}</script>
<script type="text/javascript">{script}</script>
</body></html>
"""
