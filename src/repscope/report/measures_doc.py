"""The report's "Measures" section, generated from the registry: every measure of the run with
its definition, references, the parameters this run used, its unit, range and direction, its
invariances and the kind of interval it reported.

Nothing here names a measure: a measure registered tomorrow is explained by its
``MeasureSpec`` and its docstring (first paragraph = definition; parenthesised author-year
citations = references).
"""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Mapping
from typing import Any

from repscope import registry
from repscope.report.data import FAMILIES, ReportData

__all__ = ["definition", "measures_section", "references"]

_PAREN = re.compile(r"\(([^()]*\b(?:1[89]|20)\d\d\b[^()]*)\)")
_NAME = r"[A-Z][A-Za-z'\-]+"
_NAME_YEAR = re.compile(rf"{_NAME}(?:[- ]{_NAME}| and {_NAME}| et al\.)* \((?:19|20)\d\d\)")
_CITATION = re.compile(rf"{_NAME}(?: et al\.| and {_NAME}|, {_NAME})*,? (?:19|20)\d\d\b[^;]*")
_HIDDEN = ("device",)  # parameters that do not change the value


def definition(spec: registry.MeasureSpec) -> str:
    """The first paragraph of the measure's docstring (its description when there is none)."""
    doc = inspect.getdoc(spec.fn) or ""
    para = doc.strip().split("\n\n")[0] if doc.strip() else spec.description
    return " ".join(para.split())


def references(spec: registry.MeasureSpec) -> list[str]:
    """Author-year citations found in the docstring, in order, without repeats.

    >>> from repscope import registry
    >>> references(registry.get("twonn"))[0].startswith("Facco")
    True
    """
    doc = inspect.getdoc(spec.fn) or spec.description
    found = [" ".join(m.group(0).split()) for m in _NAME_YEAR.finditer(doc)]
    for paren in _PAREN.finditer(doc):
        for part in paren.group(1).split(";"):
            m = _CITATION.search(" ".join(part.split()))
            if m:
                found.append(m.group(0).strip(" ,."))
    return list(dict.fromkeys(c for c in found if len(c) < 160))


def _range(spec: registry.MeasureSpec) -> str:
    lo, hi = spec.bounds
    if lo is None and hi is None:
        return "unbounded"
    return f"[{'-inf' if lo is None else f'{lo:.4g}'}, {'inf' if hi is None else f'{hi:.4g}'}]"


def _direction(spec: registry.MeasureSpec) -> str:
    if spec.higher_is_better is None:
        return "no better direction (a property, not a score)"
    return "higher is better" if spec.higher_is_better else "lower is better"


def _params(used: Mapping[str, Any], spec: registry.MeasureSpec) -> str:
    shown = {k: v for k, v in used.items() if k not in _HIDDEN and not isinstance(v, list | dict)}
    if not shown:
        shown = {k: v for k, v in spec.defaults.items() if k not in _HIDDEN}
    items = ", ".join(f"<code>{html.escape(k)}={html.escape(repr(v))}</code>"
                      for k, v in sorted(shown.items()))
    return items or "none"


def _labels(data: ReportData) -> list[str]:
    """Every measure label of the run (all checkpoints of a sweep), in family order."""
    labels = {s.label: s.family for s in data.series}
    labels.update({m.label: "similarity" for m in data.matrices})
    for v in data.views:
        labels.update({s.label: s.family for s in v.series})
        labels.update({m.label: "similarity" for m in v.matrices})
    for label in data.used_params:
        labels.setdefault(label, "")
    order = list(FAMILIES)
    return sorted(labels, key=lambda x: (order.index(labels[x]) if labels[x] in order
                                         else len(order), x))


def _intervals(data: ReportData) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for r in data.rows + [r for v in data.views for r in v.rows]:
        kinds = out.setdefault(r.label, [])
        if r.interval not in kinds:
            kinds.append(r.interval)
    return {k: "; ".join(v) for k, v in out.items()}


def measures_section(data: ReportData) -> tuple[str, str, str]:
    """``(id, title, html)`` of the Measures section for the measures ``data`` holds."""
    intervals = _intervals(data)
    blocks = []
    for label in _labels(data):
        name = label.split(" ")[0]
        used = data.used_params.get(label, {})
        try:
            spec = registry.get(name)
        except KeyError:
            blocks.append(f"<div class='measure-doc' data-measure='{html.escape(label)}'>"
                          f"<h3><code>{html.escape(label)}</code></h3><p class='note'>Not "
                          "registered in this installation: no definition available.</p></div>")
            continue
        refs = references(spec)
        unit = spec.unit or (str(used["unit"]) if isinstance(used.get("unit"), str) else "")
        rows = {
            "family": html.escape(FAMILIES.get(spec.family, spec.family)),
            "parameters (this run)": _params(used, spec),
            "unit": html.escape(unit) if unit else "not stated (see the definition)",
            "range": _range(spec),
            "direction": _direction(spec),
            "interval reported": html.escape(intervals.get(label, "no interval")),
            "invariant to": html.escape(", ".join(sorted(spec.invariances)) or "none declared"),
            "reference": html.escape("; ".join(refs)) if refs else "see the definition",
        }
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows.items())
        blocks.append(f"<div class='measure-doc' data-measure='{html.escape(label)}'>"
                      f"<h3><code>{html.escape(label)}</code></h3>"
                      f"<p>{html.escape(definition(spec))}</p><dl>{dl}</dl></div>")
    note = ("<p class='note'>Generated from the measure registry and the results of this run: "
            "definitions come from each measure's documentation, parameters from the results "
            "database.</p>")
    body = note + "".join(blocks) if blocks else "<p>No measure produced a result.</p>"
    return "measures", "Measures", body
