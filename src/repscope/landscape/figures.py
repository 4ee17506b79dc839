"""The static figure of landscape sweeps (matplotlib, Agg backend), for papers and the docs.

:func:`write_landscape_figure` draws each sweep's performance against the subspace dimension
``d`` on a logarithmic axis: the seed-mean curve with the range over seeds shaded and every seed's
run as a dot, the full-training baseline (dashed), the threshold of each ``d_int`` (dotted) and
the estimate itself (a diamond at the crossing, with the per-seed range as a horizontal bar).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repscope.landscape.results import LandscapeResult

__all__ = ["X_LABEL", "label", "write_landscape_figure"]

X_LABEL = "subspace dimension d (trainable parameters, log scale)"
_COLORS = ["#1f5fa8", "#d1495b", "#2a9d8f", "#e9a03b", "#6a4c93", "#3d405b", "#8ab17d"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def label(result: LandscapeResult) -> str:
    """``task (D = ..., projection[, SAID])`` for legends."""
    extra = ", SAID" if result.said else ""
    return f"{result.task} (D = {result.n_params:,}, {result.projection}{extra})"


def y_label(results: Sequence[LandscapeResult]) -> str:
    labels = {r.params.get("metric_label") or r.metric for r in results}
    return labels.pop() if len(labels) == 1 else "performance (each task's metric)"


def write_landscape_figure(results: Sequence[LandscapeResult], path: str | Path, *,
                           title: str | None = None, fraction: float | None = None) -> Path:
    """Draw ``results`` on one axis and save to ``path`` (format from its suffix: png, pdf, svg).

    ``fraction``: which estimate to mark (default: each sweep's first fraction).
    """
    from repscope._validate import param_error

    if not results:
        raise param_error("write_landscape_figure", "results", "at least one LandscapeResult",
                          results)
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=110)
    for i, res in enumerate(results):
        color = _COLORS[i % len(_COLORS)]
        dims = res.dims.astype(float)
        vals = res.values  # (n_d, n_seeds)
        mean = vals.mean(axis=1)
        ax.fill_between(dims, np.nanmin(vals, axis=1), np.nanmax(vals, axis=1), color=color,
                        alpha=0.15, linewidth=0)
        for s in range(vals.shape[1]):
            ax.plot(dims, vals[:, s], "o", color=color, markersize=2.5, alpha=0.45)
        ax.plot(dims, mean, "-", color=color, linewidth=1.6, label=label(res))
        ax.axhline(res.baseline_mean, color=color, linestyle="--", linewidth=1.0, alpha=0.8)
        est = res.d_int(fraction) if fraction is not None else res.estimates[0]
        ax.axhline(est.threshold, color=color, linestyle=":", linewidth=1.0, alpha=0.9)
        if not est.censored:
            lo, hi = est.ci if est.ci is not None else (est.value, est.value)
            hi = hi if math.isfinite(hi) else float(dims[-1])
            ax.plot([lo, hi], [est.threshold, est.threshold], "-", color=color, linewidth=4,
                    alpha=0.35, solid_capstyle="butt")
            ax.plot([est.value], [est.threshold], "D", color=color, markersize=6,
                    markeredgecolor="black", markeredgewidth=0.6)
            ax.annotate(f"{est.measure} = {est.value:,.0f}", (est.value, est.threshold),
                        textcoords="offset points", xytext=(6, -12 - 11 * i), fontsize=8,
                        color=color)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(y_label(results))
    ax.grid(True, which="both", alpha=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title or "performance vs subspace dimension: mean over seeds (line), seeds "
                 "(dots, shaded range);\nfull training (dashed), threshold (dotted), d_int "
                 "(diamond, bar = range over seeds)", fontsize=8.5)
    ax.legend(fontsize=8, loc="best", frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
