"""``repscope analyze``, ``report``, ``plot`` and ``results``: the main job and its outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from repscope.analysis.plan import AnalyzeConfig
from repscope.cli._types import int_or_all
from repscope.config import cli_options, with_config
from repscope.errors import UserError


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _short(layer: str) -> str:
    """'encoder.layer.3' -> 'L3', 'embeddings' -> 'E' (terminal columns are narrow)."""
    parts = layer.split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        return f"{parts[-2][:1].upper()}{parts[-1]}"
    return layer[:1].upper() if layer == "embeddings" else layer[:8]


def _summary_table(db_path: Path, plan: Any, width: int = 100) -> Any:
    """Scalar measures x layers; pair measures as the value between consecutive layers.

    Fits ``width`` columns: when every layer does not fit beside the measure names, the layers
    are split over several tables (layers 1-k, k+1-..., each titled with its range), so no
    layer is dropped and no measure name is cut.
    """
    from rich.console import Group
    from rich.table import Table

    from repscope.analysis.db import load_results

    layers = list(plan.layers)
    df = load_results(db_path, status=None)
    df = df[(df["source_id"] == plan.source["source_id"]) & (df["rows_hash"] == plan.rows.digest)
            & df["layer"].isin(layers) & (df["layer_b"].isna() | df["layer_b"].isin(layers))]
    from rich import box

    rows: list[tuple[str, dict[str, str]]] = []
    single = df[(df["kind"] == "single") & (df["status"] == "ok")]
    for (measure, variant), g in single.groupby(["measure", "variant"]):
        by = dict(zip(g["layer"], g["value"], strict=True))
        rows.append((measure + (f" ({variant})" if variant else ""),
                     {layer: _fmt(by.get(layer)) for layer in layers}))
    pairs = df[(df["kind"] == "pair") & (df["status"] == "ok")]
    for (measure, variant), g in pairs.groupby(["measure", "variant"]):
        name = measure + (f" ({variant})" if variant else "")
        adjacent = {a: v for a, b, v in zip(g["layer"], g["layer_b"], g["value"], strict=True)
                    if layers.index(b) == layers.index(a) + 1} if layers else {}
        rows.append((name + " (i, i+1)", {layer: _fmt(adjacent.get(layer)) for layer in layers}))
    name_w = max([len("measure")] + [len(name) for name, _ in rows])
    cell_w = max([6] + [len(_short(x)) for x in layers]
                 + [len(v) for _, cells in rows for v in cells.values()])
    per = max(1, (width - name_w - 3) // (cell_w + 2))  # each column: text + 1 space a side
    chunks = [layers[i:i + per] for i in range(0, len(layers), per)] or [[]]
    title = "results by layer (E = embeddings, Ln = layer n; pairs: layer i vs i+1)"
    tables = []
    for k, chunk in enumerate(chunks):
        part = "" if len(chunks) == 1 else \
            f" - layers {k * per + 1}-{k * per + len(chunk)} of {len(layers)}"
        table = Table(title=title + part if k == 0 else part.lstrip(" -"),
                      header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                      padding=(0, 1), collapse_padding=True)
        table.add_column("measure", style="bold", no_wrap=True, min_width=name_w)
        for layer in chunk:
            table.add_column(_short(layer), justify="right", no_wrap=True, min_width=cell_w)
        for name, cells in rows:
            table.add_row(name, *[cells[layer] for layer in chunk])
        tables.append(table)
    errors = df[df["status"] != "ok"]
    if len(errors):
        tables[-1].caption = f"{len(errors)} result(s) failed: repscope results DB --status error"
    return tables[0] if len(tables) == 1 else Group(*tables)


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{f:.3g}"


def _text(v: Any) -> str:
    """A table cell: '' for a missing value (None, or NaN where pandas filled a gap)."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v)


class _MaxRows(click.ParamType):
    """``--max-rows``: an int (rows sampled per layer) or ``all`` (every row, no sampling)."""

    name = "INT|all"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 10:
            return value
        text = str(value).strip().lower()
        if text == "all":
            return ALL_ROWS
        if text.isdigit() and int(text) >= 10:
            return int(text)
        self.fail(f"'--max-rows' must be an int >= 10 or 'all' (every row). Got {value!r}.",
                  param, ctx)


MAX_DOCS_HELP = ("Documents to capture from the corpus, a seeded subset kept in corpus order; "
                 "'all' captures every document (in a config file: max_docs: all, or null). "
                 "[default: 40, a quick first run, as in 'repscope capture'; 'all' for real work]")

ALL_ROWS = "all"
"What ``--max-rows all`` parses to; the config then gets ``max_rows=None``."


