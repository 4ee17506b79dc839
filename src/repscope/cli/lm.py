"""``repscope lm-geometry``: language-model geometry of a store captured with predictions."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("lm-geometry")
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory for the tables (CSV), figures (PNG) and summary.json.")
@click.option("--layer", "layers", multiple=True,
              help="Residual-stream layers (repeatable; default: every layer that is not an attention output).")
@click.option("--estimator", default="gride", show_default=True,
              help="Registered dimension estimator for each prompt's token cloud.")
@click.option("--k-overlap", default=4, show_default=True, help="Neighbours of the overlap across layers.")
@click.option("--min-tokens", default=16, show_default=True, help="Prompts with fewer tokens get no geometry.")
@click.option("--n-boot", default=1000, show_default=True, help="Bootstrap resamples over documents.")
@click.option("--seed", default=0, show_default=True)
def lm_geometry(store_path: Path, out_dir: Path, layers: tuple[str, ...], estimator: str, k_overlap: int,
                min_tokens: int, n_boot: int, seed: int) -> None:
    """Per-prompt token-cloud geometry, ID vs surprisal per layer, and attention-output
    subspaces next to the residual stream (docs/lm_geometry.md).

    \b
    Examples:
      repscope capture --model smollm2 --predictions next_token --out runs/smol
      repscope lm-geometry runs/smol/store --out runs/smol/lm
    """
    from rich.console import Console

    from repscope._io import atomic_write_text
    from repscope.analysis.attention_subspaces import attention_subspaces, pair_attention_layers
    from repscope.analysis.id_surprisal import id_surprisal_by_layer
    from repscope.analysis.prompt_geometry import prompt_geometry
    from repscope.capture import ActivationStore, StoreError
    from repscope.report import lm_figures

    try:
        store = ActivationStore.open(store_path)
        if "next_logprob" not in store.manifest.get("meta_columns", {}):
            raise ValueError(f"The store {str(store_path)!r} holds no next-token log-likelihoods; capture "
                             f"a causal LM with predictions (repscope capture --predictions).")
        pairs = pair_attention_layers(store.layers)
        resid = list(layers) or [n for n in store.layers if n not in set(pairs.values())]
        pg = prompt_geometry(store, layers=resid, estimator=estimator, k_overlap=k_overlap,
                             min_tokens=min_tokens, n_boot=n_boot, seed=seed)
        ids = id_surprisal_by_layer(store, layers=resid, estimator=estimator, min_rows=min_tokens,
                                    n_boot=n_boot, seed=seed)
        att = attention_subspaces(store, pairs=pairs, seed=seed) if pairs else None
    except (StoreError, ValueError, KeyError, OSError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in (("prompt_geometry", pg.rows), ("prompt_relation", pg.relation),
                     ("id_surprisal", ids), ("attention_subspaces", att)):
        if df is not None:
            atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
            written.append(out_dir / f"{name}.csv")
    written.append(lm_figures.prompt_geometry_figure(pg, out_dir / "prompt_geometry.png"))
    written.append(lm_figures.id_surprisal_figure(ids, out_dir / "id_surprisal.png"))
    if att is not None:
        written.append(lm_figures.attention_subspaces_figure(att, out_dir / "attention_subspaces.png"))
    best = ids.iloc[ids["correlation"].abs().idxmax()] if ids["correlation"].notna().any() else None
    summary = {"store": str(store_path), "layers": resid, "params": pg.params,
               "strongest_id_surprisal": None if best is None else best.to_dict(),
               "attention_pairs": pairs}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    con = Console()
    for p in written:
        con.print(f"wrote {p}")
