"""A self-contained HTML page for an SAE: evaluation summary, feature-density histogram, and
one card per latent with its top-activating contexts, activation quantile samples and a
histogram of its activations.

Contexts are shown as their tokenizer decodes them (:mod:`repscope.dictionaries.tokens`: WordPiece
``##`` pieces joined, BPE / SentencePiece spaces restored) and, given ``activations``, every
token is shaded by the latent's activation on it (hover a token for the number), as
SAEDashboard and Neuronpedia do; the row that put the context in the list is outlined.
plotly.js (its cartesian partial bundle, :mod:`repscope._plotly`) is inlined, so the page opens
with no network.
Next to ``NAME.html`` a sidecar ``NAME.json`` (:mod:`repscope.feature_pages`) records the
layer, architecture, sizes, FVU and L0, so the analysis report (``report.html``) lists and links
every feature page found under its directory; with ``report=`` the page links back to it.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from repscope._io import atomic_write_text
from repscope.dictionaries.inspect import FeatureStats, context_rows, quantile_samples
from repscope.dictionaries.tokens import detokenize
from repscope.feature_pages import FEATURE_PAGE_KIND, sidecar_path

__all__ = ["feature_page"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table.summary td{padding:2px 12px}.card{border:1px solid #ccc;border-radius:6px;padding:8px 14px;margin:14px 0}
.ctx{font-family:ui-monospace,monospace;font-size:13px;margin:2px 0;white-space:pre-wrap}
.tok{padding:0 1px;border-radius:3px}.hit{outline:2px solid #c33}.val{color:#666;display:inline-block;width:5em}
h3{margin:4px 0}.muted{color:#777}.back{font-size:14px}.hist{height:200px;max-width:520px}
.legend-swatch{display:inline-block;width:90px;height:10px;vertical-align:middle;
background:linear-gradient(90deg,rgba(255,120,0,0),rgba(255,120,0,.85))}
"""


Activations = Callable[[np.ndarray], np.ndarray]


def _shade(a: float, top: float) -> str:
    """Background for activation ``a`` on a latent whose largest activation is ``top``."""
    alpha = 0.0 if top <= 0 or not np.isfinite(a) else min(max(a / top, 0.0), 1.0)
    return f"background:rgba(255,120,0,{0.85 * alpha:.3f})"


def _context_html(meta: Any, row: int, value: float, window: int,
                  acts: dict[int, float] | None = None, top: float = 0.0) -> str:
    if meta is None:
        return f'<div class="ctx"><span class="val">{value:.3f}</span>row {row}</div>'
    if "token" not in meta:  # pooled rows: one document per row
        text = str(meta["text"].iloc[row])[:300] if "text" in meta else f"row {row}"
        return f'<div class="ctx"><span class="val">{value:.3f}</span>{html.escape(text)}</div>'
    rows, at = context_rows(meta, row, window)
    pieces = detokenize([str(t) for t in meta["token"].to_numpy()[rows]])
    parts = []
    for i, (r, (sep, text)) in enumerate(zip(rows, pieces, strict=True)):
        a = value if int(r) == row and acts is None else (acts or {}).get(int(r))
        cls = "tok hit" if i == at else "tok"
        style = f' style="{_shade(a, top)}"' if a is not None else ""
        tip = f' title="activation {a:.3f}"' if a is not None else ""
        parts.append(f'{html.escape(sep)}<span class="{cls}"{style}{tip} data-act='
                     f'"{"" if a is None else f"{a:.4g}"}">{html.escape(text)}</span>')
    return f'<div class="ctx"><span class="val">{value:.3f}</span>{"".join(parts)}</div>'


def _activations_of(j: int, meta: Any, rows: list[int], window: int,
                    activations: Activations | None) -> dict[int, float] | None:
    """Latent ``j``'s activation on every token of the contexts of ``rows``."""
    if activations is None or meta is None or "token" not in meta:
        return None
    need = np.unique(np.concatenate([context_rows(meta, r, window)[0] for r in rows])) \
        if rows else np.zeros(0, dtype=np.int64)
    if need.size == 0:
        return {}
    codes = np.asarray(activations(need))  # (len(need), d_sae)
    return dict(zip(need.tolist(), codes[:, j].astype(float).tolist(), strict=True))


