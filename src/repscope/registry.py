"""One registry entry per measure: every fact the CLI, configs, report, planner and tests need.

A measure is a plain function over ``(n, d)`` arrays, registered once with :func:`register`,
which takes every fact about it, including its optional capabilities::

    @register("effective_rank", family="spectrum", invariances={"rotation", "scale"},
              accumulator=Streaming(CovarianceAccumulator, _effective_rank))
    def effective_rank(X) -> Estimate: ...

    @register("cca_mean", family="similarity", kind="pair", symmetric=True,
              accumulator=CCA_MEAN.streaming(), prepared=CCA_MEAN.prepared())
    def cca_mean(X, Y, *, device=None) -> Estimate: ...

Capabilities (all optional, typed, held by the :class:`MeasureSpec`):

* ``accumulator`` (:class:`Streaming`): the measure is a function of a mergeable state, so it
  streams (init / update / merge / compute; one :class:`Accumulator` protocol for single and
  pair measures) and ``compute`` from the state is the measure's one implementation;
* ``prepared`` (:class:`Prepared`, pair measures): per-representation work done once, then a
  cheap comparison per pair; used by layer x layer matrices and permutation tests. Pair
  measures must declare it (``prepared=None`` states that every pair is computed afresh);
* ``scale_param`` (:class:`ScaleParam`): the parameter an ID-vs-scale curve varies.

Default parameters are read from the function signature, so the registry never drifts from
the code. The measure modules are found by walking the :mod:`repscope.measures` package on the
first lookup: importing repscope stays cheap and has no side effects, and adding a measure is
one module with one ``register`` call.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

__all__ = [
    "FAMILIES",
    "INVARIANCES",
    "Accumulator",
    "MeasureSpec",
    "Prepared",
    "ScaleParam",
    "Streaming",
    "compute_accumulated",
    "get",
    "names",
    "register",
    "specs",
]

Kind = Literal["single", "pair"]

#: Known families (report panels and CLI groups) with their report titles, in report order.
FAMILIES: Mapping[str, str] = MappingProxyType({
    "dimension": "Intrinsic dimension",
    "local_dimension": "Local intrinsic dimension (mean over points)",
    "spectrum": "Spectrum and effective dimensionality",
    "spread": "Spread and isotropy",
    "outliers": "Outlier dimensions and rows",
    "classes": "Label-aware geometry",
    "similarity": "Layer x layer similarity",
})

#: Transformations a measure may declare itself invariant to (checked by the conformance tests).
INVARIANCES = frozenset(
    {"rotation", "translation", "scale", "permutation", "invertible_linear", "per_feature_scale"}
)

_MEASURES_PACKAGE = "repscope.measures"


# ------------------------------------------------------------------------ capabilities ----
@runtime_checkable
class Accumulator(Protocol):
    """The one streaming protocol of single and pair measures.

    An accumulator is an immutable, picklable ``(measure, state)`` value. Its class makes the
    empty state with ``empty(measure, *dims, device=None, **options)`` (``dims = (d,)`` for a
    single measure, ``(d_x, d_y)`` for a pair), reports the :attr:`state_key` of a state made
    with given options through the classmethod ``key(**options)``, and may name a multi-pair
    state in ``blocks`` (pair accumulators whose states many layer pairs can share, or None).
    Accumulators with equal ``state_key`` hold interchangeable states, whatever their measure.
    """

    measure: str
    blocks: ClassVar[type | None]

    @property
    def state_key(self) -> str:
        """Equal keys: the same sufficient statistic (shareable across measures)."""
        ...

    def update(self, *batches: Any) -> Self:
        """Fold one batch in: ``update(X)`` (single) or ``update(X, Y)`` (pair, same rows)."""
        ...

    def merge(self, other: Self) -> Self:
        """Combine with another partial state of the same key (associative, commutative)."""
        ...

    def for_measure(self, name: str) -> Self:
        """The same state, computed as measure ``name`` (whose accumulator has this key)."""
        ...

    def compute(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        """The measure's ``Estimate``: its registered :attr:`Streaming.compute` on the state."""
        ...


