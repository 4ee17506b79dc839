"""``repscope measures``: list the registered measures."""

from __future__ import annotations

import click

from repscope import registry
from repscope.config import with_config


@click.command()
@with_config()
@click.option("--family", default=None, type=click.Choice(list(registry.FAMILIES)),
              help="Only this family.")
def measures(family: str | None) -> None:
    """List registered measures with their family, kind, capabilities and description."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="repscope measures")
    for col in ("name", "family", "kind", "streamable", "prepared", "default panel",
                "description"):
        table.add_column(col)
    for spec in registry.specs(family=family):
        table.add_row(spec.name, spec.family, spec.kind, "yes" if spec.streamable else "",
                      "yes" if spec.prepared is not None else "",
                      "yes" if spec.default_panel else "", spec.description)
    Console().print(table)