def _card(j: int, stats: FeatureStats, meta: Any, n_top: int, window: int,
          activations: Activations | None, figures: list[dict[str, Any]]) -> str:
    freq = stats.count[j] / stats.n_rows
    top = float(stats.top_values[j][0]) if stats.top_values.shape[1] else 0.0
    out = [f'<div class="card" id="f{j}"><h3>Latent {j}</h3>',
           f'<div class="muted">fires on {stats.count[j]} of {stats.n_rows} rows '
           f'(frequency {freq:.2e}), mean active value {stats.mean_active[j]:.3f}, largest '
           f'{top:.3f}</div>']
    tops = [(float(v), int(r)) for v, r in zip(stats.top_values[j][:n_top],
                                                stats.top_rows[j][:n_top], strict=True) if r >= 0]
    qs = quantile_samples(stats, j)
    acts = _activations_of(j, meta, [r for _, r in tops] + [int(r) for q in qs for r in q["rows"]],
                           window, activations)
    sample = stats.sample_values[j][np.isfinite(stats.sample_values[j])]
    if sample.size:
        fid = f"hist-{j}"
        figures.append({"id": fid, "data": [{"type": "histogram", "x": sample.tolist(),
                                             "nbinsx": 20, "marker": {"color": "#e07a1f"}}],
                        "layout": {"height": 200, "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
                                   "xaxis": {"title": {"text": "activation (on rows where it "
                                                               "fires)"}},
                                   "yaxis": {"title": {"text": "sampled rows"}}}})
        out.append(f'<div class="hist" id="{fid}"></div>')
    out.append("<h4>Top activations</h4>")
    out.extend(_context_html(meta, r, v, window, acts, top) for v, r in tops)
    if qs:
        out.append("<h4>Activation quantile samples</h4>")
        for q in qs:
            out.append(f'<div class="muted quantile" data-low="{q["low"]!r}" '
                       f'data-high="{q["high"]!r}">{100 * q["q_low"]:.0f}-{100 * q["q_high"]:.0f}'
                       f' % of the firing activations: interval [{q["low"]:.3f}, '
                       f'{q["high"]:.3f}]</div>')
            out.extend(_context_html(meta, int(r), float(v), window, acts, top)
                       for r, v in zip(q["rows"], q["values"], strict=True))
    out.append("</div>")
    return "\n".join(out)


def _plot(div: str, data: list[dict[str, Any]], layout: dict[str, Any]) -> str:
    return (f'<div id="{div}"></div><script>Plotly.newPlot("{div}", {json.dumps(data)}, '
            f'{json.dumps(layout)});</script>')


