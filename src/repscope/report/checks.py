"""The report's "Data checks" section: massive activations / outlier coordinates per layer.

Self-contained (a function from the findings rows to an HTML fragment) so the page layout can
place it anywhere; :func:`data_checks_html` returns None when the run has no findings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["data_checks_html"]


def data_checks_html(findings: Sequence[Mapping[str, Any]]) -> str | None:
    """A warning paragraph plus one table row per layer (None when there are no findings)."""
    if not findings:
        return None
    bad = [f for f in findings if f.get("warn")]
    positions = sorted({p for f in bad for p in str(f.get("exclude_positions") or "").split(",")
                        if p}, key=int)
    if bad:
        advice = (f" Rerun with <code>{html.escape(' '.join(f'--exclude-positions {p}' for p in positions))}"
                  f"</code> to leave those positions out." if positions else "")
        head = (f"<p class='warn' data-check='massive_activations' data-warn='{len(bad)}'>"
                f"<strong>Massive activations / outlier coordinates in {len(bad)} of "
                f"{len(findings)} layers.</strong> A coordinate that holds a share <em>s</em> of "
                f"a layer's variance caps its participation ratio at 1/<em>s</em>&sup2;, so "
                f"covariance-based measures there describe that coordinate (Sun et al. 2024, "
                f"massive activations; Kovaleva et al. 2021, outlier dimensions).{advice}</p>")
    else:
        head = ("<p data-check='massive_activations' data-warn='0'>No massive activation or "
                "dominant coordinate in any layer.</p>")
    rows = "".join(
        f"<tr class='{'warn' if f.get('warn') else 'ok'}'><td>{html.escape(str(f['layer']))}</td>"
        f"<td>{int(f['coordinate'])}</td><td>{float(f['variance_share']):.1%}</td>"
        f"<td>{float(f['max_abs']):.4g}</td><td>{int(f.get('n_massive_rows') or 0)} / "
        f"{int(f.get('n') or 0)}</td><td>{html.escape(str(f.get('exclude_positions') or ''))}"
        f"</td></tr>" for f in findings)
    table = ("<table class='grid'><thead><tr><th>layer</th><th>top coordinate</th>"
             "<th>its variance share</th><th>max |x|</th><th>rows with massive entries</th>"
             "<th>positions to exclude</th></tr></thead><tbody>" + rows + "</tbody></table>")
    return head + f"<details{' open' if bad else ''}><summary>Every layer</summary>{table}</details>"
