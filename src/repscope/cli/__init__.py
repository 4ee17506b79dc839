"""The ``repscope`` command.

Sub-commands live in their own modules and are imported only when invoked, so
``repscope --help`` stays fast. Add a command by adding an entry to ``_COMMANDS``.

Errors end every command the same way (:mod:`repscope.cli._errors`): one line
``error: ...`` on stderr, exit code 2 for usage errors and 1 for failed runs, no traceback
unless ``--debug`` (or ``REPSCOPE_DEBUG=1``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from repscope._version import __version__

#: command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "capture": "repscope.cli.capture:capture",
    "info": "repscope.cli.capture:info",
    "analyze": "repscope.cli.analyze:analyze",
    "report": "repscope.cli.analyze:report",
    "plot": "repscope.cli.analyze:plot",
    "results": "repscope.cli.analyze:results",
    "sae": "repscope.cli.sae:sae",
    "measures": "repscope.cli.measures:measures",
    "compression-table": "repscope.cli.retrieval:compression_table",
    "lm-geometry": "repscope.cli.lm:lm_geometry",
    "landscape": "repscope.cli.landscape:landscape",
    "replicate": "repscope.cli.replicate:replicate",
}


class _LazyGroup(click.Group):
    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:  # the caller handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from repscope.cli._errors import invoke_safely

        return invoke_safely(super().main, args, prog_name, complete_var, **extra)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:  # an optional dependency of that command is missing
            reason = str(exc)

            @click.command(name=name, help=f"(unavailable: {reason})")
            def _missing() -> None:
                raise click.ClickException(f"'repscope {name}' is unavailable: {reason}")

            return _missing


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="repscope")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--debug", is_flag=True, default=False,
              help="Show the traceback of an error (also: REPSCOPE_DEBUG=1).")
def app(verbose: int, debug: bool) -> None:
    """repscope: capture activations and measure representation geometry.

    \b
    Examples:
      repscope analyze --max-docs 20                # capture MiniLM, measure, report
      repscope analyze --model smollm2 --layers 'model.layers.*' --exclude-positions 0
      repscope results repscope-out --findings      # massive activations per layer
      repscope COMMAND --help                       # each command's options and examples
    """
    from repscope.cli._errors import DEBUG

    DEBUG["on"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return app.main(args=argv, prog_name="repscope")