@dataclass(frozen=True)
class Streaming:
    """Accumulator capability: the measure is a function of a mergeable sufficient statistic.

    ``spec.accumulator(*dims, **options)`` returns the measure's empty :class:`Accumulator`;
    the batch function is that accumulator updated with all rows, then computed.
    """

    kind: type
    "Accumulator class (e.g. ``CovarianceAccumulator``, ``PairMomentsAccumulator``)."
    compute: Callable[..., Any]
    """``compute(statistic, **params) -> Estimate``: the measure's one implementation from the
    statistic its accumulator class hands over (``Moments``, ``UnitSum``, ``PairSums``), with
    ``params`` resolved against the signature's defaults."""
    options: tuple[str, ...] = ()
    """Measure parameters that shape the state (e.g. ``"precision"``): passed to ``empty`` and
    part of the state key; the accumulator exposes each as an attribute."""
    measure: str = ""
    "The measure it belongs to (set by :func:`register`)."

    def __call__(self, *dims: int, **options: Any) -> Any:
        """The empty accumulator of this measure for ``dims`` features."""
        return self.kind.empty(self.measure, *dims, **options)

    def state_options(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The state-shaping :attr:`options` among ``params``."""
        return {k: params[k] for k in self.options if k in params}

    def state_key(self, params: Mapping[str, Any]) -> str:
        """The ``state_key`` of this measure's accumulator for parameters ``params``."""
        return self.kind.key(**self.state_options(params))


@dataclass(frozen=True)
class Prepared:
    """Prepared capability of a pair measure: per-representation work done once.

    ``compare(prepare(X), prepare(Y), params)`` equals ``fn(X, Y, **params)``; a layer x layer
    matrix prepares each layer once, a permutation test prepares X and Y once and re-orders
    Y's state per shuffle.
    """

    prepare: Callable[..., Any]
    """``prepare(X, device, params, name) -> state``: validates ``params`` and does the work
    that depends on one representation (``name`` labels it in messages)."""
    compare: Callable[..., Any]
    "``compare(state_x, state_y, params) -> Estimate``, the per-pair step."
    permute: Callable[[Any, Any], Any] | None = None
    """``permute(state, perm) -> state of Y[perm]``; None: permutation tests prepare every
    shuffled copy of Y afresh (the X side stays prepared)."""
    all_pairs: Callable[..., Mapping[tuple[str, str], Any]] | None = None
    """``all_pairs(arrays, names, device, params) -> {(a, b): Estimate}`` for every pair with
    ``a`` not after ``b`` in ``names``: a batched path for symmetric matrices, or None."""


@dataclass(frozen=True)
class ScaleParam:
    """The parameter that an ID-vs-scale curve (``id_scale_curve(by="rank")``) varies."""

    param: str
    "Parameter of the estimator called, e.g. ``k`` or ``n1``."
    via: str | None = None
    "Registered estimator called instead, when it generalises this one (TwoNN is GRIDE at n1=1)."
    reach: int = 1
    "Neighbour rank used per unit of the parameter (2 for GRIDE's ``n2 = 2 n1``)."
    start: int = 4
    "Smallest default value; the defaults are powers of two up to n / (4 reach)."


_UNSET: Any = object()


def compute_accumulated(acc: Any, statistic: Any, params: Mapping[str, Any] | None = None,
                        kw: Mapping[str, Any] | None = None) -> Any:
    """What :meth:`Accumulator.compute` runs: the registered ``compute(statistic, **params)``
    of ``acc.measure``, with ``params`` (and ``kw``) resolved against the measure's defaults
    and its state-shaping options taken from ``acc`` (asking for another value raises).

    Accumulator classes call it, so a state computes in any process: the registry loads the
    measure modules itself, nothing depends on which module was imported first.
    """
    spec = get(acc.measure)
    if spec.accumulator is None:
        raise ValueError(f"Measure '{acc.measure}' has no accumulator.")
    given = {**dict(params or {}), **dict(kw or {})}
    for name in spec.accumulator.options:
        have = getattr(acc, name)
        if given.setdefault(name, have) != have:
            raise ValueError(f"{acc.measure}: this state was accumulated with {name}={have!r}; "
                             f"it cannot be computed with {name}={given[name]!r}.")
    return spec.accumulator.compute(statistic, **spec.resolve_params(given))


# ------------------------------------------------------------------------------ spec -------
@dataclass(frozen=True)
class MeasureSpec:
    """What everybody needs to know about a measure without calling it."""

    name: str
    "Unique registered name, e.g. 'twonn' or 'cka_linear_debiased'."
    fn: Callable[..., Any]
    "The plain function over (n, d) arrays."
    family: str
    "Report panel / CLI group, one of :data:`FAMILIES`."
    kind: Kind = "single"
    "'single': fn(X, **params); 'pair': fn(X, Y, **params)."
    description: str = ""
    "One line, taken from the docstring's first line when not given."
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
    accumulator: Streaming | None = None
    "Streaming capability (None: not streamable)."
    prepared: Prepared | None = None
    "Prepared capability of a pair measure (None: every pair is computed afresh)."
    scale_param: ScaleParam | None = None
    "The parameter ID-vs-scale curves vary (None: no scale curve)."
    defaults: Mapping[str, Any] = field(default_factory=dict)
    "Keyword parameters and their defaults, read from the signature."

    @property
    def streamable(self) -> bool:
        """Whether the measure has an accumulator."""
        return self.accumulator is not None

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
    accumulator: Streaming | None = None,
    prepared: Prepared | None = _UNSET,
    scale_param: ScaleParam | None = None,
    **meta: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` under ``name`` with every fact about it; returns ``fn``.

    Parameters
    ----------
    name : unique measure name (the ``measure`` field of its results).
    family : one of :data:`FAMILIES`.
    kind : ``"single"`` (``fn(X, **params)``) or ``"pair"`` (``fn(X, Y, **params)``).
    invariances : subset of :data:`INVARIANCES` the value is invariant to.
    accumulator : the :class:`Streaming` capability, or None.
    prepared : the :class:`Prepared` capability; pair measures must pass it (None when every
        pair is computed afresh), single measures must not.
    scale_param : the :class:`ScaleParam` of ID-vs-scale curves, or None.
    **meta : the remaining :class:`MeasureSpec` fields (``higher_is_better``, ``bounds``,
        ``needs_labels``, ``min_samples``, ``default_panel``, ``symmetric``, ``description``).

    Raises
    ------
    ValueError
        For an unknown family, kind or invariance, a pair measure that does not declare
        ``prepared``, a capability of the wrong type, or a name already taken.
    """
    where = f"register({name!r})"
    if family not in FAMILIES:
        raise ValueError(f"{where}: unknown family {family!r}; known: {list(FAMILIES)}.")
    if kind not in ("single", "pair"):
        raise ValueError(f"{where}: kind must be 'single' or 'pair'; got {kind!r}.")
    bad = set(invariances) - INVARIANCES
    if bad:
        raise ValueError(f"Unknown invariance(s) {sorted(bad)}; known: {sorted(INVARIANCES)}.")
    if prepared is _UNSET:
        if kind == "pair":
            raise ValueError(f"{where}: a pair measure must declare prepared= (a Prepared, or "
                             f"None when every pair is computed afresh).")
        prepared = None
    elif prepared is not None and kind != "pair":
        raise ValueError(f"{where}: only pair measures have a prepared path.")
    for value, cls, arg in ((accumulator, Streaming, "accumulator"), (prepared, Prepared, "prepared"),
                            (scale_param, ScaleParam, "scale_param")):
        if value is not None and not isinstance(value, cls):
            raise ValueError(f"{where}: {arg} must be a {cls.__name__} or None; got {value!r}.")
    unknown = set(meta) - {f.name for f in dataclasses.fields(MeasureSpec)}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}.")

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
        fields = {"description": doc[0] if doc else "", **meta}
        bound = None if accumulator is None else dataclasses.replace(accumulator, measure=name)
        _REGISTRY[name] = MeasureSpec(
            name=name, fn=fn, family=family, kind=kind, invariances=frozenset(invariances),
            accumulator=bound, prepared=prepared, scale_param=scale_param, defaults=defaults,
            **fields,
        )
        return fn

    return deco


def _load() -> None:
    """Import every module of :mod:`repscope.measures` (each registers its measures)."""
    global _LOADED
    if _LOADED:
        return
    package = importlib.import_module(_MEASURES_PACKAGE)
    for info in pkgutil.walk_packages(package.__path__, _MEASURES_PACKAGE + "."):
        importlib.import_module(info.name)
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
