"""One tidy frame of results: value, interval, p-value and calibrated score as plain columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["TIDY_COLUMNS", "tidy_results"]


TIDY_COLUMNS = ("checkpoint", "layer", "layer_b", "measure", "variant", "family", "kind",
                "value", "stderr", "ci_low", "ci_high", "n", "p_value", "calibrated",
                "null_mean", "n_perm", "status", "seconds", "key")
"Columns of :func:`tidy_results`, in order."


def tidy_results(df: Any) -> Any:
    """One tidy frame from :func:`load_results` rows: a result per row, its value, interval
    (``stderr``, ``ci_low``, ``ci_high``), permutation ``p_value``, ``calibrated`` score
    (value minus the permutation null's mean) and ``null_mean`` / ``n_perm`` as plain columns
    (NaN where absent), in :data:`TIDY_COLUMNS` order, layers in store order."""
    import pandas as pd

    extra = [json.loads(v) if isinstance(v, str) else (v if isinstance(v, Mapping) else {})
             for v in df.get("extra", pd.Series([None] * len(df), dtype=object))]
    out = df.reset_index(drop=True).copy()
    for col in ("p_value", "calibrated", "null_mean", "n_perm"):
        out[col] = pd.to_numeric(pd.Series([_number(e.get(col)) for e in extra], dtype=object),
                                 errors="coerce")
    for col in TIDY_COLUMNS:
        if col not in out:
            out[col] = None
    if "layer_index" in out:
        out = out.sort_values(["measure", "variant", "layer_index", "layer_b_index"],
                              na_position="first", kind="stable")
    return out[list(TIDY_COLUMNS)].reset_index(drop=True)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
