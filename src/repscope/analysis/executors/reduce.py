"""Map over shards, merge in shard order: :func:`map_reduce`, the driver side of streamable
measures, with a result that does not depend on the backend or on completion order."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from repscope.analysis.executors.outcomes import TaskFailedError
from repscope.analysis.executors.scheduler import Executor

T = TypeVar("T")
R = TypeVar("R")


_NO_INITIAL: Any = object()


def map_reduce(
    executor: Executor,
    map_fn: Callable[[T], R],
    reduce_fn: Callable[[R, R], R],
    shards: Iterable[T],
    *,
    initial: R = _NO_INITIAL,
    retries: int = 1,
    progress: bool = False,
    max_in_flight: int | None = None,
    timeout: float | None = None,
) -> R:
    """``reduce_fn`` folded over ``map_fn(shard)`` for every shard, merged in shard order.

    The map runs on ``executor``; partial results are merged in the driver in shard order as
    soon as each prefix is complete, so the result does not depend on which executor ran the
    shards or in which order they finished (for a streamable measure with an associative
    ``merge`` it equals the one-pass batch result up to rounding). Example::

        moments = map_reduce(ex, shard_moments, Moments.merge, row_ranges)

    Raises :class:`TaskFailedError` as soon as a shard fails after its retries (the other
    shards are cancelled), and ``ValueError`` for no shards and no ``initial``.
    """
    items = list(shards)
    if not items and initial is _NO_INITIAL:
        raise ValueError("map_reduce got no shards and no 'initial' value to return.")
    retries, limit, timeout = executor._check_run(retries, max_in_flight, timeout, "map_reduce")
    executor._check_fn(map_fn)
    acc = initial
    pending: dict[int, Any] = {}  # partial results waiting for their predecessors
    next_i = 0
    outcomes = executor._schedule(map_fn, items, [str(i) for i in range(len(items))], retries,
                                  progress, limit, timeout)
    try:
        for out in outcomes:
            if not out.ok:
                raise TaskFailedError([out])
            pending[int(out.key)] = out.result
            while next_i in pending:
                part = pending.pop(next_i)
                acc = part if acc is _NO_INITIAL else reduce_fn(acc, part)
                next_i += 1
    finally:
        outcomes.close()  # cancels the rest if a shard failed
    return acc
