"""Static figures of the language-model geometry analyses (matplotlib, Agg backend).

One function per analysis, each taking the analysis' result and a path, returning the path:
:func:`prompt_geometry_figure`, :func:`id_surprisal_figure`, :func:`attention_subspaces_figure`,
:func:`feature_geometry_figure`. Definitions: ``docs/lm_geometry.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from repscope.report.figures import _pyplot, _short

__all__ = ["attention_subspaces_figure", "feature_geometry_figure", "id_surprisal_figure",
           "prompt_geometry_figure"]


def _ticks(ax: Any, names: list[str]) -> None:
    step = max(1, len(names) // 10)
    ax.set_xticks(np.arange(len(names))[::step])
    ax.set_xticklabels([_short(n) for n in names][::step], rotation=45, ha="right")


def _band(ax: Any, x: np.ndarray, lo: Any, hi: Any, mid: Any, label: str, color: Any = None) -> None:
    line = ax.plot(x, mid, marker="o", ms=2.5, lw=1.2, label=label, color=color)[0]
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), lw=0)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def prompt_geometry_figure(pg: Any, path: str | Path) -> Path:
    """Per layer: the documents' ID, next-layer neighbourhood overlap and cosine spread (median
    and interquartile band across documents), and each metric's correlation with the prompt's
    mean loss (bootstrap band over documents)."""
    plt = _pyplot()
    t = pg.rows
    names = list(pg.params["layers"])
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, metric, title in zip(axes[:3], ("id", "overlap_next", "cosine_mean"),
                                 (f"ID of the prompt's tokens ({pg.params['estimator']})",
                                  f"neighbourhood overlap with next layer (k={pg.params['k_overlap']})",
                                  "mean cosine between the prompt's tokens"), strict=True):
        g = t.groupby("layer_index")[metric]
        q = g.quantile([0.25, 0.5, 0.75]).unstack().reindex(x)
        _band(ax, x, q[0.25], q[0.75], q[0.5], "median, IQR over prompts")
        ax.set_title(title, fontsize=8)
        _ticks(ax, names)
    ax = axes[3]
    if pg.relation is not None:
        for metric in ("id", "overlap_next", "cosine_mean"):
            r = pg.relation[pg.relation.metric == metric].set_index("layer").reindex(names)
            _band(ax, x, r["ci_low"], r["ci_high"], r["correlation"], metric)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{pg.params['method']} correlation with the prompt's mean loss", fontsize=8)
        ax.legend(fontsize=7)
    _ticks(ax, names)
    fig.suptitle(f"Token clouds of {pg.params['n_documents']} prompts", fontsize=9)
    return _save(plt, fig, path)


def id_surprisal_figure(table: Any, path: str | Path, scatter: Any = None, scatter_layer: str | None = None) -> Path:
    """Correlation between ID and surprisal per layer (one line per checkpoint, bootstrap band
    over documents); with ``scatter`` (an :class:`~repscope.analysis.id_surprisal.IDSurprisal`
    at level 'group'), the groups' ID against their mean surprisal at that layer
    (``scatter_layer``, named in the panel's title)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if scatter is not None else 1, figsize=(10 if scatter is not None else 6, 3.3))
    ax = axes[0] if scatter is not None else axes
    for ckpt, t in table.groupby(table["checkpoint"].fillna("model"), sort=False):
        t = t.sort_values("layer_index")
        names = list(t["layer"])
        x = np.arange(len(names))
        _band(ax, x, t["ci_low"], t["ci_high"], t["correlation"], str(ckpt))
    _ticks(ax, names)
    ax.axhline(0, color="k", lw=0.6)
    lvl = table["level"].iloc[0]
    ax.set_title(f"ID vs surprisal ({lvl} level, {table['estimator'].iloc[0]})", fontsize=8)
    ax.set_ylabel("correlation")
    if table["checkpoint"].notna().any():
        ax.legend(fontsize=7)
    if scatter is not None:
        d = scatter.diagnostics
        axes[1].scatter(d["group_id"], d["group_surprisal"], s=8, alpha=0.7)
        axes[1].set_xlabel("ID of the prompt's tokens")
        axes[1].set_ylabel("mean surprisal (nats)")
        axes[1].set_title(f"{_short(scatter_layer) + ': ' if scatter_layer else ''}{scatter.method} r = {scatter.value:.2f} "
                          f"[{scatter.ci[0]:.2f}, {scatter.ci[1]:.2f}]", fontsize=8)
    return _save(plt, fig, path)


def attention_subspaces_figure(table: Any, path: str | Path) -> Path:
    """Per block: fraction of directions holding 99% of the variance, effective rank and TwoNN
    ID, for the attention output and the residual stream."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for stream, t in table.groupby("stream", sort=False):
        t = t.sort_values("block_index")
        names = list(t["block"])
        x = np.arange(len(names))
        axes[0].plot(x, t["rank99_fraction"], marker="o", ms=2.5, label=stream)
        axes[1].plot(x, t["effective_rank"], marker="o", ms=2.5, label=stream)
        _band(axes[2], x, t["twonn_low"], t["twonn_high"], t["twonn"], stream)
    for ax, title in zip(axes, ("fraction of directions for 99% of the variance", "effective rank",
                                "TwoNN ID"), strict=True):
        ax.set_title(title, fontsize=8)
        _ticks(ax, names)
        ax.legend(fontsize=7)
    axes[0].set_ylim(0, 1.02)
    return _save(plt, fig, path)


def feature_geometry_figure(fg: Any, path: str | Path, max_latents: int = 200) -> Path:
    """Lobes (affinity grouped by lobe), crystal sizes and the decoder spectrum with its nulls."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    lb = fg.lobes
    keep = np.argsort(-fg.cooccurrence.count, kind="stable")[:max_latents]
    keep = keep[np.lexsort((keep, lb.labels[keep]))]
    im = axes[0].imshow(lb.affinity[np.ix_(keep, keep)], cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    axes[0].set_title(f"co-occurrence affinity by lobe (Q={lb.modularity:.2f}, AMI={fg.modularity.ami:.2f}, "
                      f"p={fg.modularity.p_value:.2g})", fontsize=8)
    axes[0].grid(False)
    sizes = [len(c.pairs) for c in fg.crystals.crystals]
    if sizes:
        axes[1].hist(sizes, bins=np.arange(1.5, max(sizes) + 1.5), rwidth=0.8)
    axes[1].set_xlabel("pairs per crystal")
    axes[1].set_title(f"{len(sizes)} crystals, {fg.crystals.n_parallelograms} parallelograms "
                      f"among {fg.crystals.n_points} decoder directions", fontsize=8)
    sp = fg.spectrum
    for name, ev, alpha in (("decoder", sp.eigenvalues, sp.alpha), ("isotropic null", sp.null_eigenvalues, sp.null_alpha),
                            ("activations", sp.activation_eigenvalues, sp.activation_alpha)):
        if ev is None:
            continue
        ev = np.asarray(ev, float)
        ev = ev[ev > 0]
        axes[2].loglog(np.arange(1, ev.size + 1), ev / ev.sum(), label=f"{name} (alpha={alpha:.2f})")
    axes[2].set_title("covariance spectrum (normalised)", fontsize=8)
    axes[2].set_xlabel("rank")
    axes[2].legend(fontsize=7)
    return _save(plt, fig, path)
