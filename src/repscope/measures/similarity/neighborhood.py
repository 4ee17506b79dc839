"""Neighbourhood measures: mutual k-NN alignment, k-NN Jaccard, relative representations.

The neighbour tables come from the shared engine :func:`repscope.neighbors.knn` (exact,
blockwise, no n x n matrix), with ``duplicates="keep"`` so that row ``i`` means the same input
on both sides, and a float64 ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_int
from repscope.measures.similarity._common import (
    centred,
    check_pair,
    make_estimate,
    resolve_device,
    to64,
    zero_variance,
)
from repscope.neighbors import knn
from repscope.registry import Prepared, register
from repscope.results import Estimate

__all__ = ["knn_jaccard", "mutual_knn", "relative_representations"]

METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class NeighborState:
    """The k-NN index table of one representation, prepared once."""

    indices: np.ndarray
    "(n, k) int64 neighbours of each row (self excluded, nearest first)."


def prepare_knn(X: ArrayLike, k: int, metric: str, device: Any) -> NeighborState:
    """The float64-ranked k-NN table of X, duplicates kept (row i stays input i)."""
    nb = knn(X, k, metric=metric, duplicates="keep", dtype=torch.float64, device=device)
    return NeighborState(np.asarray(nb.indices, dtype=np.int64))


def permute_knn(state: NeighborState, perm: np.ndarray) -> NeighborState:
    """The table of ``Y[perm]``: rows re-ordered and neighbours re-labelled, ``inv[idx[perm]]``."""
    perm = np.asarray(perm)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.shape[0])
    return NeighborState(inv[state.indices[perm]])


def _prepared(name: str) -> Prepared:
    """The prepared path of ``mutual_knn`` / ``knn_jaccard`` (one k-NN table per side)."""
    def prepare(X: ArrayLike, device: Any, params: Mapping[str, Any], which: str) -> NeighborState:
        k, metric = _check_knn(X.shape[0], name, params["k"], params["metric"])
        return prepare_knn(X, k, metric, device)

    def compare(sx: NeighborState, sy: NeighborState, params: Mapping[str, Any]) -> Estimate:
        return compare_knn(sx, sy, params, name)

    return Prepared(prepare, compare, permute_knn)


def overlap_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) size of the intersection of the neighbour sets in each row of a and b (n, k)."""
    counts = np.zeros(a.shape[0], dtype=np.int64)
    for lo in range(0, a.shape[0], 4096):  # bounded (block, k, k) comparisons
        blk = a[lo:lo + 4096, :, None] == b[lo:lo + 4096, None, :]
        counts[lo:lo + 4096] = blk.any(axis=2).sum(axis=1)
    return counts


def compare_knn(sx: NeighborState, sy: NeighborState, params: Mapping[str, Any],
                name: str) -> Estimate:
    k = sx.indices.shape[1]
    c = overlap_counts(sx.indices, sy.indices).astype(np.float64)  # (n,)
    local = c / k if name == "mutual_knn" else c / (2 * k - c)
    return make_estimate(name, float(local.mean()), sx.indices.shape[0], params,
                         {"local": local})


def _check_knn(n: int, fn: str, k: int, metric: str) -> tuple[int, str]:
    """The one check of ``k`` (below n) and ``metric``."""
    k = check_int(k, "k", fn, low=1, high=n, high_name="n_samples")
    return k, check_choice(metric, "metric", fn, METRICS)


_KNN_INV = {"rotation", "translation", "scale", "permutation"}


@register("mutual_knn", family="similarity", kind="pair", invariances=_KNN_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True,
          default_panel=True, prepared=_prepared("mutual_knn"))
def mutual_knn(X: ArrayLike, Y: ArrayLike, *, k: int = 10, metric: str = "euclidean",
               device: str | None = None) -> Estimate:
    """Mutual k-NN alignment: mean fraction of shared nearest neighbours.

    ``(1/n) sum_i |N_k^X(i) & N_k^Y(i)| / k`` where ``N_k^X(i)`` are the k nearest other rows
    of row i in X (Huh et al., "The Platonic Representation Hypothesis", ICML 2024). 1 when
    both sides have the same neighbourhoods; about k/(n-1) for unrelated ones.
    ``diagnostics['local']`` holds the per-point fractions. The invariances hold for
    ``metric="euclidean"``; cosine neighbourhoods are not translation invariant.
    """
    fn = "mutual_knn"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    k, metric = _check_knn(X.shape[0], fn, k, metric)
    dev = resolve_device(X, device)
    sx, sy = prepare_knn(X, k, metric, dev), prepare_knn(Y, k, metric, dev)
    return compare_knn(sx, sy, {"k": k, "metric": metric, "device": device}, fn)


