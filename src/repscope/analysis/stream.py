"""Map + merge for streamable measures over every row of a large store.

A streamable measure (the registry's ``accumulator`` capability,
:class:`repscope.registry.Streaming`, whose empty :class:`repscope.registry.Accumulator` has
``update``, ``merge`` and ``compute``; one protocol for single and pair measures) is a
function of a sufficient statistic, e.g. the float64 :class:`repscope.stats.Moments` (count,
mean, centred cross-product sum) for every covariance measure. When an analysis selects all
rows of a store (``max_rows=None``), :func:`~repscope.analysis.plan.make_plan` puts such
measures in a ``'stream'`` task whose ``shards`` are row ranges of whole store shards, and the
driver runs it as

- **map**: one :class:`StreamShard` per row range, on the executor; each worker opens the store
  itself and folds the range's rows, batch by batch, into one accumulator per state
  (:func:`map_shard`; measures sharing a ``state_key`` share one pass);
- **merge**: :func:`~repscope.analysis.executors.map_reduce` combines the partial states in
  shard order (:func:`merge_states`), so the result does not depend on the executor or on the
  order in which shards finish;
- **compute**: each measure's ``compute`` on the merged state, in the driver.

Memory per worker is one batch plus the state (O(d^2) for Moments), whatever the number of rows,
and the values equal the one-batch computation up to floating-point rounding (Chan, Golub and
LeVeque 1979, the pairwise update of means and centred sums of squares).

Pair measures (:class:`PairStreamShard`, :func:`map_pair_shard`, :func:`stream_pair_states`,
:func:`pair_estimate`) read their layers in lockstep. The moment-based ones (linear CKA,
Procrustes, shape_alpha, the CCA family) share ONE
state of their accumulator class's ``blocks`` type
(:class:`~repscope.measures.similarity.moments.BlockMoments`) per ``state_key``
(:func:`pair_state_key`) for every layer and pair: each layer's mean and centred Gram block
once, plus one centred cross block per requested pair, ``(L + P) d^2 + L d`` float64 numbers
for ``L`` layers and ``P`` pairs of width ``d`` (a per-pair
:class:`~repscope.measures.similarity.moments.PairMomentsAccumulator` of the joint rows would hold
``4 d^2`` per pair, each layer's Gram block repeated in every pair it enters), whatever the
number of measures. Each item's pair state is assembled from the blocks at compute time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from repscope import registry
from repscope.analysis.executors import map_reduce
from repscope.capture import ActivationStore

__all__ = [
    "PairStreamShard",
    "StreamShard",
    "compute_from_states",
    "map_pair_shard",
    "map_shard",
    "merge_states",
    "pair_estimate",
    "pair_state_key",
    "stream_pair_states",
    "stream_states",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamShard:
    """One map task: rows ``[start, stop)`` of ``layer`` in the store at ``store``."""

    store: str
    "Path of the ActivationStore (the worker opens it; no rows travel through the driver)."
    layer: str
    start: int
    stop: int
    measures: tuple[str, ...]
    "Registered streamable measures whose states to accumulate."
    device: str | None = None
    "Torch device of the per-batch products (None: numpy on the CPU)."
    batch_rows: int = 65536
    "Rows read and folded at a time (bounds the worker's memory)."


def _empty_states(measures: tuple[str, ...], d: int, device: str | None) -> dict[str, Any]:
    """One empty accumulator per ``state_key`` among the measures' accumulators."""
    states: dict[str, Any] = {}
    for name in measures:
        acc = registry.get(name).accumulator(d, device=device)
        states.setdefault(acc.state_key, acc)
    return states


def map_shard(shard: StreamShard) -> dict[str, Any]:
    """The accumulators (``state_key -> accumulator``) of the shard's rows, read batch by batch."""
    store = ActivationStore.open(shard.store)
    states = _empty_states(shard.measures, store.dim(shard.layer), shard.device)
    for X in store.iter_batches(shard.layer, batch_size=shard.batch_rows,
                                rows=slice(shard.start, shard.stop)):  # (b, d) float32
        states = {key: acc.update(X) for key, acc in states.items()}
    return states


