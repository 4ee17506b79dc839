"""Data checks made before measuring: massive activations / outlier coordinates per layer.

:func:`check_plan` runs :func:`repscope.measures.massive.massive_activations` on the rows a plan
analyses (the same sampled rows every measure sees), layer by layer, with each row's sequence
position and token id when the store has them. Each layer gives one row of the results
database's ``findings`` table (:data:`repscope.analysis.db.FINDING_COLUMNS`); the rows that warn
become the terminal summary's warning and the report's "Data checks" section. The check reads
each layer once (``n_rows x d`` values) and costs one pass over them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["CHECK", "check_plan", "summary_line"]

log = logging.getLogger(__name__)

CHECK = "massive_activations"


MAX_ROWS = 50_000
"Rows checked at most per layer (a seeded sample of the plan's rows beyond that)."


def check_plan(plan: Any, store: Any, run_id: str) -> list[dict[str, Any]]:
    """One ``findings`` row per layer of ``plan`` (massive activations, dominant coordinates)."""
    from repscope.measures.massive import massive_activations

    idx = np.asarray(plan.rows.indices())  # (n,)
    if len(idx) > MAX_ROWS:
        rng = np.random.default_rng(plan.rows.seed)
        idx = np.sort(rng.choice(idx, size=MAX_ROWS, replace=False))  # (MAX_ROWS,)
    meta = store.metadata(rows=idx)
    positions = meta["position"].to_numpy() if "position" in meta else None  # (n,)
    token_ids = meta["token_id"].to_numpy() if "token_id" in meta else None  # (n,)
    src = plan.source
    rows = []
    for i, layer in enumerate(plan.layers):
        X = store.read(layer, rows=idx)  # (n, d)
        try:
            res = massive_activations(X, positions=positions, token_ids=token_ids)
        except ValueError as exc:  # e.g. non-finite rows: the measures report it themselves
            log.info("massive-activation check skipped on %s: %s", layer, exc)
            continue
        key = hashlib.sha256(
            f"{src.get('source_id')}|{plan.rows.digest}|{layer}|{CHECK}".encode()).hexdigest()[:32]
        top_abs = max((c.max_abs for c in res.coordinates), default=float(np.abs(X).max()))
        rows.append({
            "key": key, "run_id": run_id, "source_id": src.get("source_id"),
            "rows_hash": plan.rows.digest, "checkpoint": _str(src.get("checkpoint")),
            "layer": layer, "layer_index": i, "check_name": CHECK, "warn": res.warn,
            "coordinate": res.top_coordinate, "variance_share": res.top_share,
            "max_abs": top_abs, "n_massive_rows": res.n_massive_rows, "n": res.n_rows,
            "exclude_positions": ",".join(str(p) for p in res.exclude_positions),
            "message": res.message(layer), "detail": res.to_dict(),
        })
    return rows


def summary_line(findings: Sequence[Mapping[str, Any]]) -> str | None:
    """One warning line over the layers that warn (None when none does)."""
    bad = [f for f in findings if f.get("warn")]
    if not bad:
        return None
    coords = sorted({int(f["coordinate"]) for f in bad})
    worst = max(bad, key=lambda f: f["variance_share"])
    positions = sorted({int(p) for f in bad for p in str(f.get("exclude_positions") or "").split(",")
                        if p})
    massive = [f for f in bad if f.get("n_massive_rows")]
    text = (f"massive activations / outlier coordinates in {len(bad)} of {len(findings)} layers: "
            f"coordinate(s) {', '.join(map(str, coords[:6]))}{' ...' if len(coords) > 6 else ''} "
            f"hold up to {worst['variance_share']:.0%} of a layer's variance ({worst['layer']}")
    if massive:
        top = max(massive, key=lambda f: f["max_abs"])
        text += f"; |x| up to {top['max_abs']:.3g} in {top['layer']}"
    text += "), so covariance-based measures describe those coordinates"
    if positions:
        text += (f"; the massive entries sit at position(s) {', '.join(map(str, positions))}: "
                 f"rerun with {' '.join(f'--exclude-positions {p}' for p in positions)}")
    return text + "."


def _str(v: Any) -> str | None:
    return None if v is None else str(v)