@register("knn_jaccard", family="similarity", kind="pair", invariances=_KNN_INV,
          higher_is_better=True, bounds=(0.0, 1.0), min_samples=3, symmetric=True,
          prepared=_prepared("knn_jaccard"))
def knn_jaccard(X: ArrayLike, Y: ArrayLike, *, k: int = 10, metric: str = "euclidean",
                device: str | None = None) -> Estimate:
    """Mean Jaccard index of the k-NN sets, ``|N^X(i) & N^Y(i)| / |N^X(i) | N^Y(i)|``.

    The neighbourhood-overlap measure used e.g. by Schumacher et al. and the ReSi benchmark
    (Klabunde et al., 2024); per-point values in ``diagnostics['local']`` show *where* two
    representations agree.
    """
    fn = "knn_jaccard"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    k, metric = _check_knn(X.shape[0], fn, k, metric)
    dev = resolve_device(X, device)
    sx, sy = prepare_knn(X, k, metric, dev), prepare_knn(Y, k, metric, dev)
    return compare_knn(sx, sy, {"k": k, "metric": metric, "device": device}, fn)


# ------------------------------------------------------------ relative representations ------
def anchor_rows(n: int, n_anchors: int, seed: int) -> np.ndarray:
    """Sorted seeded anchor row indices (the same rows for every representation)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n_anchors, n), replace=False))


def relative(X: ArrayLike, anchors: np.ndarray, center: bool, device: torch.device,
             fn: str, name: str) -> torch.Tensor:
    """(n, m) unit rows of cosine similarities to the anchors (Moschella et al., ICLR 2023)."""
    Z = centred(X, device) if center else to64(X, device)  # (n, d)
    zero_variance(Z - Z.mean(0) if not center else Z, fn, name, warn=False)
    norms = torch.linalg.vector_norm(Z, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{fn}: {int((norms == 0).sum())} row(s) of '{name}' are zero "
                         f"{'after centring ' if center else ''}so their cosine to the anchors "
                         f"is undefined.")
    Z = Z / norms
    R = Z @ Z[torch.as_tensor(anchors, device=device)].T  # (n, m)
    rn = torch.linalg.vector_norm(R, dim=1, keepdim=True).clamp_min(1e-300)
    return R / rn


@register("relative_representations", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation"},
          higher_is_better=True, bounds=(-1.0, 1.0), min_samples=3, symmetric=True, prepared=None)
def relative_representations(X: ArrayLike, Y: ArrayLike, *, n_anchors: int = 64,
                             center: bool = True, seed: int = 0,
                             device: str | None = None) -> Estimate:
    """Agreement of relative representations (Moschella et al., ICLR 2023).

    Each row is re-expressed by its cosine similarities to ``n_anchors`` anchor rows (drawn
    with ``seed``, the same inputs on both sides): ``r_i = (cos(x_i, x_a))_a``. The value is
    the mean over rows of ``cos(r_i^X, r_i^Y)``; per-row values in ``diagnostics['local']``.
    With ``center=True`` (default) rows are centred first, which makes it translation
    invariant; it is always invariant to rotations and isotropic scaling.
    """
    fn = "relative_representations"
    X, Y = check_pair(X, Y, fn, min_samples=3)
    n_anchors = check_int(n_anchors, "n_anchors", fn, low=1)
    if not isinstance(center, bool):
        raise ValueError(f"The 'center' parameter of {fn} must be a bool. Got {center!r} instead.")
    dev = resolve_device(X, device)
    anchors = anchor_rows(X.shape[0], n_anchors, seed)
    Rx = relative(X, anchors, center, dev, fn, "X")
    Ry = relative(Y, anchors, center, dev, fn, "Y")
    local = torch.sum(Rx * Ry, dim=1).cpu().numpy()  # (n,)
    params = {"n_anchors": n_anchors, "center": center, "seed": seed, "device": device}
    diag = {"local": local, "anchors": anchors, "n_anchors_used": int(anchors.shape[0])}
    return make_estimate(fn, float(np.clip(local.mean(), -1.0, 1.0)), X.shape[0], params, diag)
