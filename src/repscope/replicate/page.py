"""A claim's page: a Markdown file with its PNG figure and the result's JSON beside it.

``NAME.md`` holds the paper's statement with its citation, our protocol, the verdict and its
checks, the numbers table (ours beside the paper's), the figure, the analysis, the runtime
and the commands to rerun; ``NAME.png`` the figure (matplotlib, titled axes); ``NAME.json``
the :class:`~repscope.replicate.claim.ClaimResult`. ``README.md`` indexes a directory of
pages. Writes are atomic.
"""

from __future__ import annotations

import io
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

from repscope._io import atomic_write_bytes, atomic_write_text
from repscope.replicate.claim import Claim, ClaimResult, Panel

__all__ = ["read_result", "write_figure", "write_index", "write_page"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, panel: Panel) -> None:
    for ln in panel.lines:
        x = list(ln.x)
        ax.plot(x, list(ln.y), ln.style, label=ln.label, markersize=4)
        if ln.lo is not None and ln.hi is not None:
            ax.fill_between(x, list(ln.lo), list(ln.hi), alpha=0.2)
    if panel.hline is not None:
        ax.axhline(panel.hline, color="grey", linestyle="--", linewidth=1)
    if panel.logx:
        ax.set_xscale("log")
    if panel.logy:
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if any(ln.label for ln in panel.lines):
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def write_figure(result: ClaimResult, path: str | Path, *, title: str = "") -> Path:
    """The result's panels side by side (at most 3 per row) as a PNG."""
    plt = _pyplot()
    n = max(1, len(result.panels))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, result.panels, strict=False):
        _draw(ax, panel)
    for ax in list(axes.flat)[len(result.panels):]:
        ax.axis("off")
    fig.suptitle(f"{title or result.claim}: {result.verdict} ({result.mode})", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_page(claim: Claim, result: ClaimResult) -> str:
    quick = " --quick" if result.mode == "quick" else ""
    lines = [
        f"# {claim.title}",
        "",
        f"**Verdict: {result.verdict}** ({result.mode} run, {result.seconds:.1f} s, "
        f"repscope {result.version}, {platform.machine()} CPU)",
        "",
        "## The paper",
        "",
        f"{claim.citation}",
        "",
        f"> {claim.statement}",
        "",
        "## Our protocol",
        "",
        claim.protocol,
        "",
        "## Numbers",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
        *[f"| {_cell(r.quantity)} | {_cell(r.ours)} | {_cell(r.paper)} |" for r in result.rows],
        "",
        "## Checks (the verdict is PASS when all hold)",
        "",
        "| check | measured | holds |",
        "|---|---|---|",
        *[f"| {_cell(c.description)} | {_cell(c.measured)} | {'yes' if c.passed else 'NO'} |"
          for c in result.checks],
        "",
        f"![{claim.name}]({claim.name}.png)",
        "",
        "## Analysis",
        "",
        result.analysis,
        "",
        "## Rerun",
        "",
        "```",
        f"repscope replicate {claim.name}{quick} --out DIR",
        "```",
        "",
        "Parameters: `" + json.dumps(dict(result.params), sort_keys=True) + "`",
        "",
    ]
    return "\n".join(lines)


def write_page(claim: Claim, result: ClaimResult, out: str | Path) -> Path:
    """Write ``NAME.md``, ``NAME.png`` and ``NAME.json`` under ``out``; returns the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_figure(result, out / f"{claim.name}.png", title=claim.name)
    atomic_write_text(out / f"{claim.name}.json", result.to_json())
    page = out / f"{claim.name}.md"
    atomic_write_text(page, render_page(claim, result))
    return page


def read_result(path: str | Path) -> ClaimResult:
    """A result written by :func:`write_page` (``NAME.json``)."""
    from repscope._io import read_utf8

    try:
        data = json.loads(read_utf8(Path(path), what="Replication result"))
        return ClaimResult.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"Replication result {str(path)!r} is not a valid result file ({exc}).") from None


def write_index(claims: Sequence[Claim], results: Sequence[ClaimResult], out: str | Path,
                note: str = "") -> Path:
    """``README.md`` under ``out``: one line per claim with its verdict and runtime; ``note``
    (the machine, say) goes under the title."""
    by_name = {r.claim: r for r in results}
    lines = ["# Replications", "",
             "Each page: the paper's statement, our protocol, the numbers beside the paper's, "
             "the checks, the figure, the analysis and the command to rerun. "
             "A FAIL is a finding, reported with its analysis.", "",
             *([note, ""] if note else []),
             "| claim | paper | verdict | mode | runtime |", "|---|---|---|---|---|"]
    for c in claims:
        r = by_name.get(c.name)
        if r is None:
            continue
        lines.append(f"| [{c.name}]({c.name}.md) | {_cell(c.citation)} | **{r.verdict}** | "
                     f"{r.mode} | {r.seconds:.0f} s |")
    path = Path(out) / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