def _geometry_html(g: Any, max_heatmap: int = 200) -> str:
    """The "Feature geometry" section: lobes (brain), crystals (atom), spectrum (galaxy)."""
    lb, sm, cr, sp = g.lobes, g.modularity, g.crystals, g.spectrum
    cp = g.cooccurrence.params
    out = ['<h2 id="geometry">Feature geometry</h2>',
           '<p class="muted">Li, Michaud, Baek, Engels, Sun and Tegmark (2024), "The geometry of '
           'concepts: sparse autoencoder feature structure". See docs/lm_geometry.md.</p>',
           "<h3>Lobes: latents that fire in the same windows</h3>",
           f'<p>{lb.latents.size} most frequent latents, {g.cooccurrence.n_windows:,} windows of '
           f'{cp["window"]} tokens within documents; affinity {lb.params["kind"]} '
           f'(negative values {lb.params["negative"]}ped), spectral clustering into {lb.sizes.size} lobes '
           f'of sizes {lb.sizes.tolist()}. Modularity Q = {lb.modularity:.3f}. Spatial modularity: '
           f'AMI with decoder-cosine clusters = {sm.ami:.3f} (permutation null {sm.null_mean:.3f} '
           f'&plusmn; {sm.null_std:.3f}, p = {sm.p_value:.3g}).</p>']
    keep = np.argsort(-g.cooccurrence.count, kind="stable")[:max_heatmap]
    keep = keep[np.lexsort((keep, lb.labels[keep]))]  # grouped by lobe
    names = [f"{int(j)} (lobe {int(lb.labels[i])})" for i, j in zip(keep, lb.latents[keep], strict=True)]
    out.append(_plot("lobes-heatmap", [{"type": "heatmap", "z": np.round(lb.affinity[np.ix_(keep, keep)], 3).tolist(),
                                        "x": names, "y": names, "colorscale": "Viridis"}],
                     {"title": {"text": "Co-occurrence affinity, latents grouped by lobe"}, "height": 520,
                      "xaxis": {"showticklabels": False}, "yaxis": {"showticklabels": False}}))
    out.append("<h3>Crystals: parallelograms among decoder directions</h3>")
    dist = cr.params.get("projection")
    out.append(f"<p>{cr.n_points} decoder directions (the most frequent latents), {cr.n_pairs:,} pairs; "
               f"{'distractor directions projected out; ' if dist else ''}tolerance {cr.params['tol']}. "
               f"{len(cr.crystals)} crystals holding {cr.n_parallelograms} parallelograms.</p>")
    if cr.crystals:
        rows = []
        for c in cr.crystals[:12]:
            pairs = ", ".join(f"{int(g.crystal_latents[i])}&rarr;{int(g.crystal_latents[j])}" for i, j in c.pairs[:8])
            more = " ..." if len(c.pairs) > 8 else ""
            rows.append(f"<tr><td>{len(c.pairs)}</td><td>{c.n_parallelograms}</td><td>{c.spread:.3f}</td>"
                        f"<td>{pairs}{more}</td></tr>")
        out.append('<table class="summary"><tr><th>pairs</th><th>parallelograms</th><th>spread</th>'
                   f'<th>latent pairs (i&rarr;j: W_dec[j] - W_dec[i])</th></tr>{"".join(rows)}</table>')
    out.append("<h3>Galaxy: spectrum of the decoder point cloud</h3>")
    act = "" if sp.activation_alpha is None else f", activations {sp.activation_alpha:.3f}"
    out.append(f"<p>Power-law exponent over ranks {sp.fit_range[0]}-{sp.fit_range[1]}: decoder "
               f"{sp.alpha:.3f} &plusmn; {sp.alpha_stderr:.3f} (R&sup2; {sp.r2:.3f}); isotropic Gaussian cloud "
               f"of the same shape {sp.null_alpha:.3f}{act}.</p>")
    series = [("decoder", sp.eigenvalues), ("isotropic null", sp.null_eigenvalues)]
    if sp.activation_eigenvalues is not None:
        series.append(("activations", sp.activation_eigenvalues))
    data = []
    for name, ev in series:
        ev = np.asarray(ev, dtype=float)
        ev = ev[ev > 0]
        data.append({"type": "scatter", "mode": "lines", "name": name, "x": list(range(1, ev.size + 1)),
                     "y": (ev / ev.sum()).tolist()})
    out.append(_plot("galaxy", data, {"title": {"text": "Covariance eigenvalues (normalised to sum 1)"},
                                      "xaxis": {"type": "log", "title": {"text": "rank"}},
                                      "yaxis": {"type": "log", "title": {"text": "eigenvalue"}}, "height": 380}))
    return "\n".join(out)