def merge_states(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two partial results of :func:`map_shard` (same keys), state by state."""
    return {key: acc.merge(b[key]) for key, acc in a.items()}


def stream_states(executor: Any, store: str, layer: str, ranges: list[tuple[int, int]],
                  measures: tuple[str, ...], *, device: str | None = None, retries: int = 1,
                  batch_rows: int = 65536, timeout: float | None = None) -> dict[str, Any]:
    """Map :func:`map_shard` over ``ranges`` on ``executor`` and merge in range order.

    Raises :class:`~repscope.analysis.executors.TaskFailedError` when a range still fails
    after ``retries``.
    """
    shards = [StreamShard(str(store), layer, lo, hi, tuple(measures), device, batch_rows)
              for lo, hi in ranges]
    log.debug("streaming %s of %s over %d ranges for %s", layer, store, len(shards), measures)
    return map_reduce(executor, map_shard, merge_states, shards, retries=retries, timeout=timeout)


def compute_from_states(name: str, states: Mapping[str, Any],
                        params: Mapping[str, Any]) -> Any:
    """The :class:`~repscope.results.Estimate` of measure ``name`` from merged ``states``."""
    streaming = registry.get(name).accumulator
    return states[streaming.state_key(params)].for_measure(name).compute(dict(params))


# ------------------------------------------------------------------------ pair measures


@dataclass(frozen=True)
class PairStreamShard:
    """One map task of streamed pair measures: rows ``[start, stop)`` of several layers.

    ``pairs`` lists ``(measure, layer_a, layer_b, init)`` with ``init`` the accumulator's
    construction parameters as sorted ``(name, value)`` tuples (e.g. ``precision``)."""

    store: str
    layers: tuple[str, ...]
    "Every layer some pair reads; each is read once per batch."
    pairs: tuple[tuple[str, str, str, tuple[tuple[str, Any], ...]], ...]
    start: int
    stop: int
    batch_rows: int = 65536


def pair_state_key(measure: str, a: str, b: str, init: tuple[tuple[str, Any], ...],
                   acc: Any) -> str:
    """The key of the state that holds ``measure`` on layers ``(a, b)``.

    ``acc`` is the measure's accumulator class (or an accumulator). Classes that declare a
    multi-pair state in ``blocks`` (:class:`~repscope.measures.similarity.moments.
    PairMomentsAccumulator`: every moment-based measure) share ONE such state
    (:class:`~repscope.measures.similarity.moments.BlockMoments`) per ``state_key`` (e.g. the
    precision, from the construction parameters ``init``) for all layers and pairs,
    ``"blocks|<state_key>"``. Others get a state of their own per measure, ordered pair and
    construction parameters.
    """
    if getattr(acc, "blocks", None) is None:
        return f"{measure}|{a}|{b}|{init!r}"
    return f"blocks|{acc.key(**dict(init))}"


def init_params(name: str, params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The parameters of ``params`` that measure ``name``'s accumulator takes at construction
    (its declared state-shaping ``options``), as sorted ``(name, value)`` pairs."""
    options = registry.get(name).accumulator.state_options(params)
    return tuple(sorted(options.items()))


def _empty_pair_states(shard: PairStreamShard, dims: Mapping[str, int]
                       ) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """``(key -> empty state, key -> (a, b) layers of a per-pair state)`` of the shard's items:
    one ``blocks`` state per shared key over the layers its pairs read (in the shard's layer
    order), one accumulator per item otherwise."""
    states: dict[str, Any] = {}
    reads: dict[str, tuple[str, str]] = {}
    blocks: dict[str, tuple[Any, dict[str, Any], list[tuple[str, str]]]] = {}
    for m, a, b, init in shard.pairs:
        streaming = registry.get(m).accumulator
        key = pair_state_key(m, a, b, init, streaming.kind)
        if streaming.kind.blocks is not None:
            blocks.setdefault(key, (streaming.kind.blocks, dict(init), []))[2].append((a, b))
        elif key not in states:
            states[key] = streaming(dims[a], dims[b], **dict(init))
            reads[key] = (a, b)
    for key, (kind, options, pairs) in blocks.items():
        used = {layer for pair in pairs for layer in pair}
        layers = {layer: dims[layer] for layer in shard.layers if layer in used}
        states[key] = kind.empty(layers, pairs, **options)
    return states, reads


def map_pair_shard(shard: PairStreamShard) -> dict[str, Any]:
    """The states (``key -> state``, see :func:`pair_state_key`) of the shard's rows, the
    layers read in lockstep, ``batch_rows`` rows at a time: each moment-based state is one
    :class:`~repscope.measures.similarity.moments.BlockMoments` (every layer centred once and its
    Gram formed once per batch, one cross product per pair); other accumulators per item."""
    store = ActivationStore.open(shard.store)
    dims = {layer: store.dim(layer) for layer in shard.layers}
    states, reads = _empty_pair_states(shard, dims)
    rows = slice(shard.start, shard.stop)
    readers = [store.iter_batches(layer, batch_size=shard.batch_rows, rows=rows)
               for layer in shard.layers]
    for batch in zip(*readers, strict=True):
        X = dict(zip(shard.layers, batch, strict=True))  # layer -> (b, d_layer)
        for key, state in states.items():
            states[key] = (state.update(X[reads[key][0]], X[reads[key][1]]) if key in reads
                           else state.update(X))
    return states


def pair_estimate(states: Mapping[str, Any], measure: str, a: str, b: str,
                  params: Mapping[str, Any]) -> Any:
    """The :class:`~repscope.results.Estimate` of ``measure`` on layers ``(a, b)`` from the
    merged ``states`` of :func:`stream_pair_states`: a shared ``blocks`` state gives the pair's
    accumulator (``pair_state(a, b, measure)``, either order); others compute their own state."""
    streaming = registry.get(measure).accumulator
    init = init_params(measure, params)
    state = states[pair_state_key(measure, a, b, init, streaming.kind)]
    if streaming.kind.blocks is not None:
        state = state.pair_state(a, b, measure)
    return state.compute(dict(params))


def stream_pair_states(executor: Any, store: str, items: list[tuple[str, str, str, Mapping[str, Any]]],
                       ranges: list[tuple[int, int]], *, retries: int = 1,
                       batch_rows: int = 65536, timeout: float | None = None) -> dict[str, Any]:
    """Map :func:`map_pair_shard` over ``ranges`` for every ``(measure, a, b, params)`` of
    ``items`` and merge in range order; compute each item with :func:`pair_estimate`."""
    pairs = tuple(dict.fromkeys((m, a, b, init_params(m, params)) for m, a, b, params in items))
    layers = tuple(dict.fromkeys(layer for _, a, b, _ in pairs for layer in (a, b)))
    shards = [PairStreamShard(str(store), layers, pairs, lo, hi, batch_rows) for lo, hi in ranges]
    log.debug("streaming %d pair items of %s over %d ranges", len(pairs), store, len(shards))
    return map_reduce(executor, map_pair_shard, merge_states, shards, retries=retries,
                      timeout=timeout)
