"""Frozen result dataclasses returned by every measure, with a JSON round-trip.

Every registered measure returns an :class:`Estimate` (or a subclass adding typed fields).
The scalar ``value`` is what goes into the results database and the report's layer curves;
arrays needed for plots (per-point estimates, spectra, curves) live in ``diagnostics``.

Subclasses must be decorated with :func:`result_type` so :func:`from_dict` can rebuild them::

    @result_type
    @dataclass(frozen=True)
    class IDEstimate(Estimate):
        scale: float | None = None
        "Neighbourhood radius or rank the estimate refers to."
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from repscope._version import __version__

__all__ = ["Estimate", "from_dict", "from_json", "result_type", "to_jsonable"]

_RESULT_TYPES: dict[str, type[Estimate]] = {}
T = TypeVar("T", bound=type)


def _short_repr(self: Any) -> str:
    from repscope._arrays import short_repr

    return short_repr(self)


def result_type(cls: T) -> T:
    """Register a result dataclass so it survives a JSON round-trip.

    Apply it outside ``@dataclass``; it keeps :class:`Estimate`'s array-aware equality, which
    ``@dataclass`` would otherwise replace in subclasses, and gives the class a short repr
    (arrays summarised by shape, dtype and range: :func:`repscope._arrays.short_repr`).
    """
    _RESULT_TYPES[cls.__name__] = cls
    cls.__repr__ = _short_repr  # type: ignore[attr-defined,method-assign]
    base_eq = globals().get("Estimate")
    if base_eq is not None and cls is not base_eq and "__eq__" in cls.__dict__:
        cls.__eq__ = base_eq.__eq__  # type: ignore[attr-defined]
        cls.__hash__ = None  # type: ignore[attr-defined]
    return cls


@result_type
@dataclass(frozen=True)
class Estimate:
    """The result of one measure on one representation (or one pair).

    Equality compares every field; arrays in ``diagnostics`` are compared element-wise.
    """

    measure: str
    "Registered name of the measure (and variant) that produced this result."
    value: float
    "The estimate: a dimension, a similarity, a rank ... (NaN when undefined, with a warning)."
    n_samples: int
    "Number of rows the estimate was computed from (after any duplicate handling)."
    stderr: float | None = None
    "Standard error of ``value`` (analytic or bootstrap; see ``params['uncertainty']``)."
    ci: tuple[float, float] | None = None
    "Confidence interval ``(low, high)`` for ``value``, at ``params['ci_level']``."
    params: Mapping[str, Any] = field(default_factory=dict)
    "Every parameter used, resolved (defaults filled in), so the call can be repeated."
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    "Arrays and extra numbers for plots and checks (per-point values, curves, spectra)."
    version: str = __version__
    "repscope version that computed the result."

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return _deep_equal(to_jsonable(self.to_dict()), to_jsonable(other.to_dict()))  # type: ignore[union-attr]

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (arrays kept as numpy) tagged with the result type."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["type"] = type(self).__name__
        return out

    def to_json(self) -> str:
        """Serialise to JSON (numpy arrays become tagged lists, NaN is kept)."""
        return json.dumps(to_jsonable(self.to_dict()), allow_nan=True)

    def __float__(self) -> float:
        return float(self.value)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and mappings into JSON-ready values."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, tuple):
        return {"__tuple__": [to_jsonable(v) for v in obj]}
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
        if "__tuple__" in obj:
            return tuple(_from_jsonable(v) for v in obj["__tuple__"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def from_dict(data: Mapping[str, Any]) -> Estimate:
    """Rebuild a result from :meth:`Estimate.to_dict` output or its JSON-decoded form."""
    data = _from_jsonable(dict(data))
    kind = data.pop("type", "Estimate")
    if kind not in _RESULT_TYPES:
        raise ValueError(f"Unknown result type {kind!r}; known types: {sorted(_RESULT_TYPES)}.")
    return _RESULT_TYPES[kind](**data)


def from_json(text: str) -> Estimate:
    """Inverse of :meth:`Estimate.to_json`."""
    return from_dict(json.loads(text))


def _deep_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
