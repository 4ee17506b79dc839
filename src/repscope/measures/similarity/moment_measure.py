"""A moment-based pair measure, written once, and every execution path that runs it.

Linear CKA, the Procrustes and shape metrics and the CCA family are functions of the pair
moments ``(n, Sxx, Syy, Sxy)`` (:class:`~repscope.measures.similarity.moments.PairSums`) that
split at the same seam: a **side** step that reads one representation's Gram block alone
(its zero-variance check, whitening map, trace or Frobenius norm, and the refusals that depend
on one side) and a **pair** step that reads the cross block. :class:`MomentMeasure` holds the
two steps and the measure's one parameter check; ``measure(sums, **params)`` is THE function
from pair sums, and every path calls it or its two steps:

* batch: :meth:`MomentMeasure.batch` (the pair sums of all rows, then the function);
* stream: :meth:`MomentMeasure.streaming` (the registry's accumulator; ``compute`` is the function);
* prepared: :meth:`MomentMeasure.prepared` (each representation centred and its side step run
  once; a pair costs one cross product and the pair step);
* all pairs: one block matrix of every centred representation, block row by block row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from repscope._validate import ArrayLike, check_choice
from repscope.measures.similarity._common import (
    PRECISIONS,
    block_products,
    centred_into,
    cross_products,
)
from repscope.measures.similarity.moments import (
    CHUNK_ROWS,
    PairMomentsAccumulator,
    PairSums,
    pair_sums,
)
from repscope.registry import Prepared, Streaming
from repscope.results import Estimate

__all__ = ["MomentMeasure", "PreparedSide"]

Side = Callable[[torch.Tensor, int, Mapping[str, Any], str], Any]
Pair = Callable[[Any, Any, torch.Tensor, int, Mapping[str, Any]], Estimate]


@dataclass(frozen=True)
class PreparedSide:
    """One representation prepared for a moment-based measure."""

    Xc: torch.Tensor
    "(n, d) centred rows: float64, or float32 (rounded after float64 centring) when mixed."
    sxx: torch.Tensor
    "(d, d) float64 Gram block ``Xc^T Xc`` (its diagonal only, as a matrix, for Procrustes)."
    side: Any
    "The measure's side step on ``sxx``."
    precision: str = "float64"
    "Arithmetic of the cross products (:data:`~repscope.measures.similarity._common.PRECISIONS`)."


@dataclass(frozen=True)
class MomentMeasure:
    """A pair measure that is a function of the pair moments, as its side and pair steps.

    ``measure(sums, **params)`` runs ``check``, the side step on ``Sxx`` (as ``"X"``) and on
    ``Syy`` (as ``"Y"``) and the pair step on ``Sxy``; it is the registered ``compute`` of the
    measure's accumulator and what its batch function returns.
    """

    name: str
    "Registered measure name (used in messages)."
    side: Side
    "``side(sxx, n, params, name) -> S``: everything that depends on one representation."
    pair: Pair
    "``pair(s_x, s_y, sxy, n, params) -> Estimate``."
    check: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    "The measure's one parameter check, returning the normalised parameters (None: nothing)."
    gram: Literal["full", "diagonal"] = "full"
    "What the side step reads: the whole Gram block, or its diagonal (column sums of squares)."
    options: tuple[str, ...] = ()
    "Parameters that shape the accumulated state (``precision`` for linear CKA)."

    # -------------------------------------------------------------- the one implementation
    def __call__(self, sums: PairSums, /, **params: Any) -> Estimate:
        """The estimate from pair sums: parameters checked once, side, side, pair."""
        return self.from_sums(sums, self.checked(params))

    def checked(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` after the measure's check (validated and normalised)."""
        return dict(self.check(params) if self.check is not None else params)

    def from_sums(self, s: PairSums, params: Mapping[str, Any]) -> Estimate:
        """The estimate from pair sums and already checked parameters."""
        sx = self.side(s.sxx, s.n, params, "X")
        sy = self.side(s.syy, s.n, params, "Y")
        return self.pair(sx, sy, s.sxy, s.n, params)

    def batch(self, X: ArrayLike, Y: ArrayLike, params: Mapping[str, Any], *,
              device: str | None = None, batch_size: int = CHUNK_ROWS) -> Estimate:
        """The batch function on validated X, Y: the pair sums of all rows, then the estimate."""
        params = self.checked(params)
        sums = pair_sums(X, Y, self.name, device=device, batch_size=batch_size,
                         precision=params.get("precision", "float64"),
                         diagonal=self.gram == "diagonal")
        return self.from_sums(sums, params)

    # ------------------------------------------------------------------- capabilities
    def streaming(self) -> Streaming:
        """The registry's accumulator capability: pair moments, computed by this measure."""
        return Streaming(PairMomentsAccumulator, self, self.options)

    def prepared(self, *, all_pairs: bool = False) -> Prepared:
        """The registry's prepared capability (with the block all-pairs path if asked)."""
        return Prepared(self.prepare, self.compare, permute_side,
                        self.all_pairs if all_pairs else None)

    def prepare(self, X: ArrayLike, device: torch.device, params: Mapping[str, Any],
                name: str) -> PreparedSide:
        """Centre one representation (float64) and run the side step on its Gram block."""
        params = self.checked(params)
        precision = self._precision(params)
        Xc = torch.empty(tuple(X.shape), dtype=_dtype(precision), device=device)  # (n, d)
        centred_into(Xc, X, 0, X.shape[1])
        if self.gram == "full":
            sxx = cross_products(Xc, Xc, precision)  # (d, d) float64
        else:
            sxx = torch.diag(torch.sum(Xc * Xc, dim=0))  # (d, d), the diagonal only
        return PreparedSide(Xc, sxx, self.side(sxx, Xc.shape[0], params, name), precision)

    def compare(self, sx: PreparedSide, sy: PreparedSide, params: Mapping[str, Any]) -> Estimate:
        """The pair step on ``Sxy = Xc^T Yc`` of two prepared representations."""
        same = sx is sy and self.gram == "full"
        sxy = sx.sxx if same else cross_products(sx.Xc, sy.Xc, sx.precision)  # (d_x, d_y)
        return self.pair(sx.side, sy.side, sxy, sx.Xc.shape[0], params)

    def all_pairs(self, arrays: Mapping[str, ArrayLike], names: Sequence[str],
                  device: torch.device, params: Mapping[str, Any]
                  ) -> dict[tuple[str, str], Estimate]:
        """Every pair ``(names[i], names[j])``, ``i <= j``, from one centred block matrix.

        The representations are centred (in float64) into the column blocks of
        ``Z = [X_1 ... X_L]`` (n, D), float64 or float32 per ``precision``; block row i of
        ``Z^T Z`` (representation i against itself and every later one) is one matrix product
        (:func:`~repscope.measures.similarity._common.block_products`), L products in all.
        Rows are taken last to first, so when row i is formed the side steps of every later
        representation (from their own diagonal blocks) are known.
        """
        params = self.checked(params)
        precision = self._precision(params)
        dims = [arrays[name].shape[1] for name in names]
        offs = [0]
        for d in dims:
            offs.append(offs[-1] + d)
        n = arrays[names[0]].shape[0]
        Z = torch.empty((n, offs[-1]), dtype=_dtype(precision), device=device)  # (n, D)
        for k, name in enumerate(names):
            centred_into(Z, arrays[name], offs[k], offs[k + 1])
        sides: list[Any] = [None] * len(names)
        out = {}
        for i in reversed(range(len(names))):
            G = block_products(Z, offs[i], offs[i + 1], precision)  # (d_i, D - offs[i]) float64
            sides[i] = self.side(G[:, :dims[i]], n, params, names[i])
            for j in range(i, len(names)):
                sxy = G[:, offs[j] - offs[i]:offs[j + 1] - offs[i]]  # (d_i, d_j)
                out[(names[i], names[j])] = self.pair(sides[i], sides[j], sxy, n, params)
        return out

    def _precision(self, params: Mapping[str, Any]) -> str:
        precision = params.get("precision", "float64")
        check_choice(precision, "precision", self.name, PRECISIONS)
        return precision


def _dtype(precision: str) -> torch.dtype:
    return torch.float32 if precision == "mixed" else torch.float64


def permute_side(state: PreparedSide, perm: Any) -> PreparedSide:
    """The prepared state of ``Y[perm]``: rows re-ordered, the side step (row-order free) kept."""
    return replace(state, Xc=state.Xc[torch.as_tensor(perm, device=state.Xc.device)])
