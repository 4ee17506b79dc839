"""One registry that names every measure for the CLI, configs, the report and the tests.

A measure module registers its plain functions with :func:`register`::

    @register("twonn", family="dimension", kind="single", invariances={"rotation", ...})
    def twonn(X, *, discard_fraction=0.1, ...) -> IDEstimate: ...

``kind="single"`` functions are called ``fn(X, **params)``; ``kind="pair"`` ones
``fn(X, Y, **params)``; measures with ``needs_labels=True`` also take ``labels=``.
Default parameters are read from the function signature, so the registry never drifts from
the code. The measure modules are imported lazily on first lookup: importing repscope stays
cheap and has no side effects.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MeasureSpec", "get", "names", "register", "specs"]

#: Modules whose import registers measures. Add a module here when you add one.
MEASURE_MODULES: tuple[str, ...] = (
    "repscope.measures.dimension",
    "repscope.measures.spectrum",
    "repscope.measures.similarity",
    "repscope.measures.classes",
)

Kind = Literal["single", "pair"]
INVARIANCES = frozenset(
    {"rotation", "translation", "scale", "permutation", "invertible_linear", "per_feature_scale"}
)


@dataclass(frozen=True)
class MeasureSpec:
    """What everybody needs to know about a measure without calling it."""

    name: str
    "Unique registered name, e.g. 'twonn' or 'cka_linear_debiased'."
    fn: Callable[..., Any]
    "The plain function over (n, d) arrays."
    family: str
    "Report panel / CLI group: 'dimension', 'spectrum', 'spread', 'similarity', 'classes', ..."
    kind: Kind = "single"
    "'single': fn(X, **params); 'pair': fn(X, Y, **params)."
    description: str = ""
    "One line, taken from the docstring's first line when not given."
    streamable: bool = False
    "Whether an accumulator (init/update/merge/compute) exists; see ``accumulator``."
    accumulator: Callable[..., Any] | None = None
    "Factory for the streaming accumulator when ``streamable``."
    higher_is_better: bool | None = None
    "For similarities and scores; None when not an ordering (e.g. a dimension)."
    bounds: tuple[float | None, float | None] = (None, None)
    "Range of the value, used by plots and the conformance tests."
    invariances: frozenset[str] = frozenset()
    "Transformations of X (and Y) that leave the value unchanged; checked by the tests."
    needs_labels: bool = False
    "Takes ``labels=`` (class labels, length n)."
    min_samples: int = 2
    "Fewest rows the measure accepts with its default parameters."
    default_panel: bool = False
    "Run by ``repscope analyze`` when the user names no measures."
    symmetric: bool = False
    "For pairs: value(X, Y) == value(Y, X)."
    defaults: Mapping[str, Any] = field(default_factory=dict)
    "Keyword parameters and their defaults, read from the signature."

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def resolve_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return defaults overridden by ``params``; unknown names raise a clear error."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"Unknown parameter(s) {unknown} for measure '{self.name}'; "
                f"it accepts {sorted(self.defaults)}."
            )
        return {**self.defaults, **params}


_REGISTRY: dict[str, MeasureSpec] = {}
_LOADED = False


def register(
    name: str,
    *,
    family: str,
    kind: Kind = "single",
    invariances: Iterable[str] = (),
    **meta: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` under ``name``; returns ``fn`` unchanged."""
    bad = set(invariances) - INVARIANCES
    if bad:
        raise ValueError(f"Unknown invariance(s) {sorted(bad)}; known: {sorted(INVARIANCES)}.")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"A measure named '{name}' is already registered.")
        sig = inspect.signature(fn)
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "labels"
        }
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        meta.setdefault("description", doc[0] if doc else "")
        meta.setdefault("streamable", meta.get("accumulator") is not None)
        _REGISTRY[name] = MeasureSpec(
            name=name, fn=fn, family=family, kind=kind,
            invariances=frozenset(invariances), defaults=defaults, **meta,
        )
        return fn

    return deco


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    for mod in MEASURE_MODULES:
        importlib.import_module(mod)
    _LOADED = True


def get(name: str) -> MeasureSpec:
    """Return the spec for ``name``; unknown names raise listing close matches."""
    _load()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(
            f"Unknown measure '{name}'.{hint} Registered measures: {sorted(_REGISTRY)}."
        )
    return _REGISTRY[name]


def names(*, family: str | None = None, kind: Kind | None = None) -> list[str]:
    """Registered measure names, optionally filtered by family or kind, sorted."""
    return [s.name for s in specs(family=family, kind=kind)]


def specs(*, family: str | None = None, kind: Kind | None = None) -> list[MeasureSpec]:
    """Registered specs, optionally filtered, sorted by name."""
    _load()
    out = [
        s for s in _REGISTRY.values()
        if (family is None or s.family == family) and (kind is None or s.kind == kind)
    ]
    return sorted(out, key=lambda s: s.name)
