"""Where training rows come from, and the seeded order they are visited in.

A source is an array or one layer of an ActivationStore, seen through two methods:
``n_rows``/``d`` and ``read(rows)`` (sorted row indices -> float32 array).

The visiting order (:class:`BatchPlan`) is a pure function of ``(seed, epoch, batch index)``:
rows are cut into contiguous blocks, the blocks of an epoch are shuffled, ``window_blocks``
consecutive blocks form a window whose rows are shuffled together, and batches are cut from the
concatenated windows. A batch therefore touches at most two windows of a few contiguous
blocks each (sequential shard reads), and resuming at step ``t`` needs nothing but ``t``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from repscope._validate import as_numpy, check_array, check_int

__all__ = ["ArraySource", "BatchPlan", "RowSource", "StoreSource", "as_source"]


class RowSource(Protocol):
    """Anything the trainer and the inspector can read rows from."""

    n_rows: int
    d: int
    name: str

    def read(self, rows: np.ndarray) -> np.ndarray: ...


class ArraySource:
    """In-memory ``(n, d)`` activations."""

    def __init__(self, X: Any, fn: str = "train_sae") -> None:
        X = check_array(X, fn, min_samples=1)
        self._X = as_numpy(X)
        self.n_rows, self.d = self._X.shape
        self.name = "array"

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._X[rows], dtype=np.float32)


class StoreSource:
    """One layer of an :class:`repscope.capture.ActivationStore`."""

    def __init__(self, store: Any, layer: str) -> None:
        if layer not in list(store.layers):
            raise ValueError(
                f"Layer {layer!r} is not in the store; available layers: {list(store.layers)}."
            )
        self.store, self.layer = store, layer
        self.n_rows, self.d = int(store.n_rows), int(store.dim(layer))
        self.name = f"{getattr(store, 'path', 'store')}:{layer}"

    def read(self, rows: np.ndarray) -> np.ndarray:
        X = np.asarray(as_numpy(self.store.read(self.layer, rows)), dtype=np.float32)
        if not np.isfinite(X).all():
            raise ValueError(f"The store layer {self.layer!r} holds non-finite value(s) (NaN or inf).")
        return X


def as_source(data: Any, layer: str | None = None, fn: str = "train_sae") -> RowSource:
    """Wrap an array, a store (with ``layer``) or an existing source."""
    if hasattr(data, "read") and hasattr(data, "n_rows") and hasattr(data, "d"):
        return data
    if hasattr(data, "layers") and hasattr(data, "read"):
        if layer is None:
            raise ValueError(f"{fn} reads an ActivationStore layer: pass layer=... (one of {list(data.layers)}).")
        return StoreSource(data, layer)
    return ArraySource(data, fn)


@dataclass(frozen=True)
class BatchPlan:
    """Seeded batch order over ``n_rows`` rows (see module docstring)."""

    n_rows: int
    batch_size: int
    seed: int = 0
    block_rows: int = 4096
    window_blocks: int = 8

    def __post_init__(self) -> None:
        check_int(self.batch_size, "batch_size", "BatchPlan", low=1, high=self.n_rows,
                  high_inclusive=True, high_name="n_rows")

    @property
    def batches_per_epoch(self) -> int:
        return self.n_rows // self.batch_size

    def _block_order(self, epoch: int) -> np.ndarray:
        n_blocks = -(-self.n_rows // self.block_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(n_blocks)

    def _window_sizes(self, epoch: int) -> np.ndarray:
        order = self._block_order(epoch)
        sizes = np.minimum((order + 1) * self.block_rows, self.n_rows) - order * self.block_rows
        bounds = np.arange(0, len(order), self.window_blocks)
        return np.add.reduceat(sizes, bounds)  # rows per window

    def _window(self, epoch: int, w: int) -> np.ndarray:
        blocks = self._block_order(epoch)[w * self.window_blocks : (w + 1) * self.window_blocks]
        rows = np.concatenate([
            np.arange(b * self.block_rows, min((b + 1) * self.block_rows, self.n_rows)) for b in blocks
        ])
        return rows[np.random.default_rng([self.seed, epoch, w + 1]).permutation(len(rows))]

    def rows(self, step: int, cache: dict[tuple[int, int], np.ndarray] | None = None) -> np.ndarray:
        """Sorted row indices of global batch ``step`` (last partial batch of an epoch dropped)."""
        cache = {} if cache is None else cache
        epoch, b = divmod(step, self.batches_per_epoch)
        lo, hi = b * self.batch_size, (b + 1) * self.batch_size
        ends = np.cumsum(self._window_sizes(epoch))
        picked = []
        for w in range(int(np.searchsorted(ends, lo, side="right")), len(ends)):
            start = int(ends[w - 1]) if w else 0
            if start >= hi:
                break
            if (epoch, w) not in cache:
                cache.clear()  # keep at most the windows of the current batch
                cache[(epoch, w)] = self._window(epoch, w)
            picked.append(cache[(epoch, w)][max(lo - start, 0) : hi - start])
        return np.sort(np.concatenate(picked))

    def iter_rows(self, start_step: int, n_steps: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(step, rows)`` for steps ``start_step .. n_steps - 1``."""
        cache: dict[tuple[int, int], np.ndarray] = {}
        for step in range(start_step, n_steps):
            yield step, self.rows(step, cache)


#: rows per held-out segment (:func:`holdout_split`)
HOLDOUT_SEGMENT_ROWS = 64


def holdout_split(n_rows: int, fraction: float, seed: int,
                  segment_rows: int = HOLDOUT_SEGMENT_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n_rows`` rows into sorted ``(train_rows, heldout_rows)``.

    Rows are cut into contiguous segments of ``segment_rows`` (token rows of one document stay
    mostly together, so held-out rows are mostly whole documents and reads stay sequential);
    ``round(fraction * n_segments)`` segments, at least one when ``fraction > 0`` and there are
    two or more, are drawn with ``default_rng([seed, 3])``. With a single segment nothing is
    held out."""
    n_seg = -(-n_rows // segment_rows)
    n_hold = int(round(fraction * n_seg))
    if fraction > 0 and n_seg >= 2:
        n_hold = min(max(n_hold, 1), n_seg - 1)
    else:
        n_hold = 0
    held = np.zeros(n_rows, dtype=bool)
    for seg in np.random.default_rng([seed, 3]).choice(n_seg, size=n_hold, replace=False):
        held[seg * segment_rows:(seg + 1) * segment_rows] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


class SubsetSource:
    """The rows ``rows`` (sorted) of another source, renumbered ``0 .. len(rows) - 1``."""

    def __init__(self, source: RowSource, rows: np.ndarray) -> None:
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)
        self.n_rows, self.d = len(self.rows), source.d
        self.name = source.name

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.source.read(self.rows[rows])