def feature_page(
    path: str | Path,
    stats: FeatureStats,
    *,
    meta: Any = None,
    evaluation: Any = None,
    features: Any = None,
    n_features: int = 32,
    n_top: int = 10,
    window: int = 8,
    title: str = "SAE features",
    info: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    report: str | Path | None = None,
    activations: Activations | None = None,
    geometry: Any = None,
) -> Path:
    """Write the page to ``path`` and its sidecar ``path.with_suffix('.json')``. ``meta``: the
    store's row metadata (doc_id, position, token) for token contexts; ``features``: latents to
    show (default: the ``n_features`` most frequent live ones); ``evaluation``: an
    :class:`~repscope.dictionaries.evaluate.SAEEvaluation`; ``info``: rows of the summary table;
    ``summary``: JSON-able facts for the report's "Sparse features" list (layer, architecture,
    d_in, d_sae, sae ...; FVU and L0 are added from ``evaluation``); ``report``: the analysis
    ``report.html`` to link back to (relative link); ``activations``: ``rows -> (len(rows),
    d_sae)`` codes of those rows, to shade every token of a context by the latent's activation
    (without it only the listed row's own activation is shown); ``geometry``: a
    :class:`~repscope.dictionaries.geometry.FeatureGeometry` shown in a "Feature geometry"
    section (its headline numbers go into the sidecar)."""
    from repscope._plotly import plotly_js

    if features is None:
        live = np.flatnonzero(stats.count > 0)
        features = live[np.argsort(-stats.count[live], kind="stable")][:n_features]
    rows = [f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in (info or {}).items()]
    if evaluation is not None:
        for name in ("value", "mse", "cosine", "l0_mean", "dead_fraction", "dense_fraction", "shrinkage",
                     "decoder_max_cosine_mean"):
            label = "FVU" if name == "value" else name
            rows.append(f"<tr><td>{label}</td><td>{getattr(evaluation, name):.4g}</td></tr>")
    freq = stats.count / stats.n_rows
    logf = np.log10(freq[freq > 0]).tolist()
    hist = {"data": [{"type": "histogram", "x": logf, "nbinsx": 40}],
            "layout": {"title": {"text": f"Feature density ({int((freq == 0).sum())} dead of {len(freq)})"},
                       "xaxis": {"title": {"text": "log10 firing frequency (fraction of rows)"}},
                       "yaxis": {"title": {"text": "latents"}}, "height": 320}}
    figures: list[dict[str, Any]] = [{"id": "density", **hist}]
    cards = "\n".join(_card(int(j), stats, meta, n_top, window, activations, figures)
                      for j in features)
    figs_json = json.dumps(figures).replace("</", "<\\/")
    path = Path(path)
    back = ""
    if report is not None:
        href = Path(os.path.relpath(Path(report).resolve(), path.parent.resolve())).as_posix()
        back = f'<p class="back"><a id="report-link" href="{html.escape(href)}">&larr; repscope report</a></p>'
    doc = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style><script type="text/javascript">{plotly_js()}</script></head><body>
{back}<h1>{html.escape(title)}</h1><table class="summary">{"".join(rows)}</table>
<div id="density"></div>
{"" if geometry is None else _geometry_html(geometry)}
<h2>Latents</h2><p class="muted">Each context is decoded as its tokenizer writes it; a token's
shade is the latent's activation on it relative to the latent's largest activation
(<span class="legend-swatch"></span> 0 to max; hover a token for the value); the outlined token
is the row listed.</p>{cards}
<script>
const figs = {figs_json};
Promise.all(figs.map(f => Plotly.newPlot(f.id, f.data, f.layout, {{displaylogo: false}})))
  .then(() => {{ document.body.dataset.plotsRendered = String(figs.length); }});
</script>
</body></html>"""
    atomic_write_text(path, doc)
    side = {"kind": FEATURE_PAGE_KIND, "title": title, "page": path.name, **(summary or {})}
    if geometry is not None:
        side["geometry"] = geometry.summary()
    if evaluation is not None:
        side.update(fvu=float(evaluation.value), l0_mean=float(evaluation.l0_mean),
                    eval_rows=int(evaluation.n_samples))
    atomic_write_text(sidecar_path(path), json.dumps(side, indent=2, sort_keys=True, default=str))
    return path
