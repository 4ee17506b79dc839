"""Correlation of two per-row (or per-group) quantities with a bootstrap over documents.

Rows of one document are not independent (tokens of a prompt share its context), so the
interval resamples whole documents: each replicate draws ``n_docs`` documents with replacement
and recomputes the correlation on all rows of the drawn documents (repeated documents repeat
their rows). With one row per document this is the ordinary row bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._validate import check_choice, check_float, check_int, param_error
from repscope.stats import bootstrap

__all__ = ["GroupedCorrelation", "average_ranks", "correlation", "grouped_correlation"]

METHODS = ("spearman", "pearson")


def average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks of the finite values ``a`` (n,), ties sharing their average rank (as
    ``scipy.stats.rankdata(method="average")``, without its per-call overhead: the bootstrap
    calls this thousands of times)."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    new = np.empty(s.size, bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    dense = np.cumsum(new)  # tie-group number of each sorted value
    bounds = np.flatnonzero(np.append(new, True))  # start of each tie group, then n
    out = np.empty(a.size)
    out[order] = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    return out


def correlation(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> float:
    """Pearson correlation of ``x`` and ``y``, or of their average ranks (Spearman); NaN when
    either is constant or fewer than 3 pairs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3:
        return float("nan")
    if method == "spearman":
        x, y = average_ranks(x), average_ranks(y)
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class GroupedCorrelation:
    """A correlation with its document-bootstrap uncertainty."""

    value: float
    stderr: float
    ci: tuple[float, float]
    n_rows: int
    n_groups: int
    method: str
    params: dict[str, Any]


def grouped_correlation(x: Any, y: Any, groups: Any = None, *, method: str = "spearman",
                        n_boot: int = 1000, seed: int = 0, ci_level: float = 0.95,
                        fn: str = "grouped_correlation") -> GroupedCorrelation:
    """Correlation of ``x`` and ``y`` (rows with both finite) and its bootstrap over ``groups``
    (one label per row; None = every row its own group)."""
    check_choice(method, "method", fn, METHODS)
    n_boot = check_int(n_boot, "n_boot", fn, low=0)
    ci_level = check_float(ci_level, "ci_level", fn, low=0, high=1, low_inclusive=False, high_inclusive=False)
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.size != y.size:
        raise param_error(fn, "y", f"one value per row of x ({x.size})", f"{y.size} values")
    g = np.arange(x.size) if groups is None else np.asarray(groups).reshape(-1)
    if g.size != x.size:
        raise param_error(fn, "groups", f"one label per row ({x.size})", f"{g.size} labels")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    _, code = np.unique(g, return_inverse=True)
    n_groups = int(code.max()) + 1 if code.size else 0
    value = correlation(x, y, method)
    stderr, ci = float("nan"), (float("nan"), float("nan"))
    if n_boot >= 2 and n_groups >= 3:
        order = np.argsort(code, kind="stable")
        starts = np.searchsorted(code[order], np.arange(n_groups + 1))
        sizes = np.diff(starts)

        def stat(docs: np.ndarray) -> float:
            # the rows of the drawn documents, in draw order: order[starts[d] : starts[d + 1]] for d in docs
            lengths = sizes[docs]
            first = np.cumsum(lengths) - lengths
            pos = np.arange(lengths.sum()) + np.repeat(starts[docs] - first, lengths)
            rows = order[pos]
            return correlation(x[rows], y[rows], method)

        stderr, ci, _ = bootstrap(stat, n_groups, n_boot=n_boot, seed=seed, ci_level=ci_level)
    return GroupedCorrelation(value=value, stderr=stderr, ci=ci, n_rows=int(x.size), n_groups=n_groups,
                              method=method, params={"n_boot": n_boot, "seed": seed, "ci_level": ci_level,
                                                     "uncertainty": "bootstrap over documents"})
