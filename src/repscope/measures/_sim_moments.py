"""Pair moments: the one streaming state of every covariance-based pair measure.

Linear CKA, the Procrustes and generalized shape metrics, mean CCA, SVCCA and PWCCA are exact
functions of the centred second moments of the paired rows ``[x, y]``: the count ``n`` and

    Sxx = Xc^T Xc (d_x, d_x),   Syy = Yc^T Yc (d_y, d_y),   Sxy = Xc^T Yc (d_x, d_y),

the blocks of the centred cross-product sum ``m2`` of :class:`repscope.stats.Moments` over the
joint rows (``d_x + d_y`` features). :class:`PairMomentsAccumulator` keeps that state with the
init / update / merge / compute protocol; every moment-based measure registers a
``PairSums -> Estimate`` function with :func:`pair_accumulator`, and its batch function is the
same accumulator (updated once per ``CHUNK_ROWS`` rows) followed by ``compute``. Because the
state does not depend on the measure, ``repscope analyze`` accumulates one state per layer
pair and precision (:attr:`PairMomentsAccumulator.state_key`) and computes every measure from
it. Memory: ``(d_x + d_y)^2`` float64 numbers per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, as_numpy, as_torch, check_choice, check_int
from repscope.measures._sim_common import PRECISIONS, block_products, check_pair
from repscope.results import Estimate
from repscope.stats import Moments

__all__ = ["CHUNK_ROWS", "PairMomentsAccumulator", "PairSums", "pair_accumulator", "pair_sums"]

CHUNK_ROWS = 8192
"Rows per update in the batch functions: bounds the float64 joint copy to CHUNK_ROWS x (d_x + d_y)."

_COMPUTE: dict[str, Callable[..., Estimate]] = {}  # measure name -> (PairSums, params) -> Estimate


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


def _joint(X: Any, Y: Any, device: str | None) -> Any:
    """(b, d_x + d_y) float64 joint rows: numpy on the CPU, torch on ``device``."""
    if device is None:
        return np.hstack([as_numpy(X, np.float64), as_numpy(Y, np.float64)])
    dev = torch.device(device)
    return torch.cat([as_torch(X, torch.float64, dev), as_torch(Y, torch.float64, dev)], dim=1)


def _batch_moments(joint: Any, precision: str) -> Moments:
    """Moments of one batch: mean, then the centred cross-product in ``precision``."""
    if precision == "float64" and isinstance(joint, np.ndarray):
        return Moments.init(joint.shape[1]).update(joint)
    Z = as_torch(joint, torch.float64)  # (b, D)
    mean = Z.mean(0)  # (D,)
    Zc = Z - mean  # (b, D) centred in float64
    if precision == "mixed":
        Zc = Zc.to(torch.float32)  # rounded once after float64 centring
    m2 = block_products(Zc, 0, Zc.shape[1], precision)  # (D, D) float64
    return Moments(int(Z.shape[0]), mean.cpu().numpy(), m2.cpu().numpy())


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

    @property
    def state_key(self) -> str:
        """Accumulators with equal keys accumulate the same state (any measure)."""
        return f"pair_moments:{self.precision}"

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
        batch = _batch_moments(_joint(X, Y, device), self.precision)
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

    def compute(self, params: Mapping[str, Any] | None = None) -> Estimate:
        """The measure's :class:`Estimate` from the accumulated state."""
        return _COMPUTE[self.measure](self.sums(), dict(params or {}))


def pair_accumulator(measure: str, compute: Callable[..., Estimate]
                     ) -> Callable[..., PairMomentsAccumulator]:
    """The registry's ``accumulator=`` for a float64 moment-based measure: ``factory(d_x, d_y)``.

    ``compute(sums, params)`` maps :class:`PairSums` and the resolved parameters to the
    measure's :class:`Estimate`.
    """
    _COMPUTE[measure] = compute

    def factory(d_x: int, d_y: int) -> PairMomentsAccumulator:
        return PairMomentsAccumulator.empty(measure, d_x, d_y)

    factory.__name__ = f"{measure}_accumulator"
    factory.__doc__ = f"Empty :class:`PairMomentsAccumulator` of ``{measure}``."
    return factory


def pair_sums(X: ArrayLike, Y: ArrayLike, measure: str, *, device: str | None = None,
              precision: str = "float64", batch_size: int = CHUNK_ROWS) -> PairSums:
    """:class:`PairSums` of validated X (n, d_x), Y (n, d_y): the accumulator fed ``batch_size``
    rows at a time (memory O(batch_size (d_x + d_y) + (d_x + d_y)^2))."""
    acc = PairMomentsAccumulator.empty(measure, X.shape[1], Y.shape[1], precision, device)
    for lo in range(0, X.shape[0], batch_size):
        acc = acc.update(X[lo:lo + batch_size], Y[lo:lo + batch_size])
    return acc.sums()
