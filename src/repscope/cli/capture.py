"""``repscope capture`` (model + corpus -> ActivationStore) and ``repscope info STORE``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from repscope.capture.run import CaptureConfig
from repscope.cli._types import ALL, int_or_all
from repscope.config import cli_options, with_config


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@click.command()
@with_config(CaptureConfig, symbols={"max_docs": {ALL: None}})
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@int_or_all("max_docs", 1, "Documents to capture from the corpus, a seeded subset kept in corpus "
                          "order; 'all' captures every document (in a config file: max_docs: "
                          "all, or null). [default: 40, a quick first run, as in 'repscope "
                          "analyze'; 'all' for real work]")
@cli_options(CaptureConfig)
def capture(cfg: CaptureConfig, progress: bool) -> None:
    """Capture activations of a model over a corpus into an ActivationStore.

    Defaults: the bundled all-MiniLM-L6-v2, Python's documentation topics, the embeddings plus
    every block, one row per token. Re-running the same command resumes an interrupted capture.

    \b
    Examples:
      repscope capture                                  # MiniLM, 40 pydoc topics, token rows
      repscope capture --pooling mean --max-docs all --out runs/mean
      repscope capture --model smollm2 --layers 'model.layers.*' --exclude-positions 0 \\
                       --out runs/smol
      repscope capture --model path/to/model.gguf --corpus texts.jsonl --out runs/mine
    """
    from rich.console import Console
    from rich.table import Table

    from repscope.capture import run_capture
    from repscope.capture.run import CaptureStats

    stats: list[CaptureStats] = []
    store = run_capture(cfg, progress=progress, stats=stats)
    st = stats[0]
    table = Table(title=f"ActivationStore {store.path}")
    for col in ("layer", "rows", "dim", "dtype", "size on disk"):
        table.add_column(col, justify="left" if col in ("layer", "dtype") else "right")
    per_layer = {s_file: 0 for s_file in store.layers}
    for shard in store.shards:
        for entry in store.manifest["layers"]:
            per_layer[entry["name"]] += shard.files[entry["file"]]["bytes"]
    for layer in store.layers:
        table.add_row(layer, f"{store.n_rows:,}", str(store.dim(layer)), store.dtype,
                      _size(per_layer[layer]))
    console = Console()
    console.print(table)
    rate = st.tokens / st.seconds if st.seconds > 0 else 0.0
    note = "already complete, nothing to do" if st.tokens == 0 else (
        f"{st.tokens:,} tokens in {st.seconds:.1f} s ({rate:,.0f} tokens/s)"
        + (f", resumed after {st.resumed_from_shard} shard(s)" if st.resumed_from_shard else ""))
    console.print(f"{len(store.shards)} shard(s), {_size(store.nbytes())} on disk; {note}.")
    if st.warning():
        console.print(f"[yellow]warning:[/] {st.warning()}")
    elif st.windowed:
        console.print(f"{st.windowed:,} long document(s) split into overlapping windows "
                      f"(every token stored once).")
    console.print(f"Store: {store.path}")


def _token_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """How long documents and token selection were handled (stores that record it)."""
    tokens, sel = m.get("tokens"), m.get("token_selection")
    if not tokens:
        return []
    out = [("long documents", f"{tokens.get('long_documents')} at max_length "
                              f"{tokens.get('max_length')}: {tokens.get('n_truncated', 0):,} "
                              f"truncated ({tokens.get('tokens_cut', 0):,} tokens cut), "
                              f"{tokens.get('n_windowed', 0):,} split into windows")]
    if sel:
        out.append(("token selection", f"exclude positions {sel.get('exclude_positions')}, "
                                       f"special tokens "
                                       f"{'excluded' if sel.get('exclude_special_tokens') else 'kept'}"
                                       f", padding excluded"))
    return out


@click.command()
@with_config()
@click.argument("store_path", type=click.Path(path_type=Path))
@click.option("--verify/--no-verify", default=True,
              help="Check the sha256 of every shard file (reads the whole store).")
def info(store_path: Path, verify: bool) -> None:
    """Describe an ActivationStore: provenance, layers, rows, shards and integrity.

    \b
    Examples:
      repscope info repscope-out/store
      repscope info runs/smol/store --no-verify   # skip the sha256 check
    """
    from rich.console import Console
    from rich.table import Table

    from repscope.capture import ActivationStore, StoreError

    console = Console()
    store = ActivationStore.open(store_path, verify="size", allow_incomplete=True)
    m = store.manifest
    summary = Table(title=f"ActivationStore {store_path}", show_header=False)
    summary.add_column("key")
    summary.add_column("value")
    rows = [
        ("status", m["status"] + ("" if store.complete else " (run the same capture to resume)")),
        ("format", f"{m['format']} v{m['format_version']}"),
        ("repscope", m.get("repscope_version", "?")),
        ("model", f"{m.get('model', {}).get('id', '?')}"),
        ("weights sha256", m.get("model", {}).get("weights_sha256", "?")),
        ("data", f"{m.get('data', {}).get('id', '?')} ({m.get('data', {}).get('n_documents', '?')} "
                 f"documents)"),
        ("data sha256", m.get("data", {}).get("sha256", "?")),
        ("pooling", str(m.get("pooling"))),
        *_token_rows(m),
        ("dtype", m["dtype"]),
        ("rows", f"{store.n_rows:,}"),
        ("shards", f"{len(store.shards)} x up to {m['shard_rows']:,} rows"),
        ("size on disk", _size(store.nbytes())),
        ("created", str(m.get("created"))),
        ("completed", str(m.get("completed"))),
    ]
    for k, v in rows:
        summary.add_row(k, v)
    console.print(summary)
    layers = Table(title="layers")
    for col in ("#", "layer", "dim", "file"):
        layers.add_column(col)
    for i, entry in enumerate(m["layers"]):
        layers.add_row(str(i), entry["name"], str(entry["dim"]), entry["file"])
    console.print(layers)
    if not verify:
        console.print("integrity: sizes checked (sha256 not checked, --no-verify)")
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    with Progress(TextColumn("verify"), BarColumn(), DownloadColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("verify", total=store.nbytes())
        try:
            report = store.verify(progress=lambda n: bar.update(task, advance=n))
        except StoreError as exc:
            raise StoreError(f"integrity check FAILED: {exc}") from exc
    console.print(f"integrity: OK ({report.files} files; checked: {', '.join(report.checked)})")
    for item in report.unchecked:
        console.print(f"[yellow]not checked: {item}[/]")
