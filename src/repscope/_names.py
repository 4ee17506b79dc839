"""Names of layers, modules and checkpoints: the one natural sort."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key ordering embedded numbers by value, so ``layer.2`` sorts before ``layer.10``.

    Text runs compare case-insensitively, ties are broken by the exact name, so the order is
    total and deterministic.

    >>> sorted(["h.10", "h.2", "H.1", "h.1"], key=natural_key)
    ['H.1', 'h.1', 'h.2', 'h.10']
    """
    parts = _DIGITS.split(name)  # text, number, text, ..., text
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name
