"""``repscope replicate``: the seed papers' claims as seeded, offline PASS / FAIL experiments."""

from __future__ import annotations

from pathlib import Path

import click


def _listing() -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from repscope.replicate import all_claims

    table = Table(title="claims (repscope replicate NAME [--quick])", box=box.SIMPLE_HEAD,
                  header_style="bold")
    for col in ("name", "claim", "paper", "needs"):
        table.add_column(col, overflow="fold")
    for c in all_claims().values():
        table.add_row(c.name, c.title, c.citation.split("'")[0].strip(" ,") + " ...",
                      ", ".join(c.needs) or "-")
    Console(highlight=False).print(table)


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the claims and exit.")
@click.option("--all", "all_", is_flag=True, help="Run every claim (needs --out).")
@click.option("--quick", is_flag=True,
              help="The small versions run in CI (minutes together) instead of the full ones.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write NAME.md, NAME.png, NAME.json per claim and README.md here.")
@click.option("--strict", is_flag=True, help="Exit with code 1 when a claim's verdict is FAIL.")
def replicate(name: str | None, list_: bool, all_: bool, quick: bool, out: Path | None,
              strict: bool) -> None:
    """Reproduce published findings on bundled models and data: each claim ends in PASS or
    FAIL with our numbers beside the paper's, a figure and its runtime.

    A FAIL is a finding: its page says why. Pages go to OUT (Markdown + PNG + JSON).

    \b
    Examples:
      repscope replicate --list
      repscope replicate debiased-similarity --quick
      repscope replicate neural-collapse --out pages/
      repscope replicate --all --quick --out pages/
    """
    from rich.console import Console

    from repscope.replicate import all_claims, get_claim, run_claim, write_index, write_page

    if list_:
        _listing()
        return
    if all_ and name:
        raise click.UsageError("Give either a claim NAME or --all, not both.")
    if not all_ and not name:
        raise click.UsageError("Give a claim NAME, --all or --list (see repscope replicate --list).")
    if all_ and out is None:
        raise click.UsageError("--all writes one page per claim: give --out DIR.")
    try:
        claims = list(all_claims().values()) if all_ else [get_claim(name)]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    console = Console(highlight=False)
    mode = "quick" if quick else "full"
    results = []
    for claim in claims:
        console.print(f"[bold]{claim.name}[/] ({mode}) ...")
        res = run_claim(claim, mode)
        results.append(res)
        colour = "green" if res.passed else "red"
        console.print(f"  [bold {colour}]{res.verdict}[/] in {res.seconds:.1f} s")
        for c in res.checks:
            mark = "ok " if c.passed else "NO "
            console.print(f"    {mark} {c.description}: {c.measured}")
        for r in res.rows:
            paper = f"   [dim](paper: {r.paper})[/]" if r.paper else ""
            console.print(f"    {r.quantity}: [bold]{r.ours}[/]{paper}")
        if out is not None:
            page = write_page(claim, res, out)
            console.print(f"  page: {page}")
    if out is not None:
        console.print(f"index: {write_index(claims, results, out)}")
    if strict and not all(r.passed for r in results):
        raise SystemExit(1)
