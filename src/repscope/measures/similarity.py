"""Representational similarity between two representations of the same inputs.

Importing this module registers every pair measure (``kind="pair"``, family "similarity").
Each name is one precise variant (see ``docs/similarity.md`` for the definitions):

========================== =============================================== ===============
name                       definition                                      range / better
========================== =============================================== ===============
cka_linear                 linear CKA, biased HSIC, feature space          [0, 1], higher
cka_linear_debiased        linear CKA, unbiased HSIC (Song et al. 2012)    [-1, 1], higher
cka_rbf                    RBF CKA, exact, blockwise                       [0, 1], higher
cka_rbf_nystroem           RBF CKA, Nystroem approximation (APPROXIMATE)   [0, 1], higher
cca_mean                   mean canonical correlation                      [0, 1], higher
svcca                      SVCCA (top PCs, then mean CCA)                  [0, 1], higher
pwcca                      projection-weighted CCA (asymmetric)            [0, 1], higher
procrustes_angular         angular Procrustes distance (radians)           [0, pi/2], lower
procrustes_euclidean       RMS residual after optimal rotation             [0, inf), lower
shape_alpha                generalized shape metric, partial whitening     [0, pi/2], lower
shape_mom                  moment estimate of Procrustes similarity        [0, 1], higher
rsa                        RDM correlation (rdm x compare parameters)      [-1, 1], higher
mutual_knn                 mean shared k-NN fraction                       [0, 1], higher
knn_jaccard                mean k-NN Jaccard, per point in 'local'         [0, 1], higher
relative_representations   agreement of cosine-to-anchor profiles          [-1, 1], higher
========================== =============================================== ===============

:data:`PREPARED` maps the measures whose per-representation work can be cached (centring,
whitening, neighbour tables) to ``(prepare, compare)`` functions; ``similarity_matrix`` uses
them to prepare each representation once and then compare all pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from repscope._validate import check_choice, check_float, check_int
from repscope.measures._sim_cca import (
    CCAState,
    _refuse,
    _warn_overlap,
    cca_mean,
    compare_cca_mean,
    compare_pwcca,
    prepare_cca,
    pwcca,
    svcca,
)
from repscope.measures._sim_cka import (
    DebiasedState,
    LinearCKAAccumulator,
    cka_linear,
    cka_linear_debiased,
    cka_rbf,
    cka_rbf_nystroem,
    compare_debiased,
    prepare_debiased,
)
from repscope.measures._sim_moments import PairMomentsAccumulator
from repscope.measures._sim_neighbors import (
    NeighborState,
    compare_knn,
    knn_jaccard,
    mutual_knn,
    prepare_knn,
    relative_representations,
)
from repscope.measures._sim_rsa import compare_rsa, prepare_rsa, rsa
from repscope.measures._sim_shape import (
    AlphaState,
    ShapeMomentEstimate,
    ShapeState,
    compare_alpha,
    compare_angular,
    compare_euclidean,
    prepare_alpha,
    prepare_procrustes,
    procrustes_angular,
    procrustes_euclidean,
    shape_alpha,
    shape_mom,
)
from repscope.results import Estimate

__all__ = [
    "PREPARED",
    "LinearCKAAccumulator",
    "PairMomentsAccumulator",
    "Prepared",
    "ShapeMomentEstimate",
    "cca_mean",
    "cka_linear",
    "cka_linear_debiased",
    "cka_rbf",
    "cka_rbf_nystroem",
    "knn_jaccard",
    "mutual_knn",
    "permute_state",
    "procrustes_angular",
    "procrustes_euclidean",
    "pwcca",
    "relative_representations",
    "rsa",
    "shape_alpha",
    "shape_mom",
    "svcca",
]


@dataclass(frozen=True)
class Prepared:
    """How a measure splits into per-representation work and a cheap pairwise step."""

    prepare: Callable[..., Any]
    "``prepare(X, device, params, name) -> state`` run once per representation."
    compare: Callable[..., Estimate]
    "``compare(state_x, state_y, params) -> Estimate`` run for every pair."
    all_pairs: Callable[..., dict[tuple[str, str], Estimate]] | None = None
    "Optional batched path ``all_pairs(arrays, names, device, params)`` for symmetric matrices."


@dataclass(frozen=True)
class _Centred:
    Xc: torch.Tensor
    "(n, d) centred rows: float64, or float32 for ``precision='mixed'``."
    self_hsic: float
    "``||Xc^T Xc||_F^2``."
    precision: str = "float64"
    "Arithmetic of the cross-products (:data:`~repscope.measures._sim_common.PRECISIONS`)."


def _linear_dtype(params: dict[str, Any]) -> torch.dtype:
    from repscope.measures._sim_common import PRECISIONS

    check_choice(params.get("precision", "float64"), "precision", "cka_linear", PRECISIONS)
    return torch.float32 if params.get("precision") == "mixed" else torch.float64


def _cross_sq(A: torch.Tensor, B: torch.Tensor, precision: str) -> float:
    """``||A^T B||_F^2`` of centred A (n, d_a), B (n, d_b), products in ``precision``."""
    from repscope.measures._sim_common import cross_products

    G = cross_products(A, B, precision)  # (d_a, d_b) float64
    return float(torch.sum(G * G))


def _prep_linear(X: Any, device: torch.device, params: dict[str, Any], name: str) -> _Centred:
    from repscope.measures._sim_common import block_products, centred_into, zero_variance

    dtype = _linear_dtype(params)
    Xc = torch.empty(X.shape, dtype=dtype, device=device)  # (n, d)
    centred_into(Xc, X, 0, X.shape[1])
    precision = params.get("precision", "float64")
    G = block_products(Xc, 0, X.shape[1], precision)  # (d, d) float64
    zero_variance(Xc, "cka_linear", name, warn=False, col_sq=torch.diagonal(G))
    return _Centred(Xc, float(torch.sum(G * G)), precision)


def _cmp_linear(sx: _Centred, sy: _Centred, params: dict[str, Any]) -> Estimate:
    from repscope.measures._sim_common import make_estimate

    hxy = sx.self_hsic if sx is sy else _cross_sq(sx.Xc, sy.Xc, sx.precision)
    n = sx.Xc.shape[0]
    value = hxy / (sx.self_hsic * sy.self_hsic) ** 0.5
    diag = {"hsic_xy": hxy / (n - 1) ** 2, "hsic_xx": sx.self_hsic / (n - 1) ** 2,
            "hsic_yy": sy.self_hsic / (n - 1) ** 2}
    return make_estimate("cka_linear", min(max(value, 0.0), 1.0), n, params, diag)


def _all_pairs_linear(arrays: dict[str, Any], names: tuple[str, ...], device: torch.device,
                      params: dict[str, Any]) -> dict[tuple[str, str], Estimate]:
    """Every ``cka_linear`` pair (i <= j) from one centred block matrix.

    The representations are centred (in float64) into the column blocks of
    ``Z = [X_1 ... X_L]`` (n, D), float64 or float32 per ``params["precision"]``, and block row
    i of ``Z^T Z`` (the cross-products with every later representation) is one matrix product
    (:func:`~repscope.measures._sim_common.block_products`), so the L (L + 1) / 2 needed
    ``d x d`` blocks come from L large products.
    """
    from repscope.measures._sim_common import (
        block_products,
        centred_into,
        make_estimate,
        zero_variance,
    )

    precision = params.get("precision", "float64")
    dims = [arrays[name].shape[1] for name in names]
    offs = [0]
    for d in dims:
        offs.append(offs[-1] + d)
    n = arrays[names[0]].shape[0]
    Z = torch.empty((n, offs[-1]), dtype=_linear_dtype(params), device=device)  # (n, D)
    for k, name in enumerate(names):
        centred_into(Z, arrays[name], offs[k], offs[k + 1])
    L = len(names)
    hsic = [[0.0] * L for _ in range(L)]
    for i in range(L):
        G = block_products(Z, offs[i], offs[i + 1], precision)  # (d_i, D - offs[i]) float64
        zero_variance(Z[:, offs[i]:offs[i + 1]], "cka_linear", names[i], warn=False,
                      col_sq=torch.diagonal(G[:, :dims[i]]))
        for j in range(i, L):
            B = G[:, offs[j] - offs[i]:offs[j + 1] - offs[i]]  # (d_i, d_j)
            hsic[i][j] = float(torch.sum(B * B))
    out = {}
    for i in range(L):
        for j in range(i, L):
            value = 1.0 if i == j else hsic[i][j] / (hsic[i][i] * hsic[j][j]) ** 0.5
            diag = {"hsic_xy": hsic[i][j] / (n - 1) ** 2, "hsic_xx": hsic[i][i] / (n - 1) ** 2,
                    "hsic_yy": hsic[j][j] / (n - 1) ** 2}
            out[(names[i], names[j])] = make_estimate("cka_linear", min(max(value, 0.0), 1.0),
                                                      n, params, diag)
    return out


def _prep_cca(name: str, variance_kept: bool = False) -> Callable[..., CCAState]:
    def prep(X: Any, device: torch.device, params: dict[str, Any], which: str) -> CCAState:
        if not variance_kept:
            _refuse(name, X.shape[0], {which: X.shape[1]}, "features")
        vk = None
        if variance_kept:
            vk = check_float(params["variance_kept"], "variance_kept", name, low=0.0, high=1.0,
                             low_inclusive=False)
        state = prepare_cca(X, device, name, which, variance_kept=vk)
        if variance_kept:
            _refuse(name, X.shape[0], {which: state.white.W.shape[1]}, "kept components")
        return state
    return prep


def _cmp_cca(name: str) -> Callable[..., Estimate]:
    def cmp(sx: CCAState, sy: CCAState, params: dict[str, Any]) -> Estimate:
        _warn_overlap(name, sx.Xc.shape[0], sx.white.W.shape[1], sy.white.W.shape[1])
        return compare_cca_mean(sx, sy, params, name)
    return cmp


def _prep_alpha(X: Any, device: torch.device, params: dict[str, Any], which: str) -> Any:
    alpha = check_float(params["alpha"], "alpha", "shape_alpha", low=0.0, high=1.0)
    if alpha == 0.0 and X.shape[0] <= X.shape[1]:
        raise ValueError(f"shape_alpha with alpha=0 (full whitening) needs more samples than "
                         f"features; got n_samples={X.shape[0]} and d={X.shape[1]}.")
    return prepare_alpha(X, device, alpha, "shape_alpha", which)


def _prep_knn(name: str) -> Callable[..., Any]:
    def prep(X: Any, device: torch.device, params: dict[str, Any], which: str) -> Any:
        k = check_int(params["k"], "k", name, low=1, high=X.shape[0], high_name="n_samples")
        check_choice(params["metric"], "metric", name, ("euclidean", "cosine"))
        return prepare_knn(X, k, params["metric"], device)
    return prep


PREPARED: dict[str, Prepared] = {
    "cka_linear": Prepared(_prep_linear, _cmp_linear, _all_pairs_linear),
    "cka_linear_debiased": Prepared(lambda X, dev, p, w: prepare_debiased(X, dev),
                                    compare_debiased),
    "cca_mean": Prepared(_prep_cca("cca_mean"), _cmp_cca("cca_mean")),
    "svcca": Prepared(_prep_cca("svcca", True), _cmp_cca("svcca")),
    "pwcca": Prepared(_prep_cca("pwcca"), compare_pwcca),
    "procrustes_angular": Prepared(
        lambda X, dev, p, w: prepare_procrustes(X, dev, "procrustes_angular", w),
        lambda a, b, p: compare_angular(a, b, p, "procrustes_angular")),
    "procrustes_euclidean": Prepared(
        lambda X, dev, p, w: prepare_procrustes(X, dev, "procrustes_euclidean", w),
        compare_euclidean),
    "shape_alpha": Prepared(_prep_alpha, compare_alpha),
    "rsa": Prepared(prepare_rsa, compare_rsa),
    "mutual_knn": Prepared(_prep_knn("mutual_knn"),
                           lambda a, b, p: compare_knn(a, b, p, "mutual_knn")),
    "knn_jaccard": Prepared(_prep_knn("knn_jaccard"),
                            lambda a, b, p: compare_knn(a, b, p, "knn_jaccard")),
}


_ROW_FIELDS: dict[type, tuple[str, ...]] = {
    _Centred: ("Xc",),
    DebiasedState: ("Xc", "sq"),
    CCAState: ("Xc",),
    AlphaState: ("Xc",),
    ShapeState: ("Z",),
}


def permute_state(state: Any, perm: Any) -> Any | None:
    """The prepared state of ``Y[perm]`` built from the state of ``Y``, or None if unsupported.

    Row-indexed fields are re-ordered; row-order-free summaries (Gram norms, eigenvalues) are
    kept; k-NN tables are re-labelled (``new = inv[indices[perm]]``). This lets a permutation
    test skip re-centring and re-whitening Y for every shuffle.
    """
    import numpy as np

    if isinstance(state, NeighborState):
        inv = np.empty_like(perm)
        inv[perm] = np.arange(perm.shape[0])
        return NeighborState(inv[state.indices[perm]])
    names = _ROW_FIELDS.get(type(state))
    if names is None:
        return None
    from dataclasses import replace

    changes = {}
    for name in names:
        value = getattr(state, name)
        idx = torch.as_tensor(perm, device=value.device)
        changes[name] = value[idx]
    return replace(state, **changes)
