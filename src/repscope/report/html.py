"""One self-contained HTML report with interactive plots, readable with no network.

:func:`write_report` renders a results database into ``report.html``: scalar measures across
layers with their intervals (one panel per family and order of magnitude, one line per
estimator, the recommended estimate and its verdict first), a layer x layer heat map per pair
measure on a colour scale shared by every heat map of that measure, eigenvalue spectra per layer
(log-log), per-point (local) distributions per layer, a "Measures" section generated from the
registry (definition, references, parameters of this run, unit, range, interval kind), a
sortable results table with intervals and p-values (copy / download as CSV), failures, an empty
state for every family that was not run, and the provenance of the run. plotly.js (its
cartesian partial bundle, :mod:`repscope._plotly`) is inlined, so the file opens offline.

Every plot is a ``<div class="rs-plot" data-traces="N">`` inside a ``<figure>`` with a caption;
when all plots are drawn the page sets ``document.body.dataset.plotsRendered`` to their number
and ``renderMs`` to the drawing time (used by the browser test).

Modules: :mod:`.data` gathers, :mod:`.cells` states intervals, :mod:`.plots` builds figure
dicts, :mod:`.sections` / :mod:`.measures_doc` / :mod:`.table` write sections, :mod:`.page`
holds the stylesheet and script; this module assembles them.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from repscope.feature_pages import FeaturePageInfo, find_feature_pages
from repscope.report.cells import num
from repscope.report.data import ReportData, gather
from repscope.report.measures_doc import measures_section
from repscope.report.page import Page, document, kv
from repscope.report.sections import (
    local_section,
    matrix_ranges,
    scalar_sections,
    similarity_section,
    spectra_section,
    training_section,
)
from repscope.report.table import table_section

__all__ = ["render_report", "write_report"]


def write_report(db_path: str | Path, out: str | Path | None = None, *,
                 run_id: str | None = None) -> Path:
    """Render the database at ``db_path`` (file or results directory) to ``out`` (HTML).

    ``out`` defaults to ``report.html`` next to the database. Returns the written path.

    Parameters
    ----------
    db_path : path
        A results directory or ``.duckdb`` file.
    out : path, optional
        The HTML file (default ``report.html`` next to the database).
    run_id : str, optional
        The run to report (default: the latest).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from repscope._io import atomic_write_text

    data = gather(db_path, run_id)
    out = Path(out) if out is not None else Path(data.db_path).with_name("report.html")
    pages = find_feature_pages(out.parent)  # `repscope sae inspect` pages under the report's dir
    atomic_write_text(out, render_report(data, feature_pages=pages))
    return out


def _status_section(page: Page, data: ReportData) -> None:
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


def _provenance_section(page: Page, data: ReportData) -> None:
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
    body = (f"<div class='cols'><div><h3>Source</h3>{kv(source)}</div>"
            f"<div><h3>Versions</h3>{kv(prov.get('versions', {}))}"
            f"<h3>Machine</h3>{kv(prov.get('machine', {}))}</div></div>"
            f"<details><summary>Resolved plan (plan.json)</summary><pre>{plan_json}</pre></details>"
            f"<details><summary>Store manifest</summary><pre>{manifest}</pre></details>")
    page.section("provenance", "Provenance", body)


def _fmt(v: float | None) -> str:
    return "&ndash;" if v is None else f"{v:.4g}"


def _features_section(page: Page, pages: Sequence[FeaturePageInfo]) -> None:
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
        cells = [*text, *(_fmt(num(s.get(k))) for k in ("fvu", "l0_mean")),
                 html.escape(str(s.get("sae") or ""))]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        body.append(f"<tr><td class='name'><a class='feature-page' href='{html.escape(p.href)}'>"
                    f"{html.escape(p.title)}</a></td>{tds}</tr>")
    page.section("features", "Sparse features",
                 "<p class='note'>Sparse-autoencoder feature pages (<code>repscope sae inspect</code>) "
                 "found next to this report: top-activating inputs per latent, each token shaded by "
                 "the latent's activation. FVU (fraction of variance unexplained, lower is better) "
                 "and L0 (mean active latents per row) on the rows the page inspected.</p>"
                 f"<div class='scroll'><table class='grid'>{head}{''.join(body)}</table></div>")


def _per_checkpoint(page: Page, data: ReportData,
                    section: Callable[[Page, ReportData], None]) -> None:
    """``section`` as is, or in a sweep once per checkpoint, each in a ``ckpt-view`` block of
    which the picker shows one (the last checkpoint at first)."""
    if not data.views:
        section(page, data)
        return
    titles: dict[str, str] = {}
    bodies: dict[str, list[str]] = {}
    last = len(data.views) - 1
    for i, view in enumerate(data.views):
        sub = Page(prefix=f"ckpt{i}-", figures=page.figures)
        section(sub, replace(data, series=view.series, matrices=view.matrices,
                             spectra=view.spectra, local=view.local, n_results=view.n_results,
                             rows=view.rows))
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
    from plotly.utils import PlotlyJSONEncoder

    from repscope._version import __version__

    page = Page()
    from repscope.report.checks import data_checks_html

    checks = data_checks_html(data.findings)
    if checks is not None:
        page.section("checks", "Data checks", checks)
    ranges = matrix_ranges(data.matrices + [m for v in data.views for m in v.matrices])
    _per_checkpoint(page, data, scalar_sections)
    training_section(page, data)
    for section in (functools.partial(similarity_section, ranges=ranges), spectra_section,
                    local_section):
        _per_checkpoint(page, data, section)
    page.section(*measures_section(data))
    _per_checkpoint(page, data, table_section)
    _features_section(page, feature_pages)
    _status_section(page, data)
    _provenance_section(page, data)
    nav = "".join(f"<a href='#{sid}'>{html.escape(title)}</a>" for sid, title, _ in page.sections)
    nav += _checkpoint_picker(data)
    sections = "".join(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{body}</section>"
                       for sid, title, body in page.sections)
    figs = json.dumps(page.figures, cls=PlotlyJSONEncoder).replace("</", "<\\/")
    return document(
        title=html.escape(f"repscope report: {data.plan.get('source', {}).get('model', '')}"),
        header=_header(data), nav=nav, sections=sections, figures_json=figs,
        version=html.escape(__version__))
