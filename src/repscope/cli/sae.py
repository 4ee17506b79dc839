"""``repscope sae train|inspect|export``: sparse autoencoders on a store layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from repscope.config import cli_options, with_config
from repscope.dictionaries.train import TrainConfig


@click.group()
def sae() -> None:
    """Train, evaluate and inspect sparse autoencoders on ActivationStore layers.

    \b
    Examples:
      repscope sae train --store repscope-out/store --layer encoder.layer.3 --out runs/sae
      repscope sae inspect runs/sae --store repscope-out/store
      repscope sae export runs/sae --format saelens --out runs/sae-lens
    """


def _open_store(path: Path) -> Any:
    from repscope.capture import ActivationStore

    return ActivationStore.open(path)


def _eval_rows(n: int, limit: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(n, size=min(n, limit), replace=False))


def _print_eval(ev: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("value", "explained_variance", "explained_variance_uncentred", "mse",
                 "sq_error_per_token", "cosine", "l0_mean", "dead_fraction", "dense_fraction",
                 "shrinkage", "l2_ratio", "decoder_max_cosine_mean"):
        if hasattr(ev, name):
            table.add_row("FVU" if name == "value" else name, f"{getattr(ev, name):.4g}")
    Console().print(table)


def _write_error(exc: OSError, out_dir: Path) -> click.ClickException:
    """One line for a failed write (full disk, read-only directory, ...)."""
    where = exc.filename or str(out_dir)
    reason = exc.strerror or str(exc)
    return click.ClickException(
        f"cannot write {str(where)!r}: {reason} (errno {exc.errno}). Nothing written is corrupt: "
        f"fix it and rerun the same command to resume from the last checkpoint in {str(out_dir)!r}.")


@sae.command()
@with_config(TrainConfig)
@click.option("--store", "store_path", type=click.Path(path_type=Path), required=True,
              help="ActivationStore directory (from `repscope capture`).")
@click.option("--layer", required=True, help="Layer of the store to train on, e.g. encoder.layer.2.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output directory: cfg.json, sae.safetensors, manifest.json, state.safetensors, eval.json.")
@click.option("--eval-rows", default=20000, show_default=True,
              help="Held-out rows sampled for the evaluation.")
@click.option("--resume/--no-resume", default=True, help="Continue from the training state in --out if present.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--dry-run", is_flag=True, default=False,
              help="Print the resolved plan and its estimated time and peak memory (a few steps "
                   "timed on this machine), then stop.")
@cli_options(TrainConfig)
def train(cfg: TrainConfig, store_path: Path, layer: str, out_dir: Path, eval_rows: int,
          resume: bool, progress: bool, dry_run: bool) -> None:
    """Train a sparse autoencoder on one layer of a store (resumable).

    Before training, a preflight refuses a batch larger than the training rows or far more
    latents than rows, and prints the estimated time and peak memory.

    \b
    Examples:
      repscope sae train --store repscope-out/store --layer encoder.layer.3 --out runs/sae
      repscope sae train --store runs/smol/store --layer model.layers.12 --out runs/sae12 \\
                         --architecture batchtopk --k 32 --expansion 8 --dry-run
    """
    from rich.console import Console

    from repscope._io import atomic_write_text
    from repscope.capture import StoreError
    from repscope.dictionaries.evaluate import evaluate_sae
    from repscope.dictionaries.preflight import sae_preflight
    from repscope.dictionaries.train import train_sae
    from repscope.errors import UsageError

    try:
        store = _open_store(store_path)
        if layer in store.layers:  # an unknown layer: train_sae's own error names the layers
            plan = sae_preflight(cfg, int(store.n_rows), int(store.dim(layer)))
            for line in plan.lines():
                Console(stderr=True).print(line)
            if dry_run:
                return
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: data parallel
            from repscope.dictionaries.distributed import train_sae_distributed

            result = train_sae_distributed(store, cfg, layer=layer, out_dir=out_dir,
                                           resume=resume, progress=progress)
            if int(os.environ.get("RANK", "0")) != 0:
                return  # process 0 evaluates and reports; every process holds the same SAE
        else:
            result = train_sae(store, cfg, layer=layer, out_dir=out_dir, resume=resume,
                               progress=progress)
        held = len(result.heldout_rows) > 0
        pool = result.heldout_rows if held else result.train_rows
        rows = pool[_eval_rows(len(pool), eval_rows, cfg.seed)]
        split = "held-out" if held else "train (in-sample: no rows were held out)"
        ev = evaluate_sae(result.sae, store.read(layer, rows), split=split)
        atomic_write_text(out_dir / "eval.json", ev.to_json())
    except UsageError:
        raise
    except (StoreError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise _write_error(exc, out_dir) from exc
    _print_eval(ev, f"{cfg.architecture} SAE on {layer}: {result.sae.d_sae} latents, "
                    f"evaluated on {len(rows):,} {split} rows")
    Console().print(f"SAE: {out_dir}")


@sae.command()
@with_config()
@click.argument("sae_dir", type=click.Path(path_type=Path))
@click.option("--store", "store_path", type=click.Path(path_type=Path), required=True,
              help="ActivationStore with the rows to inspect.")
@click.option("--layer", default=None, help="Store layer (default: the SAE's hook_name).")
@click.option("--out", "out_file", type=click.Path(path_type=Path), default=None,
              help="HTML page to write [default: SAE_DIR/features.html].")
@click.option("--features", "n_features", default=32, show_default=True,
              help="Latents shown (the most frequent live ones).")
@click.option("--top", "n_top", default=10, show_default=True, help="Top activations per latent.")
@click.option("--max-rows", default=200000, show_default=True,
              help="Inspect at most this many rows (the first ones).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="A `repscope analyze` output directory (or its report.html): write the page "
                   "there [default: DIR/features/SAE-LAYER.html] and regenerate report.html with a "
                   "link to it. Automatic when --out lies inside such a directory.")
@click.option("--geometry/--no-geometry", default=False, show_default=True,
              help="Add the feature-geometry section: co-occurrence lobes, decoder crystals, "
                   "decoder spectrum (docs/lm_geometry.md).")
@click.option("--window", default=256, show_default=True,
              help="Co-occurrence window in tokens within a document (--geometry).")
@click.option("--lobes", "n_lobes", default=4, show_default=True, help="Number of lobes (--geometry).")
def inspect(sae_dir: Path, store_path: Path, layer: str | None, out_file: Path | None,
            n_features: int, n_top: int, max_rows: int, report_path: Path | None,
            geometry: bool, window: int, n_lobes: int) -> None:
    """Write a self-contained HTML page with each latent's top-activating tokens.

    \b
    Examples:
      repscope sae inspect runs/sae --store repscope-out/store
      repscope sae inspect runs/sae --store repscope-out/store --report repscope-out
    """
    import numpy as np
    from rich.console import Console

    from repscope.capture import StoreError
    from repscope.dictionaries.evaluate import evaluate_sae
    from repscope.dictionaries.inspect import feature_stats
    from repscope.dictionaries.io import load_sae, read_cfg
    from repscope.dictionaries.page import feature_page
    from repscope.dictionaries.source import ArraySource

    try:
        cfg = read_cfg(sae_dir)
        model = load_sae(sae_dir)
        store = _open_store(store_path)
        layer = layer or cfg.get("hook_name")
        if layer is None:
            raise ValueError("The SAE's cfg.json names no layer (hook_name); pass --layer.")
        if layer not in list(store.layers):
            raise ValueError(f"--layer {layer!r} is not a layer of the store {str(store_path)!r}; "
                             f"its layers: {list(store.layers)}.")
        if store.dim(layer) != model.d_in:
            raise ValueError(f"The SAE in {str(sae_dir)!r} reads {model.d_in} features, but layer "
                             f"{layer!r} of the store has {store.dim(layer)}.")
        rows = np.arange(min(store.n_rows, max_rows))
        X = store.read(layer, rows)
        stats = feature_stats(model, ArraySource(X, "repscope sae inspect"), top_k=n_top)
        ev = evaluate_sae(model, X)
        meta = store.metadata(rows).reset_index(drop=True)
        geo = None
        if geometry:
            from repscope.dictionaries.geometry import feature_geometry

            geo = feature_geometry(model, X, doc_ids=meta["doc_id"].to_numpy(), window=window,
                                   n_lobes=n_lobes)
    except (StoreError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    info = {"SAE": str(sae_dir), "architecture": cfg["architecture"], "d_in x d_sae":
            f"{cfg['d_in']} x {cfg['d_sae']}", "store": str(store_path), "layer": layer,
            "rows inspected": f"{len(rows):,}"}
    summary = {"layer": layer, "architecture": cfg["architecture"], "d_in": cfg["d_in"],
               "d_sae": cfg["d_sae"], "sae": str(sae_dir), "store": str(store_path),
               "rows_inspected": len(rows)}
    report_dir = _report_dir(report_path, out_file)
    if out_file is None:
        out_file = (sae_dir / "features.html" if report_dir is None else
                    report_dir / "features" / _page_name(sae_dir, layer))
    def activations(idx: Any) -> Any:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(X[idx]).to(model.W_dec.device)
            return model.encode(x).float().cpu().numpy()

    out = feature_page(out_file, stats, meta=meta, evaluation=ev, n_features=n_features,
                       n_top=n_top, info=info, summary=summary, activations=activations,
                       report=None if report_dir is None else report_dir / "report.html",
                       geometry=geo,
                       title=f"{cfg['architecture']} SAE features of {layer}")
    _print_eval(ev, f"SAE on {layer}, {len(rows):,} rows")
    Console().print(f"Feature page: {out}")
    if report_dir is not None:
        from repscope.feature_pages import MAX_DEPTH
        from repscope.report.html import write_report

        inside = Path(out).resolve().parent.parts[len(report_dir.resolve().parts):]
        if not Path(out).resolve().is_relative_to(report_dir.resolve()) or len(inside) > MAX_DEPTH:
            Console().print(f"[yellow]The page is not within {MAX_DEPTH} levels of {report_dir}: "
                            "the report will not list it.[/]")
        try:
            Console().print(f"Report:       {write_report(report_dir / RESULTS_DB)}")
        except ValueError as exc:
            raise click.ClickException(f"The feature page was written, but the report was not "
                                       f"regenerated: {exc}") from exc


@sae.command()
@click.argument("sae_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["saelens", "sparsify", "repscope"]), required=True,
              help="Layout to write: SAELens 6 (SAE.load_from_disk), sparsify (SparseCoder.load_from_disk) "
                   "or repscope's.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Directory to write.")
def export(sae_dir: Path, fmt: str, out_dir: Path) -> None:
    """Write a saved SAE (any readable layout) in another library's layout.

    \b
    Examples:
      repscope sae export runs/sae --format saelens --out runs/sae-lens
    """
    from rich.console import Console

    from repscope.dictionaries.io import load_sae, read_cfg, save_sae

    try:
        cfg = read_cfg(sae_dir)
        save_sae(load_sae(sae_dir), out_dir, format=fmt, hook_name=cfg.get("hook_name"))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write {str(exc.filename or out_dir)!r}: "
                                   f"{exc.strerror or exc} (errno {exc.errno}).") from exc
    Console().print(f"{fmt} SAE: {out_dir}")


RESULTS_DB = "results.duckdb"


def _report_dir(report_path: Path | None, out_file: Path | None) -> Path | None:
    """The analyze output directory the page belongs to: ``--report`` (a directory holding
    results.duckdb, or a file in it), else the nearest parent of ``--out`` (as deep as the
    report looks for pages) that holds results.duckdb, else None."""
    if report_path is not None:
        folder = report_path if report_path.is_dir() else report_path.parent
        if not (folder / RESULTS_DB).is_file():
            raise click.ClickException(
                f"--report {str(report_path)!r}: expected a `repscope analyze` output directory "
                f"with {RESULTS_DB} inside it.")
        return folder
    if out_file is not None:
        from repscope.feature_pages import MAX_DEPTH

        for folder in list(out_file.resolve().parents)[:MAX_DEPTH + 1]:
            if (folder / RESULTS_DB).is_file():
                return folder
    return None


def _page_name(sae_dir: Path, layer: str) -> str:
    import re

    stem = f"{sae_dir.resolve().name}-{layer}"
    return re.sub(r"[^\w.-]+", "_", stem) + ".html"
