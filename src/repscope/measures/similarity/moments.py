"""Pair moments: the one streaming state of every covariance-based pair measure.

Linear CKA, the Procrustes and generalized shape metrics, mean CCA, SVCCA and PWCCA are exact
functions of the centred second moments of the paired rows ``[x, y]``: the count ``n`` and

    Sxx = Xc^T Xc (d_x, d_x),   Syy = Yc^T Yc (d_y, d_y),   Sxy = Xc^T Yc (d_x, d_y),

the blocks of the centred cross-product sum ``m2`` of :class:`repscope.stats.Moments` over the
joint rows (``d_x + d_y`` features). :class:`PairMomentsAccumulator` keeps that state with the
init / update / merge / compute protocol (:class:`repscope.registry.Accumulator`). Every
moment-based measure is ONE ``PairSums -> Estimate`` function
(:class:`~repscope.measures.similarity.moment_measure.MomentMeasure`) that its batch function
(:func:`pair_sums`: the accumulator updated once per ``CHUNK_ROWS`` rows), its accumulator's
``compute`` and its prepared and all-pairs paths call. Because the
state does not depend on the measure, ``repscope analyze`` accumulates one state per layer
pair and precision (:attr:`PairMomentsAccumulator.state_key`) and computes every measure from
it. Memory: ``(d_x + d_y)^2`` float64 numbers per pair.

:class:`BlockMoments` is the same statistic for many layers and pairs at once, as ``repscope
analyze`` streams it: the count, each layer's mean and centred Gram block, and one centred
cross block per requested pair, ``(L + P) d^2 + L d`` float64 numbers for ``L`` layers and ``P``
pairs of width ``d`` instead of ``4 P d^2``; :meth:`BlockMoments.pair_state` rebuilds any
pair's :class:`PairMomentsAccumulator` from its blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch

from repscope._validate import (
    ArrayLike,
    as_numpy,
    as_torch,
    check_array,
    check_choice,
    check_int,
)
from repscope.measures.similarity._common import (
    PRECISIONS,
    centred_cross,
    check_pair,
    cross_products,
    resolve_device,
)
from repscope.registry import compute_accumulated
from repscope.results import Estimate
from repscope.stats import Moments, merge_comoment

__all__ = [
    "CHUNK_ROWS",
    "BlockMoments",
    "PairMomentsAccumulator",
    "PairSums",
    "pair_sums",
]

CHUNK_ROWS = 8192
("Rows centred and multiplied at a time (batch functions and every update): bounds the float64 "
 "centred copies to CHUNK_ROWS x (sum of the block widths).")

@dataclass(frozen=True)
class PairSums:
    """Centred second-moment sums of ``n`` paired rows, as float64 torch tensors."""

    n: int
    sxx: torch.Tensor
    "(d_x, d_x) ``Xc^T Xc``."
    syy: torch.Tensor
    "(d_y, d_y) ``Yc^T Yc``."
    sxy: torch.Tensor
    "(d_x, d_y) ``Xc^T Yc``."
    diagonal: bool = False
    """True when ``sxx`` and ``syy`` hold only the diagonals of the Gram blocks (the column
    sums of squares, all a Procrustes metric reads; see :func:`pair_sums`)."""


def _same_rows(X: Any, Y: Any) -> bool:
    """True when X and Y are views of the same memory with the same layout (X vs itself)."""
    if X is Y:
        return True
    if isinstance(X, np.ndarray) and isinstance(Y, np.ndarray):
        return (X.__array_interface__["data"][0] == Y.__array_interface__["data"][0]
                and (X.shape, X.strides, X.dtype) == (Y.shape, Y.strides, Y.dtype))
    if isinstance(X, torch.Tensor) and isinstance(Y, torch.Tensor):
        return (X.data_ptr() == Y.data_ptr() and X.device == Y.device
                and (X.shape, X.stride(), X.dtype) == (Y.shape, Y.stride(), Y.dtype))
    return False


def _batch_moments(X: Any, Y: Any, precision: str, device: str | None) -> Moments:
    """:class:`Moments` of one batch of joint rows ``[x, y]``, built block by block with the
    arithmetic of :meth:`BlockMoments.update` (each side centred once on its float64 batch
    mean; ``Sxx``, ``Syy``, ``Sxy`` as three products in ``precision``; the lower block is
    ``Sxy^T``), so a per-pair state and a block state of the same rows are bit-identical."""
    if _same_rows(X, Y):  # a layer with itself: one centring, one Gram (the block diagonal)
        (mean,), (sxx,) = _batch_products([X], [(0, 0)], precision, device)
        return Moments(int(X.shape[0]), np.concatenate([mean, mean]),
                       np.block([[sxx, sxx], [sxx, sxx]]))
    means, (sxx, syy, sxy) = _batch_products([X, Y], [(0, 0), (1, 1), (0, 1)], precision, device)
    m2 = np.block([[sxx, sxy], [sxy.T, syy]])  # (D, D)
    return Moments(int(X.shape[0]), np.concatenate(means), m2)


@dataclass(frozen=True)
class PairMomentsAccumulator:
    """Streaming state of a moment-based pair measure: :class:`Moments` of the rows ``[x, y]``.

    Immutable and picklable: ``update(X_batch, Y_batch)`` and ``merge(other)`` return new
    accumulators (merging is the float64 pairwise update of Chan, Golub and LeVeque, 1979);
    ``compute(params)`` returns the measure's :class:`Estimate`. Accumulators of different
    measures with the same ``state_key`` hold the same state and may be merged or adopted.
    """

    measure: str
    "Registered measure whose ``compute`` this accumulator runs."
    moments: Moments
    "Float64 count, mean and centred cross-products of the joint rows (d_x + d_y features)."
    d_x: int
    "Features of X (the first ``d_x`` columns of the joint rows)."
    precision: str = "float64"
    "Arithmetic of each batch's cross-product (:data:`PRECISIONS`); merging is always float64."
    device: str | None = None
    "Torch device of the per-batch product (None: numpy on the CPU). Not part of the state."
    blocks: ClassVar[type | None] = None
    "The multi-layer state many pairs share (:class:`BlockMoments`, set below)."

    @classmethod
    def empty(cls, measure: str, d_x: int, d_y: int, precision: str = "float64",
              device: str | None = None) -> PairMomentsAccumulator:
        """The empty state of ``measure`` for ``d_x`` + ``d_y`` features."""
        fn = f"{measure} (pair moments)"
        d_x = check_int(d_x, "d_x", fn, low=1)
        d_y = check_int(d_y, "d_y", fn, low=1)
        check_choice(precision, "precision", fn, PRECISIONS)
        return cls(measure, Moments.init(d_x + d_y), d_x, precision, device)

    @property
    def d_y(self) -> int:
        return self.moments.d - self.d_x

    @classmethod
    def key(cls, precision: str = "float64") -> str:
        """The :attr:`state_key` of accumulators of this ``precision``."""
        return f"pair_moments:{precision}"

    @property
    def state_key(self) -> str:
        """Accumulators with equal keys accumulate the same state (any measure)."""
        return self.key(self.precision)

    def update(self, X: ArrayLike, Y: ArrayLike) -> PairMomentsAccumulator:
        """Add a batch of paired rows, X (b, d_x) and Y (b, d_y) (validated: float, finite)."""
        X, Y = check_pair(X, Y, f"{self.measure} (streaming update)", min_samples=1)
        if X.shape[1] != self.d_x or Y.shape[1] != self.d_y:
            raise ValueError(f"{self.measure} (streaming update) expects batches of shape "
                             f"(b, {self.d_x}) and (b, {self.d_y}); got {tuple(X.shape)} and "
                             f"{tuple(Y.shape)}.")
        device = self.device
        if device is None and isinstance(X, torch.Tensor) and X.device.type != "cpu":
            device = str(X.device)
        batch = _batch_moments(X, Y, self.precision, device)
        return replace(self, moments=self.moments.merge(batch))

    def _check_same(self, other: PairMomentsAccumulator) -> None:
        if other.d_x != self.d_x or other.moments.d != self.moments.d:
            raise ValueError(f"Cannot merge pair moments of (d_x, d_y)=({self.d_x}, {self.d_y}) "
                             f"and ({other.d_x}, {other.d_y}).")
        if other.precision != self.precision:
            raise ValueError(f"Cannot merge accumulators with precision={self.precision!r} and "
                             f"precision={other.precision!r}.")

    def merge(self, other: PairMomentsAccumulator) -> PairMomentsAccumulator:
        """Combine with another worker's partial state (associative, commutative)."""
        self._check_same(other)
        return replace(self, moments=self.moments.merge(other.moments))

    def for_measure(self, name: str) -> PairMomentsAccumulator:
        """The same state, computed as measure ``name``."""
        return replace(self, measure=name)

    def adopt(self, other: PairMomentsAccumulator) -> PairMomentsAccumulator:
        """This measure's accumulator holding ``other``'s state (same ``state_key``)."""
        if other.precision != self.precision:
            raise ValueError(f"Cannot adopt a precision={other.precision!r} state into a "
                             f"precision={self.precision!r} accumulator.")
        return replace(self, moments=other.moments, d_x=other.d_x)

    def swapped(self) -> PairMomentsAccumulator:
        """The state of the rows ``[y, x]``: the same numbers, blocks permuted (exact)."""
        m, dx = self.moments, self.d_x
        order = np.r_[dx:m.d, 0:dx]  # (D,)
        moved = Moments(m.n, m.mean[order], m.m2[np.ix_(order, order)])
        return replace(self, moments=moved, d_x=m.d - dx)

    def sums(self) -> PairSums:
        """The blocks ``Sxx``, ``Syy``, ``Sxy`` (float64 torch); refuses fewer than 2 rows."""
        n, m2, dx = self.moments.n, torch.from_numpy(self.moments.m2), self.d_x
        if n < 2:
            raise ValueError(f"{self.measure} needs at least 2 samples (rows); got n_samples={n}.")
        return PairSums(n, m2[:dx, :dx], m2[dx:, dx:], m2[:dx, dx:])

    def compute(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Estimate:
        """The measure's :class:`Estimate`: its registered ``compute`` on :meth:`sums`."""
        return compute_accumulated(self, self.sums(), params, kw)


def _batch_products(batches: list[Any], pairs: list[tuple[int, int]], precision: str,
                    device: str | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(means, products)`` of one batch of rows of several blocks (the same ``b`` rows):
    each block's float64 batch mean (d_i,) and, for every ``(i, j)`` of ``pairs``, the float64
    centred product ``Xc_i^T Xc_j`` (d_i, d_j).

    The rows are centred on the batch means and multiplied ``CHUNK_ROWS`` rows at a time
    (memory O(CHUNK_ROWS sum_i d_i), whatever the batch), the chunk products summed in
    float64. ``precision="float64"`` on ``device=None`` uses numpy; otherwise torch on
    ``device``, where ``"mixed"`` rounds the float64-centred chunks to float32 once and sums
    float32 products (:func:`~repscope.measures.similarity._common.cross_products`). The per-pair
    and the block states both call this, so their products are the same numbers.
    """
    n = int(batches[0].shape[0])
    if precision == "float64" and device is None:
        Xs = [as_numpy(X) for X in batches]  # (b, d_i), float32 or float64, not copied
        means = [X.mean(axis=0, dtype=np.float64) for X in Xs]  # (d_i,)
        out = [np.zeros((Xs[i].shape[1], Xs[j].shape[1])) for i, j in pairs]
        for lo in range(0, n, CHUNK_ROWS):
            Zs = [np.subtract(X[lo:lo + CHUNK_ROWS], m, dtype=np.float64)
                  for X, m in zip(Xs, means, strict=True)]  # (c, d_i) centred in float64
            for k, (i, j) in enumerate(pairs):
                out[k] += Zs[i].T @ Zs[j]
        return means, out
    dev = torch.device(device) if device is not None else torch.device("cpu")
    Ts = [as_torch(X, device=dev) for X in batches]  # (b, d_i), not copied when possible
    tmeans = [T.mean(dim=0, dtype=torch.float64) for T in Ts]  # (d_i,)
    acc = [torch.zeros((Ts[i].shape[1], Ts[j].shape[1]), dtype=torch.float64, device=dev)
           for i, j in pairs]
    for lo in range(0, n, CHUNK_ROWS):
        Zs = [T[lo:lo + CHUNK_ROWS].to(torch.float64) - m for T, m in zip(Ts, tmeans, strict=True)]
        if precision == "mixed":
            Zs = [Z.to(torch.float32) for Z in Zs]  # rounded once after float64 centring
        for k, (i, j) in enumerate(pairs):
            acc[k] += cross_products(Zs[i], Zs[j], precision)
    return [m.cpu().numpy() for m in tmeans], [a.cpu().numpy() for a in acc]


@dataclass(frozen=True)
class BlockMoments:
    """Joint second moments of several layers read in lockstep, kept block by block.

    For ``n`` rows and layers ``a`` (features ``d_a``): the float64 means ``mu_a`` (d_a,),
    the centred Gram blocks ``M_aa = Xc_a^T Xc_a`` (d_a, d_a), and for every requested pair
    ``(a, b)`` (``a`` before ``b`` in :attr:`names`) the centred cross block
    ``M_ab = Xc_a^T Xc_b`` (d_a, d_b): exactly the blocks of the :class:`Moments` of the joint
    rows ``[x_a, x_b]`` that :class:`PairMomentsAccumulator` keeps per pair, each stored once.
    Memory and work per row: ``sum_a d_a^2 + sum_(a,b) d_a d_b`` (``(L + P) d^2``) instead of
    ``sum_(a,b) (d_a + d_b)^2`` (``4 P d^2``) for ``P`` per-pair states.

    ``update`` centres each layer's batch once on its mean, forms one Gram per layer and one
    cross product per pair in :attr:`precision` (the per-pair accumulator's arithmetic), and
    merges; ``merge`` is the pairwise update of Chan, Golub and LeVeque (1979) per block
    (:func:`repscope.stats.merge_comoment`). Immutable and picklable.
    """

    names: tuple[str, ...]
    "Layers (blocks), in order."
    pairs: tuple[tuple[int, int], ...]
    "Requested pairs as indices ``(i, j)``, ``i < j``, into :attr:`names` (sorted)."
    n: int
    "Rows seen."
    means: tuple[np.ndarray, ...]
    "(d_a,) float64 mean per layer."
    grams: tuple[np.ndarray, ...]
    "(d_a, d_a) centred Gram block per layer."
    cross: tuple[np.ndarray, ...]
    "(d_a, d_b) centred cross block per pair of :attr:`pairs`."
    precision: str = "float64"
    "Arithmetic of each batch's products (:data:`PRECISIONS`); merging is always float64."
    device: str | None = None
    "Torch device of the per-batch products (None: numpy for float64). Not part of the state."

    @classmethod
    def empty(cls, dims: Mapping[str, int], pairs: Iterable[tuple[str, str]],
              precision: str = "float64", device: str | None = None) -> BlockMoments:
        """The empty state of layers ``dims`` (name -> features, in order) and ``pairs`` of
        their names (either order; a layer with itself needs only its Gram block)."""
        fn = "BlockMoments.empty"
        check_choice(precision, "precision", fn, PRECISIONS)
        names = tuple(dims)
        for name in names:
            check_int(dims[name], f"dims[{name!r}]", fn, low=1)
        index = {name: i for i, name in enumerate(names)}
        wanted = set()
        for a, b in pairs:
            for layer in (a, b):
                if layer not in index:
                    raise ValueError(f"{fn}: pair ({a!r}, {b!r}) names {layer!r}, which is not "
                                     f"one of the layers {list(names)}.")
            if a != b:
                wanted.add(tuple(sorted((index[a], index[b]))))
        ordered = tuple(sorted(wanted))
        return cls(names, ordered, 0, tuple(np.zeros(dims[a]) for a in names),
                   tuple(np.zeros((dims[a], dims[a])) for a in names),
                   tuple(np.zeros((dims[names[i]], dims[names[j]])) for i, j in ordered),
                   precision, device)

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(m.shape[0] for m in self.means)

    @property
    def state_key(self) -> str:
        """Equal to the ``state_key`` of the per-pair accumulators it replaces."""
        return f"pair_moments:{self.precision}"

    @property
    def n_floats(self) -> int:
        """Float64 numbers held: ``sum_a (d_a^2 + d_a) + sum_(a,b) d_a d_b``."""
        return sum(a.size for part in (self.means, self.grams, self.cross) for a in part)

    def update(self, batches: Mapping[str, ArrayLike]) -> BlockMoments:
        """Add one batch of rows per layer (``name -> (b, d_name)``, the same ``b`` rows of
        every layer; extra names are ignored). Validated: float, finite, 2-D."""
        fn = "BlockMoments.update"
        Xs = []
        for name, d in zip(self.names, self.dims, strict=True):
            if name not in batches:
                raise ValueError(f"{fn} needs a batch of every layer; {name!r} is missing.")
            X = check_array(batches[name], fn, name=name, min_samples=1)
            if X.shape[1] != d or X.shape[0] != (Xs[0].shape[0] if Xs else X.shape[0]):
                raise ValueError(f"{fn} expects {name!r} of shape (b, {d}) with the same b for "
                                 f"every layer; got {tuple(X.shape)}.")
            Xs.append(X)
        device = self.device
        if device is None and isinstance(Xs[0], torch.Tensor) and Xs[0].device.type != "cpu":
            device = str(Xs[0].device)
        L = len(Xs)
        means, products = _batch_products(Xs, [(i, i) for i in range(L)] + list(self.pairs),
                                          self.precision, device)
        batch = replace(self, n=int(Xs[0].shape[0]), means=tuple(means),
                        grams=tuple(products[:L]), cross=tuple(products[L:]))
        return self.merge(batch)

    def merge(self, other: BlockMoments) -> BlockMoments:
        """Combine with another worker's partial state of the same layers, pairs, precision."""
        if (other.names, other.dims, other.pairs) != (self.names, self.dims, self.pairs):
            raise ValueError(f"Cannot merge block moments of layers {self.names} (dims "
                             f"{self.dims}, {len(self.pairs)} pairs) and {other.names} (dims "
                             f"{other.dims}, {len(other.pairs)} pairs).")
        if other.precision != self.precision:
            raise ValueError(f"Cannot merge block moments with precision={self.precision!r} "
                             f"and precision={other.precision!r}.")
        if other.n == 0:
            return self
        if self.n == 0:
            return replace(other, device=self.device)
        n = self.n + other.n
        deltas = [mo - ms for ms, mo in zip(self.means, other.means, strict=True)]  # (d_a,)
        return replace(
            self, n=n,
            means=tuple(ms + dl * (other.n / n) for ms, dl in zip(self.means, deltas, strict=True)),
            grams=tuple(merge_comoment(self.n, gs, other.n, go, dl, dl)
                        for gs, go, dl in zip(self.grams, other.grams, deltas, strict=True)),
            cross=tuple(merge_comoment(self.n, cs, other.n, co, deltas[i], deltas[j])
                        for cs, co, (i, j) in zip(self.cross, other.cross, self.pairs,
                                                  strict=True)))

    def _cross(self, i: int, j: int) -> np.ndarray:
        """(d_i, d_j) ``M_ij`` for any requested order (transposed when kept as ``(j, i)``)."""
        if i == j:
            return self.grams[i]
        if (i, j) in self.pairs:
            return self.cross[self.pairs.index((i, j))]
        if (j, i) in self.pairs:
            return self.cross[self.pairs.index((j, i))].T
        raise KeyError(f"No cross block for layers ({self.names[i]!r}, {self.names[j]!r}): "
                       f"not among the requested pairs.")

    def pair_state(self, a: str, b: str, measure: str = "pair_moments") -> PairMomentsAccumulator:
        """The :class:`PairMomentsAccumulator` of the rows ``[x_a, x_b]`` (either order; ``a ==
        b`` allowed), assembled from the blocks: the state a per-pair accumulator would hold."""
        if a not in self.names or b not in self.names:
            raise KeyError(f"No block moments for layers ({a!r}, {b!r}); kept: {list(self.names)}.")
        i, j = self.names.index(a), self.names.index(b)
        m2 = np.block([[self.grams[i], self._cross(i, j)],
                       [self._cross(j, i), self.grams[j]]])  # (d_a + d_b, d_a + d_b)
        moments = Moments(self.n, np.concatenate([self.means[i], self.means[j]]), m2)
        return PairMomentsAccumulator(measure, moments, self.dims[i], self.precision, self.device)


PairMomentsAccumulator.blocks = BlockMoments


def pair_sums(X: ArrayLike, Y: ArrayLike, measure: str, *, device: str | None = None,
              precision: str = "float64", batch_size: int = CHUNK_ROWS,
              diagonal: bool = False) -> PairSums:
    """:class:`PairSums` of validated X (n, d_x), Y (n, d_y): the accumulator fed ``batch_size``
    rows at a time (memory O(batch_size (d_x + d_y) + (d_x + d_y)^2)).

    ``diagonal=True`` computes only ``Sxy`` and the column sums of squares (the diagonals of
    ``Sxx``, ``Syy``, returned as diagonal matrices) in one chunked pass
    (:func:`~repscope.measures.similarity._common.centred_cross`): a third of the products
    when d_x = d_y, for measures that read nothing else (Procrustes).
    """
    if diagonal:
        S, cx, cy = centred_cross(X, Y, resolve_device(X, device))  # (d_x, d_y), (d_x,), (d_y,)
        return PairSums(int(X.shape[0]), torch.diag(cx), torch.diag(cy), S, diagonal=True)
    acc = PairMomentsAccumulator.empty(measure, X.shape[1], Y.shape[1], precision, device)
    for lo in range(0, X.shape[0], batch_size):
        acc = acc.update(X[lo:lo + batch_size], Y[lo:lo + batch_size])
    return acc.sums()