def _all_rows_option(fn: Any) -> Any:
    """Give the generated ``--max-rows`` option the INT|all type (``cli_options`` makes it int)."""
    for param in getattr(fn, "__click_params__", []):
        if param.name == "max_rows":
            param.type = _MaxRows()
            param.help = ("Rows per layer to analyse, sampled with SEED, the same rows for every "
                          "layer; 'all' analyses every row (streamable measures then run as "
                          "map + merge on large stores). In a config file: max_rows: all (or null). "
                          "[default: 2000]")
    return fn


@click.command()
@with_config(AnalyzeConfig, symbols={"max_rows": {ALL_ROWS: None}, "max_docs": {ALL_ROWS: None}})
@_all_rows_option
@int_or_all("max_docs", 1, MAX_DOCS_HELP)
@cli_options(AnalyzeConfig)
def analyze(cfg: AnalyzeConfig) -> None:
    """Capture (or open a store), measure every layer, write results.duckdb and report.html.

    With no options: the bundled MiniLM model on the bundled pydoc corpus, every layer, the
    default measure panel and layer x layer similarity. Re-running skips results already in
    the database; an interrupted run resumes. Exit code: 0 when every result was computed,
    1 when a task failed or the run stopped (a one-line summary says which), 2 for a usage
    error (an option or config value refused before any work).

    Before the measures run, a preflight prints their estimated time and peak memory (each
    measure timed on a few rows of the store on this machine), refined while the run goes;
    --dry-run prints the plan and the estimate only.

    \b
    Examples:
      repscope analyze --max-docs 20                      # MiniLM on pydoc, default panel
      repscope analyze --model smollm2 --layers 'model.layers.*' --exclude-positions 0
      repscope analyze --store runs/smol/store --measures participation_ratio --pairs none
      repscope analyze --store runs/smol/store --permutations 200 --dry-run
    """
    from repscope.pipeline import analyze as run_analysis

    console = _console()
    run = run_analysis(cfg, progress=True, console=console)
    if cfg.dry_run:
        console.print(f"dry run: {run.n_results - run.n_cached} result(s) would be computed "
                      f"({run.n_cached} already present); plan: {run.plan_path}")
        return
    console.print(_summary_table(run.db_path, run.plan, console.width))
    _print_data_checks(console, run)
    if len(run.plans) > 1:
        steps = ", ".join(f"{p.source.get('checkpoint')}" for p in run.plans)
        console.print(f"checkpoint sweep over {len(run.plans)} checkpoints ({steps}); the "
                      f"table shows the last one, the report's 'Over training' section all.")
    console.print(
        f"[bold]{run.n_computed}[/] results computed, {run.n_cached} already present, "
        f"[{'red' if run.n_failed else 'green'}]{run.n_failed} failed[/] "
        f"in {run.seconds:.1f} s (run {run.run_id})."
    )
    console.print(f"database: [bold]{run.db_path}[/]")
    console.print(f"plan:     {run.plan_path}")
    if run.report_path is not None:
        console.print(f"report:   [bold]{run.report_path}[/]")
    if run.n_failed:
        raise UserError(_failure_summary(run.db_path, run.run_id, run.n_failed,
                                         run.n_computed + run.n_failed))


def _print_data_checks(console: Any, run: Any) -> None:
    """The massive-activation warning: one summary line, then the worst layers (at most 3)."""
    from rich.markup import escape

    from repscope.analysis.checks import summary_line

    line = summary_line(run.findings)
    if line is None:
        return
    console.print(f"[bold yellow]warning:[/] {escape(line)}")
    worst = sorted((f for f in run.findings if f.get("warn")),
                   key=lambda f: -f["variance_share"])[:3]
    for f in worst:
        console.print(f"  {escape(f['message'])}")
    console.print(f"  (every layer: 'repscope results {run.out} --findings'; "
                  f"the report's 'Data checks' section)")


def _print_findings(db: Path, layer: str | None) -> None:
    """``repscope results DB --findings``: one line per layer and check."""
    from rich.markup import escape
    from rich.table import Table

    from repscope.analysis.db import load_findings

    df = load_findings(db)
    if layer is not None:
        df = df[df["layer"] == layer]
    table = Table(title=f"{len(df)} data check(s)", header_style="bold")
    for col in ("layer", "check", "warn", "coordinate", "share", "max |x|", "exclude"):
        table.add_column(col, justify="right" if col in ("coordinate", "share", "max |x|")
                         else "left")
    for r in df.itertuples():
        table.add_row(_text(r.layer), _text(r.check_name), "yes" if r.warn else "no",
                      str(int(r.coordinate)), f"{r.variance_share:.1%}", _fmt(r.max_abs),
                      escape(_text(r.exclude_positions)))
    _console().print(table)


