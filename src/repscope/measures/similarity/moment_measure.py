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
* all pairs: one block matrix of every centred representation, block row by block row;
* jackknife: the pair moments with each group of rows left out (downdated from the group's own
  sums), then the same steps (:meth:`MomentMeasure.jackknife`); :class:`JackknifeCorrected`
  turns it into a bias-corrected variant of the measure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_int
from repscope.measures.similarity._common import (
    PRECISIONS,
    block_products,
    centred_into,
    check_pair,
    cross_products,
    make_estimate,
    resolve_device,
    row_sq,
)
from repscope.measures.similarity.moments import (
    CHUNK_ROWS,
    PairMomentsAccumulator,
    PairSums,
    pair_sums,
)
from repscope.registry import Prepared, Streaming
from repscope.results import Estimate
from repscope.stats import group_labels, jackknife, t_quantile

__all__ = ["JackknifeCorrected", "MomentMeasure", "PreparedSide"]

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
    key_map: Callable[[Any], torch.Tensor] | None = None
    """Side -> (d, r) map whose row norms ``||x_i W||^2`` order the rows for the jackknife
    groups (the whitening, for measures invariant to invertible linear maps: leverages);
    None: the centred row norms (invariant to rotation, translation and scale)."""

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

    def prepared(self, *, all_pairs: bool = False, null: Callable[..., Any] | None = None,
                 jackknife: Callable[..., Any] | None = None) -> Prepared:
        """The registry's prepared capability (with the block all-pairs path if asked, a
        batched permutation ``null`` if given, and :meth:`jackknife` unless replaced)."""
        return Prepared(self.prepare, self.compare, permute_side,
                        self.all_pairs if all_pairs else None, null,
                        jackknife if jackknife is not None else self.jackknife)

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

    def row_key(self, sx: PreparedSide, sy: PreparedSide) -> np.ndarray:
        """(n,) key ordering the rows for the jackknife groups: ``a_i / sum(a) + b_i / sum(b)``
        with ``a_i`` the squared norm of row i of ``Xc`` (or of ``Xc W``, :attr:`key_map`);
        symmetric in X and Y and invariant to what the measure is invariant to."""
        def part(s: PreparedSide) -> torch.Tensor:
            Z = s.Xc.to(torch.float64)
            if self.key_map is not None:
                Z = Z @ self.key_map(s.side)  # (n, r)
            a = row_sq(Z)  # (n,)
            return a / a.sum().clamp_min(1e-300)
        return (part(sx) + part(sy)).cpu().numpy()

    def jackknife(self, sx: PreparedSide, sy: PreparedSide, params: Mapping[str, Any],
                  groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The measure with each of ``groups`` groups of rows left out, and the group sizes.

        Groups come from :func:`repscope.stats.group_labels` on :meth:`row_key` (order
        independent). For group k of ``n_k`` rows with raw sums ``Zx_k^T Zy_k`` of the centred
        rows and means ``mu_k``, the rest has mean ``-n_k mu_k / (n - n_k)`` and centred
        moments ``S - Zx_k^T Zy_k - (n - n_k) mu'_x mu'_y^T`` (exact downdates), to which the
        side and pair steps are applied: one pass of products over the rows plus ``g`` side
        and pair steps. Warnings of the left-out fits are not repeated.
        """
        params = self.checked(params)
        Xc, Yc = sx.Xc.to(torch.float64), sy.Xc.to(torch.float64)  # (n, d_x), (n, d_y)
        n = Xc.shape[0]
        labels = group_labels(self.row_key(sx, sy), groups, seed=seed)
        g = int(labels.max()) + 1
        full = self.gram == "full"
        sxy = Xc.T @ Yc  # (d_x, d_y)
        sxx = Xc.T @ Xc if full else torch.sum(Xc * Xc, 0)
        syy = Yc.T @ Yc if full else torch.sum(Yc * Yc, 0)
        idx_all = torch.as_tensor(labels, device=Xc.device)
        values, sizes = np.empty(g), np.empty(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(g):
                idx = torch.nonzero(idx_all == k).flatten()
                Zx, Zy = Xc[idx], Yc[idx]  # (n_k, d)
                nk = int(idx.shape[0])
                m = n - nk
                mx, my = Zx.sum(0) / -m, Zy.sum(0) / -m  # means of the rest
                kxy = sxy - Zx.T @ Zy - m * torch.outer(mx, my)
                if full:
                    kxx = sxx - Zx.T @ Zx - m * torch.outer(mx, mx)
                    kyy = syy - Zy.T @ Zy - m * torch.outer(my, my)
                else:
                    kxx = torch.diag(sxx - torch.sum(Zx * Zx, 0) - m * mx * mx)
                    kyy = torch.diag(syy - torch.sum(Zy * Zy, 0) - m * my * my)
                side_x = self.side(kxx, m, params, "X")
                side_y = self.side(kyy, m, params, "Y")
                values[k] = self.pair(side_x, side_y, kxy, m, params).value
                sizes[k] = nk
        return values, sizes

    def _precision(self, params: Mapping[str, Any]) -> str:
        precision = params.get("precision", "float64")
        check_choice(precision, "precision", self.name, PRECISIONS)
        return precision


def _dtype(precision: str) -> torch.dtype:
    return torch.float32 if precision == "mixed" else torch.float64


def permute_side(state: PreparedSide, perm: Any) -> PreparedSide:
    """The prepared state of ``Y[perm]``: rows re-ordered, the side step (row-order free) kept."""
    return replace(state, Xc=state.Xc[torch.as_tensor(perm, device=state.Xc.device)])


@dataclass(frozen=True)
class JackknifeCorrected:
    """A jackknife bias-corrected variant of a moment-based measure (Quenouille 1956).

    ``value = g theta - sum_k (1 - n_k / n) theta_(-k)`` from the measure on all rows and
    with each of ``g`` groups left out (:meth:`MomentMeasure.jackknife`,
    :func:`repscope.stats.jackknife`): the O(1/n) part of the plug-in bias, which grows with
    the effective widths over n, is removed. The result carries the jackknife standard error
    and the t interval (``g - 1`` degrees of freedom) around the corrected value. Its
    ``prepare`` is the measure's, ``compare`` runs the correction, rows permute as usual.
    """

    name: str
    "Registered name of the corrected variant."
    base: MomentMeasure
    "The plug-in measure it corrects."
    bounds: tuple[float, float]
    "Range of the value (the corrected value and its interval are clipped to it)."
    guard: Callable[[Any, Any, int, Mapping[str, Any], str], None] | None = None
    """``guard(side_x, side_y, m_min, params, name)`` refuses data on which the left-out fits
    (``m_min`` rows at fewest) degenerate."""

    def prepared(self) -> Prepared:
        """Prepared capability: the base measure's preparation, the corrected comparison."""
        return Prepared(self.prepare, self.compare, permute_side)

    def checked(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(params)
        out["groups"] = check_int(out.get("groups", 20), "groups", self.name, low=2)
        out["seed"] = check_int(out.get("seed", 0), "seed", self.name)
        return out

    def _base_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in ("groups", "seed")}

    def prepare(self, X: ArrayLike, device: torch.device, params: Mapping[str, Any],
                name: str) -> PreparedSide:
        return self.base.prepare(X, device, self._base_params(self.checked(params)), name)

    def compare(self, sx: PreparedSide, sy: PreparedSide, params: Mapping[str, Any]) -> Estimate:
        """The corrected estimate of two prepared representations."""
        params = self.checked(params)
        base = self.base.checked(self._base_params(params))
        n = sx.Xc.shape[0]
        if self.guard is not None:
            m_min = n - -(-n // min(params["groups"], n))  # rows left by the largest group
            self.guard(sx.side, sy.side, m_min, base, self.name)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*overstates similarity")  # corrected here
            plug = self.base.compare(sx, sy, base)
        values, sizes = self.base.jackknife(sx, sy, base, params["groups"], params["seed"])
        corrected, se = jackknife(plug.value, values, sizes, n)
        lo, hi = self.bounds
        value = min(max(corrected, lo), hi)
        half = t_quantile(0.95, len(values) - 1) * se
        ci = (min(max(corrected - half, lo), value), max(min(corrected + half, hi), value))
        diag = {**{k: v for k, v in plug.diagnostics.items()
                   if k not in ("chance_level", "n_effective")},
                "plugin": plug.value, "bias_estimate": plug.value - corrected,
                "unclipped": corrected, "groups_used": len(values), "leave_out": values}
        params = {**params, "interval": f"jackknife t interval ({len(values)} groups, "
                                        f"95 %) around the corrected value: sampling only"}
        return make_estimate(self.name, value, n, params, diag, stderr=se, ci=ci)

    def batch(self, X: ArrayLike, Y: ArrayLike, params: Mapping[str, Any]) -> Estimate:
        """The corrected estimate of validated X, Y (each prepared once)."""
        params = self.checked(params)
        device = resolve_device(X, params.get("device"))
        return self.compare(self.prepare(X, device, params, "X"),
                            self.prepare(Y, device, params, "Y"), params)


def check_corrected_pair(X: ArrayLike, Y: ArrayLike, fn: str) -> tuple[Any, Any]:
    """Validate the pair of a jackknife-corrected measure (at least 10 rows)."""
    return check_pair(X, Y, fn, min_samples=10)

