"""One result row of the database as the report states it: value, interval and its kind.

Every figure, the results table and its CSV say which interval they draw. A measure records
how it quantified its uncertainty in ``params``: ``ci_level`` (the confidence level of ``ci``)
and ``uncertainty`` (``"bootstrap"``, ``"analytic"``, ``"none"``, ...). :func:`interval_kind`
turns those into the words a reader needs ("95 % CI, bootstrap"; "± 1 SE"); a row with neither
a CI nor a standard error says so ("no interval") instead of drawing nothing silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ResultRow", "interval_kind", "num", "result_row"]


def num(v: Any) -> float | None:
    """``v`` as a finite float, or None (NULL, NaN, inf, non-numeric)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _json(text: Any) -> Mapping[str, Any]:
    if not isinstance(text, str):
        return {}
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, Mapping) else {}


def interval_kind(params: Mapping[str, Any], *, has_ci: bool, has_se: bool) -> str:
    """What the interval of a result is, in words: ``"95 % CI (bootstrap)"``,
    ``"± 1 SE (analytic)"``, or ``"no interval"``.

    >>> interval_kind({"ci_level": 0.95, "uncertainty": "bootstrap"}, has_ci=True, has_se=True)
    '95 % CI (bootstrap)'
    >>> interval_kind({}, has_ci=False, has_se=True)
    '± 1 SE'
    >>> interval_kind({}, has_ci=False, has_se=False)
    'no interval'
    """
    how = params.get("uncertainty")
    how = f" ({how})" if isinstance(how, str) and how not in ("", "none") else ""
    if has_ci:
        level = num(params.get("ci_level"))
        return (f"{100 * level:.4g} % CI{how}" if level is not None
                else f"CI, level not recorded{how}")
    if has_se:
        return f"± 1 SE{how}"
    return "no interval"


@dataclass(frozen=True)
class ResultRow:
    """One successful result as the results table lists it."""

    label: str
    "Measure name, with its variant when not the defaults."
    measure: str
    family: str
    layer: str
    layer_b: str | None
    value: float | None
    ci_low: float | None
    ci_high: float | None
    stderr: float | None
    interval: str
    "Kind and level of the interval (:func:`interval_kind`)."
    p_value: float | None
    "Permutation p-value (pair measures run with permutations), else None."
    calibrated: float | None
    "Value minus the permutation null's mean, else None."
    n: int | None
    params: Mapping[str, Any]
    "Every resolved parameter of the call."
    notes: tuple[str, ...] = ()
    "Sentences the measure wrote for the reader (``diagnostics['verdict']``)."


def _notes(diagnostics: Any) -> tuple[str, ...]:
    """``diagnostics['verdict']`` (a sentence or a list of them), read without decoding the
    whole diagnostics blob (spectra and per-point arrays can be large)."""
    if not isinstance(diagnostics, str) or '"verdict"' not in diagnostics:
        return ()
    v = _json(diagnostics).get("verdict")
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        return tuple(str(x) for x in v if isinstance(x, str))
    return ()


def result_row(r: Any, label: str) -> ResultRow:
    """The :class:`ResultRow` of a database row (a pandas ``itertuples`` record)."""
    params = _json(r.params)
    extra = _json(r.extra)
    lo, hi, se = num(r.ci_low), num(r.ci_high), num(r.stderr)
    has_ci = lo is not None and hi is not None
    small = _json(r.diagnostics) if isinstance(r.diagnostics, str) and len(r.diagnostics) < 4096 \
        else {}  # p-values of toy or older rows may sit in small diagnostics
    n = r.n if r.n == r.n and r.n is not None else None
    return ResultRow(
        label=label, measure=str(r.measure), family=str(r.family), layer=str(r.layer),
        layer_b=r.layer_b if isinstance(r.layer_b, str) else None, value=num(r.value),
        ci_low=lo if has_ci else None, ci_high=hi if has_ci else None, stderr=se,
        interval=interval_kind(params, has_ci=has_ci, has_se=se is not None),
        p_value=num(extra.get("p_value", small.get("p_value"))),
        calibrated=num(extra.get("calibrated", small.get("calibrated"))),
        n=None if n is None else int(n), params=params, notes=_notes(r.diagnostics))
