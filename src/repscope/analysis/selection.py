"""What an analysis measures and on which layers and rows: selection, checked before any work.

Measures are named as ``name`` or ``name:param=value,param=value`` (values parsed as JSON
literals, e.g. ``mle:k=20`` or ``rsa:rdm="cosine"``); ``default`` stands for the registry's
default panel and ``all`` for every registered measure. :func:`resolve_measures` resolves them
against the registry (parameters checked against each signature and tried once on small random
data); :func:`resolve_layers` expands layer names and globs; :func:`select_rows` draws the rows.
Every error is a :class:`PlanError`, raised before any capture or measurement.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope import registry
from repscope.errors import UsageError

__all__ = [
    "MeasureRequest",
    "PlanError",
    "parse_measure",
    "resolve_layers",
    "resolve_measures",
    "select_rows",
]


class PlanError(UsageError):
    """A configuration that cannot run; raised before any work starts (a ``ValueError``;
    the command line's exit code 2)."""



@dataclass(frozen=True)
class MeasureRequest:
    """One measure with its resolved parameters."""

    name: str
    "Registered name."
    variant: str
    "The parameters the user set, as 'a=1,b=2' ('' when all are defaults)."
    params: Mapping[str, Any]
    "Every parameter, defaults filled in."
    kind: str
    "'single' or 'pair'."
    family: str
    "Registry family (report panel)."



# -- measures ----------------------------------------------------------------------------------


def parse_measure(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``'name:a=1,b="x"'`` into ``('name', {'a': 1, 'b': 'x'})``."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = part.partition("=")
        if not eq or not key.strip():
            raise PlanError(
                f"Measure {text!r} must be NAME or NAME:param=value,...; "
                f"got the parameter part {part!r}."
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.strip()
        params[key.strip()] = value
    if not name:
        raise PlanError(f"Measure {text!r} has no name.")
    return name, params


def _variant(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))


def resolve_measures(
    entries: Sequence[str], *, labels: str | None, pairs: str, seed: int, device: str,
    dry_run_rows: int = 256,
) -> tuple[list[MeasureRequest], list[tuple[str, str]]]:
    """Resolve measure entries against the registry; errors name the bad entry.

    Returns the requests and the ``(name, reason)`` of registered measures left out.
    Explicitly named measures that cannot run raise :class:`PlanError`; measures that come
    from 'default' / 'all' and cannot run (no labels, pairs='none') are listed as skipped.
    Parameters set by the user are tried once on small random data so an invalid value fails
    here, before any capture or measurement.
    """
    explicit: list[tuple[str, dict[str, Any]]] = []
    implicit: list[str] = []
    for entry in entries or ("default",):
        name, params = parse_measure(entry)
        if name in ("default", "all") and not params:
            implicit += [s.name for s in registry.specs() if name == "all" or s.default_panel]
        else:
            explicit.append((name, params))
    requests: list[MeasureRequest] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for name, params in explicit + [(n, {}) for n in implicit]:
        is_explicit = (name, params) in explicit
        try:
            spec = registry.get(name)
        except KeyError as exc:
            raise PlanError(str(exc.args[0])) from None
        reason = _cannot_run(spec, labels, pairs)
        if reason:
            if is_explicit:
                raise PlanError(f"Measure '{name}' cannot run: {reason}.")
            skipped.append((name, reason))
            continue
        variant = _variant(params)
        if (name, variant) in seen:
            continue
        seen.add((name, variant))
        resolved = _resolve_params(spec, params, seed=seed, device=device)
        if params:
            _dry_run(spec, resolved, variant, dry_run_rows)
        requests.append(MeasureRequest(name, variant, resolved, spec.kind, spec.family))
    named = {r.name for r in requests} | {m for m, _ in skipped}
    for spec in registry.specs():
        if spec.name not in named:
            skipped.append((spec.name, "not selected (not in the default panel)"
                            if not spec.default_panel else "not selected"))
    return requests, skipped


def _cannot_run(spec: Any, labels: str | None, pairs: str) -> str:
    if spec.needs_labels and labels is None:
        return "it needs class labels; pass --labels COLUMN (a store metadata column)"
    if spec.kind == "pair" and pairs == "none":
        return "it compares two layers and pairs='none'"
    return ""


def _resolve_params(spec: Any, params: Mapping[str, Any], *, seed: int,
                    device: str) -> dict[str, Any]:
    try:
        resolved = spec.resolve_params(params)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    if "seed" in spec.defaults and "seed" not in params:
        resolved["seed"] = seed
    if "device" in spec.defaults and "device" not in params:
        resolved["device"] = device
    resolved.pop("neighbors", None)  # filled per layer by the task, never a user parameter
    return resolved


def _dry_run(spec: Any, params: Mapping[str, Any], variant: str, n: int) -> None:
    """Call the measure once on small random data so invalid parameter values fail early."""
    rng = np.random.default_rng(0)
    n = max(n, spec.min_samples)
    X = rng.normal(size=(n, 8))  # (n, d)
    args: list[Any] = [X, X @ rng.normal(size=(8, 8))] if spec.kind == "pair" else [X]
    kwargs = dict(params)
    if spec.needs_labels:
        kwargs["labels"] = np.arange(n) % 3
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise PlanError(f"Invalid parameter for measure '{spec.name}' ({variant}): {exc}") from None



# -- layers and rows ---------------------------------------------------------------------------


def resolve_layers(patterns: Sequence[str], available: Sequence[str]) -> list[str]:
    """Layers of ``available`` (in their order) matching any name or glob in ``patterns``."""
    if not patterns:
        return list(available)
    chosen: set[str] = set()
    for pat in patterns:
        hits = [a for a in available if fnmatch.fnmatchcase(a, pat)]
        if not hits:
            close = difflib.get_close_matches(pat, list(available), n=3, cutoff=0.5)
            hint = f" Did you mean {close}?" if close else ""
            raise PlanError(
                f"Unknown layer {pat!r}.{hint} The store has layers {list(available)}."
            )
        chosen.update(hits)
    return [a for a in available if a in chosen]


def select_rows(n_total: int, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``max_rows`` rows of ``n_total`` drawn without replacement (all if None)."""
    if max_rows is None or max_rows >= n_total:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=max_rows, replace=False)).astype(np.int64)