def _failure_summary(db_path: Path, run_id: str, n_failed: int, n_run: int) -> str:
    """One line: how many results of the run failed, by measure, with each first error."""
    from repscope.analysis.db import load_results

    df = load_results(db_path, status="error")
    df = df[df["run_id"] == run_id]
    parts = []
    for (measure, variant), g in df.groupby(["measure", "variant"], sort=True):
        name = measure + (f" ({variant})" if variant else "")
        first = str(g["error"].iloc[0] or "").strip().splitlines()
        reason = first[0][:120] if first else "unknown error"
        parts.append(f"{name} on {g['layer'].nunique()} layer(s) x{len(g)} [{reason}]")
    what = "; ".join(parts) if parts else "see the database"
    return (f"{n_failed} of {n_run} result(s) of run {run_id} failed: {what}. Details: "
            f"'repscope results {db_path.parent} --status error'; rerun the same command to "
            f"retry the failed ones.")


@click.command()
@with_config()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: report.html next to the database).")
@click.option("--run-id", default=None, help="Report this run (default: the latest).")
def report(results: Path, out: Path | None, run_id: str | None) -> None:
    """Regenerate the HTML report from a results directory or .duckdb file.

    \b
    Examples:
      repscope report repscope-out
      repscope report repscope-out/results.duckdb --out paper/report.html
    """
    from repscope.report.html import write_report

    path = write_report(results, out, run_id=run_id)  # errors: one line (repscope.cli._errors)
    _console().print(f"report: [bold]{path}[/]")


@click.command()
@with_config()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the figures (default: figures/ next to the database).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["png", "pdf", "svg"]),
              default=("png", "pdf"), show_default=True, help="File formats (repeatable).")
@click.option("--run-id", default=None, help="Plot this run (default: the latest).")
@click.option("--checkpoint", default=None,
              help="In a checkpoint sweep, the checkpoint the per-layer figures show "
                   "(default: the last).")
def plot(results: Path, out_dir: Path | None, formats: tuple[str, ...], run_id: str | None,
         checkpoint: str | None) -> None:
    """Write static figures (matplotlib) for papers from a results directory or .duckdb file.

    \b
    Examples:
      repscope plot repscope-out
      repscope plot repscope-out --format pdf --out-dir paper/figures
    """
    from repscope.analysis.db import ResultsDB
    from repscope.report.figures import write_figures

    db = ResultsDB.at(results)
    out_dir = out_dir or db.path.parent / "figures"
    paths = write_figures(db.path, out_dir, formats=formats, run_id=run_id,
                          checkpoint=checkpoint)
    _console().print(f"{len(paths)} figure files in [bold]{out_dir}[/]")


@click.command()
@with_config()
@click.argument("db", type=click.Path(exists=True, path_type=Path))
@click.option("--measure", default=None, help="Only this measure.")
@click.option("--layer", default=None, help="Only this layer.")
@click.option("--status", type=click.Choice(["ok", "error", "any"]), default="ok",
              show_default=True, help="Which results.")
@click.option("--export", "export", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the selected rows to a .parquet or .csv file.")
@click.option("--limit", type=int, default=200, show_default=True, help="Rows to print.")
@click.option("--findings", is_flag=True, default=False,
              help="Print the data checks (massive activations, dominant coordinates per layer) "
                   "instead of the results.")
def results(db: Path, measure: str | None, layer: str | None, status: str,
            export: Path | None, limit: int, findings: bool) -> None:
    """Print results from a database (a results directory or .duckdb file), or export them.

    \b
    Examples:
      repscope results repscope-out --measure participation_ratio
      repscope results repscope-out --findings          # massive activations per layer
      repscope results repscope-out --status error
      repscope results repscope-out --export results.parquet
    """
    from rich.markup import escape
    from rich.table import Table

    from repscope.analysis.db import load_results

    if findings:
        _print_findings(db, layer)
        return

    df = load_results(db, status=None if status == "any" else status, measure=measure,
                      layer=layer)
    console = _console()
    if export is not None:
        from repscope.analysis.db import export_results

        try:
            export_results(db, export, status=None if status == "any" else status,
                           measure=measure, layer=layer)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        console.print(f"{len(df)} rows written to [bold]{export}[/]")
        return
    table = Table(title=f"{len(df)} result(s)", header_style="bold")
    for col in ("measure", "variant", "layer", "layer_b", "value", "interval", "n", "status"):
        table.add_column(col, justify="right" if col in ("value", "n") else "left")
    for r in df.head(limit).itertuples():
        interval = (f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if _fmt(r.ci_low) != "-"
                    else (f"± {_fmt(r.stderr)}" if _fmt(r.stderr) != "-" else ""))
        error = (_text(r.error).splitlines() or [""])[0][:60]
        state = _text(r.status) if r.status == "ok" else f"[red]{escape(error)}[/]"
        n = "" if _fmt(r.n) == "-" else str(int(r.n))
        table.add_row(_text(r.measure), _text(r.variant), _text(r.layer), _text(r.layer_b),
                      _fmt(r.value), interval, n, state)
    console.print(table)
    if len(df) > limit:
        console.print(f"... {len(df) - limit} more; use --limit or --export.")
