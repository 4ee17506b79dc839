"""Small helpers shared by the claim modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repscope.replicate.claim import Line

__all__ = ["fmt", "line", "mean_se"]


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


def fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    text = f"{value:.{digits}g}"
    return text if se is None else f"{text} ± {se:.2g}"


def line(label: str, x: Sequence[float], y: Sequence[float], se: Sequence[float] | None = None,
         style: str = "-o") -> Line:
    """A curve with an optional +-2 SE band."""
    xs, ys = tuple(float(v) for v in x), tuple(float(v) for v in y)
    if se is None:
        return Line(label, xs, ys, style=style)
    s = np.asarray(se, dtype=float)
    return Line(label, xs, ys, tuple(np.asarray(ys) - 2 * s), tuple(np.asarray(ys) + 2 * s), style)
