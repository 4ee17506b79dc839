"""``repscope compression-table``: how far an embedding compresses before retrieval degrades."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("compression-table")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--layer", default=None, help="Layer of a capture store (SOURCE a store directory).")
@click.option("--max-rows", type=int, default=None, help="Use the first N rows only.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours compared.")
@click.option("--dims", default="all,128,64,32,16", show_default=True,
              help="PCA dimensions kept, comma-separated ('all' = every feature).")
@click.option("--quantizers", default="flat,sq8,pq", show_default=True,
              help="Comma-separated among flat, sq8, pq, hnsw.")
@click.option("--pq-bytes", type=int, default=None, help="PQ code bytes (default ~dims/4).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows as JSON here (atomic).")
def compression_table(source: Path, layer: str | None, max_rows: int | None, k: int, dims: str,
                      quantizers: str, pq_bytes: int | None, seed: int,
                      as_json: Path | None) -> None:
    """Recall@k vs dimensions kept (PCA) x quantiser, with bytes per vector.

    SOURCE is a .npy file of shape (n, d) or a capture store directory (with --layer).

    \b
    Examples:
      repscope compression-table repscope-out/store --layer encoder.layer.5
      repscope compression-table embeddings.npy -k 10 --dims all,64 --json table.json
    """
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from repscope._io import atomic_write_text
    from repscope._version import __version__
    from repscope.neighbors import compression_table as table_of

    if source.is_dir():
        from repscope.capture import ActivationStore

        if layer is None:
            raise click.BadParameter("a store directory needs --layer", param_hint="--layer")
        store = ActivationStore.open(source)
        rows = None if max_rows is None else slice(0, min(max_rows, store.n_rows))
        X = store.read(layer, rows)
    else:
        if source.suffix != ".npy":
            raise click.BadParameter(f"expected a .npy file or a store directory; got {source}",
                                     param_hint="SOURCE")
        X = np.load(source, mmap_mode="r")
        X = np.array(X if max_rows is None else X[:max_rows])  # (n, d) in memory
    try:
        kept = [None if d.strip() == "all" else int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated ints or 'all'; got {dims!r}",
                                 param_hint="--dims") from None
    quants = [q.strip() for q in quantizers.split(",") if q.strip()]
    # a bad value raises the library's one-line ValueError: the CLI's handler prints it (exit 2)
    rows_out = table_of(X, k=k, dims=kept, quantizers=quants, pq_bytes=pq_bytes, seed=seed)
    table = Table(title=f"recall@{k} vs compression: {source.name} {layer or ''} "
                        f"({X.shape[0]} x {X.shape[1]})")
    for col in ("dims", "quantizer", f"recall@{k}", "95% CI", "bytes/vector"):
        table.add_column(col)
    for r in rows_out:
        table.add_row(str(r.dims), r.quantizer, f"{r.recall:.4f}",
                      f"[{r.recall_ci[0]:.4f}, {r.recall_ci[1]:.4f}]", f"{r.bytes_per_vector:g}")
    Console().print(table)
    if as_json is not None:
        payload = {"source": str(source), "layer": layer, "n": int(X.shape[0]),
                   "d": int(X.shape[1]), "k": k, "repscope_version": __version__,
                   "rows": [r.to_dict() for r in rows_out]}
        atomic_write_text(as_json, json.dumps(payload, indent=2))
