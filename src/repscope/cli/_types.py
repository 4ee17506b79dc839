"""Option types shared by the commands: an int that also accepts ``all`` (no limit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["ALL", "IntOrAll", "int_or_all"]

ALL = "all"
"What ``--max-rows all`` / ``--max-docs all`` parse to; the config then gets ``None``."


class IntOrAll(click.ParamType):
    """An int ``>= low``, or ``all`` (every row / document, no limit)."""

    name = "INT|all"

    def __init__(self, option: str, low: int) -> None:
        self.option, self.low = option, low

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value >= self.low:
            return value
        text = str(value).strip().lower()
        if text == ALL:
            return ALL
        if text.isdigit() and int(text) >= self.low:
            return int(text)
        self.fail(f"'{self.option}' must be an int >= {self.low} or 'all'. Got {value!r}.",
                  param, ctx)


def int_or_all(name: str, low: int, help: str) -> Callable[[Any], Any]:
    """Give the generated option ``name`` (a ``cli_options`` int) the INT|all type and ``help``."""

    def deco(fn: Any) -> Any:
        for param in getattr(fn, "__click_params__", []):
            if param.name == name:
                param.type = IntOrAll("--" + name.replace("_", "-"), low)
                param.help = help
        return fn

    return deco
