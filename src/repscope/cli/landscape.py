"""``repscope landscape``: the intrinsic dimension of tasks' objective landscapes."""

from __future__ import annotations

import math
from typing import Any

import click

from repscope.config import cli_options, with_config
from repscope.landscape.config import LandscapeConfig


def _table(results: Any) -> Any:
    from rich import box
    from rich.table import Table

    fracs = sorted({e.fraction for r in results for e in r.estimates})
    table = Table(title="intrinsic dimension (d_int: smallest d whose seed-mean reaches the "
                        "fraction of full training)", box=box.SIMPLE_HEAD, header_style="bold")
    for col in ("task", "D", "projection", "full training"):
        table.add_column(col, justify="left" if col in ("task", "projection") else "right")
    for f in fracs:
        table.add_column(f"d_int{f * 100:g} [seed range]", justify="right")
        table.add_column("d / D", justify="right")
    for r in results:
        row = [r.task, f"{r.n_params:,}", r.projection + (" + SAID" if r.said else ""),
               f"{r.baseline_mean:.4g}"]
        for f in fracs:
            e = r.d_int(f)
            if e.censored:
                row += [f"> {e.max_dim:,}", ""]
                continue
            lo, hi = e.ci if e.ci is not None else (math.nan, math.nan)
            hi_text = f"{hi:,.0f}" if math.isfinite(hi) else "not all"
            row += [f"{e.value:,.0f} [{lo:,.0f}, {hi_text}]", f"{e.value / r.n_params:.1e}"]
        table.add_row(*row)
    return table


@click.command()
@with_config(LandscapeConfig)
@cli_options(LandscapeConfig)
def landscape(cfg: LandscapeConfig) -> None:
    """Measure the intrinsic dimension of objective landscapes (d_int90, Li et al. 2018; SAID,
    Aghajanyan et al. 2021): train in random subspaces of growing dimension d, find the smallest
    d reaching a fraction of full training, with the range over seeds.

    Writes OUT/results.duckdb (every training run; a rerun resumes and skips them), plan.json,
    config.json, landscape.html (interactive, offline) and landscape.png.

    \b
    Examples:
      repscope landscape --task digits-mlp --task digits-cnn --out out/digits
      repscope landscape --task fashion-cnn --task-params '{"n_train": 5000}' \\
          --executor process --workers 2 --out out/fashion
      repscope landscape --task chatterbot-minilm --seeds 0 --seeds 1 --d-max 4096 --out out/said
      repscope landscape --task lstsq --task-params '{"rank": 7}' --fractions 1.0 \\
          --precision 0 --out out/lstsq
      repscope landscape --config landscape.yaml
    """
    from rich.console import Console

    from repscope.landscape.run import run_landscape
    from repscope.landscape.search import LandscapeError

    console = Console(highlight=False)
    try:
        run = run_landscape(cfg, progress=True,
                            say=lambda text: console.print(f"[bold]sweep[/] {text}"))
    except ValueError as exc:
        raise click.UsageError(str(exc).splitlines()[0]) from None
    except (FileNotFoundError, LandscapeError, ImportError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    console.print(_table(run.results))
    console.print(f"[bold]{run.n_computed}[/] training runs computed, "
                  f"{run.n_runs - run.n_computed} already in the database, "
                  f"in {run.seconds:.1f} s.")
    console.print(f"database: [bold]{run.db_path}[/]")
    console.print(f"plan:     {run.plan_path}")
    if run.report_path is not None:
        console.print(f"report:   [bold]{run.report_path}[/]")
        console.print(f"figure:   {run.figure_path}")
