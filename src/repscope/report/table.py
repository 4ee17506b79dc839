"""The report's results table: one row per result with its value, interval (kind and level),
standard error, permutation p-value, calibrated score and n; sortable by any column (click a
header) and copyable or downloadable as CSV from the page.

Each ``<td>`` carries its full-precision value in ``data-v`` (what sorting and the CSV use); the
text shows 4 significant digits.
"""

from __future__ import annotations

import html

from repscope.report.cells import ResultRow
from repscope.report.data import FAMILIES, ReportData
from repscope.report.page import Page, empty

__all__ = ["COLUMNS", "table_section"]

#: (CSV column, header text) in table order.
COLUMNS = (
    ("measure", "measure"), ("family", "family"), ("layer", "layer"), ("layer_b", "layer b"),
    ("value", "value"), ("ci_low", "interval low"), ("ci_high", "interval high"),
    ("interval", "interval kind"), ("stderr", "std. error"), ("p_value", "p-value"),
    ("calibrated", "calibrated"), ("n", "n"),
)


def _num_cell(v: float | int | None) -> str:
    if v is None:
        return "<td data-v=''>&ndash;</td>"
    return f"<td data-v='{v!r}'>{v:.4g}</td>" if isinstance(v, float) else \
        f"<td data-v='{v}'>{v}</td>"


def _text_cell(v: str | None, cls: str = "") -> str:
    c = f" class='{cls}'" if cls else ""
    t = "" if v is None else html.escape(v)
    return f"<td{c} data-v='{t}'>{t or '&ndash;'}</td>"


def _row(r: ResultRow) -> str:
    return ("<tr>" + _text_cell(r.label, "name") + _text_cell(r.family) + _text_cell(r.layer)
            + _text_cell(r.layer_b) + _num_cell(r.value) + _num_cell(r.ci_low)
            + _num_cell(r.ci_high) + _text_cell(r.interval) + _num_cell(r.stderr)
            + _num_cell(r.p_value) + _num_cell(r.calibrated) + _num_cell(r.n) + "</tr>")


def table_section(page: Page, data: ReportData) -> None:
    if not data.series and not data.rows:
        page.section("table", "Results table", empty("No scalar results."))
        return
    order = {name: i for i, name in enumerate(FAMILIES)}
    layer_pos = {name: i for i, name in enumerate(data.layers)}
    rows = sorted(data.rows, key=lambda r: (order.get(r.family, 99), r.label,
                                            layer_pos.get(r.layer, 999),
                                            layer_pos.get(r.layer_b or "", -1)))
    tid = f"{page.prefix}results-table"
    head = "".join(f"<th data-col='{col}' scope='col'>{html.escape(text)}</th>"
                   for col, text in COLUMNS)
    tools = (f"<div class='tools'><button class='tool' data-csv='{tid}' data-action='copy'>"
             f"Copy as CSV</button><button class='tool' data-csv='{tid}' data-action='download' "
             f"data-file='repscope-results.csv'>Download CSV</button></div>")
    note = ("<p class='note'>One row per result (pair measures: one row per layer pair). Click a "
            "header to sort. The interval kind says whether low/high are a confidence interval "
            "(and its level) or &plusmn; one standard error; p-value and calibrated score come "
            "from permutation tests (<code>--permutations N</code>).</p>")
    body = "".join(_row(r) for r in rows)
    page.section("table", "Results table",
                 f"{note}{tools}<div class='scroll'><table class='grid sortable' id='{tid}'>"
                 f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
