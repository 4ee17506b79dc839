"""Parallelogram "crystals" among points such as SAE decoder directions (Li, Michaud, Baek, Engels,
Sun and Tegmark 2024, "The geometry of concepts: sparse autoencoder feature structure", Entropy
27(4):344, section 3).

A crystal face is a parallelogram ``(a, b, c, d)`` with ``b - a ~ d - c`` (man:woman::king:queen):
the same difference vector ("function vector") links several pairs of points. The paper finds
that such faces only appear once global *distractor* directions (e.g. word length) are projected
out, which it does with linear discriminant analysis (LDA) on difference vectors labelled by
their relation.

:func:`crystals` searches every pair of points (or the ``pairs`` given) for groups whose
difference vectors agree, after an optional projection:

- ``distractors``: directions ``(q, d)`` projected out, or an int ``q``: the top ``q`` principal
  directions of the points (global high-variance directions), projected out;
- ``projection``: a ``(d, r)`` map applied to the points, e.g. :func:`lda_projection`, the
  paper's LDA fitted on difference vectors of labelled relation pairs (maximising between-relation
  over within-relation scatter, which suppresses directions that vary within a relation).

Grouping: two oriented differences ``u`` and ``v`` are *parallel* when
``|u - v| <= tol (|u| + |v|) / 2`` and their pairs share no point (a parallelogram has four
distinct corners); crystals are the connected components of that graph (single-linkage
clustering at a relative tolerance; both orientations of every pair are searched, so a face is
found whatever the order of its corners). Each crystal reports its pairs, its mean difference
vector and its relative spread ``mean |v - mean| / |mean|``; ``s`` pairs form ``s (s - 1) / 2``
parallelograms. Neighbours come from the exact kNN engine (:func:`repscope.neighbors.knn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from repscope._validate import as_numpy, check_array, check_float, check_int, param_error

__all__ = ["Crystal", "Crystals", "crystals", "lda_projection", "project_out"]


@dataclass(frozen=True)
class Crystal:
    """Pairs of points whose difference vectors agree."""

    pairs: np.ndarray
    "(s, 2) oriented pairs ``(i, j)``: the difference is ``points[j] - points[i]``."
    direction: np.ndarray
    "(r,) mean difference vector in the searched (projected) space."
    spread: float
    "``mean_v |v - direction| / |direction|`` over the pairs' differences."

    @property
    def n_parallelograms(self) -> int:
        s = len(self.pairs)
        return s * (s - 1) // 2


@dataclass(frozen=True)
class Crystals:
    """The crystals found among a set of points."""

    crystals: list[Crystal]
    "Largest first (ties: smaller spread first)."
    n_points: int
    "Points searched."
    n_pairs: int
    "Pairs of points whose differences were compared."
    projection: np.ndarray
    "(d, r) the linear map applied to the points before differencing (identity if none)."
    params: dict[str, Any]

    @property
    def n_parallelograms(self) -> int:
        return sum(c.n_parallelograms for c in self.crystals)


def project_out(points: Any, distractors: Any) -> np.ndarray:
    """The ``(d, d - q)`` orthonormal basis of the complement of ``distractors`` ``(q, d)``
    (or of the top ``q`` principal directions of ``points`` when ``distractors`` is an int)."""
    fn = "project_out"
    P = as_numpy(check_array(points, fn, name="points", min_samples=2), np.float64)
    d = P.shape[1]
    if isinstance(distractors, int | np.integer) and not isinstance(distractors, bool):
        q = check_int(int(distractors), "distractors", fn, low=0, high=min(P.shape), high_name="min(n, d)")
        _, _, vt = np.linalg.svd(P - P.mean(0), full_matrices=False)
        V = vt[:q].T  # (d, q)
    else:
        V = as_numpy(check_array(distractors, fn, name="distractors"), np.float64)
        if V.shape[1] != d:
            raise param_error(fn, "distractors", f"directions of dimension d={d}", f"shape {V.shape}")
        V = np.linalg.qr(V.T)[0]  # (d, q) orthonormal
    full = np.linalg.svd(np.eye(d) - V @ V.T)[0]  # (d, d): complement first
    return full[:, : d - V.shape[1]]


def lda_projection(points: Any, pairs: Any, labels: Any, *, n_components: int | None = None) -> np.ndarray:
    """The ``(d, r)`` LDA map fitted on the difference vectors ``points[j] - points[i]`` of the
    labelled ``pairs`` (``labels``: one relation per pair), as in the paper: directions of large
    between-relation and small within-relation scatter (scikit-learn's eigen solver with
    Ledoit-Wolf shrinkage, so ``d`` may exceed the number of pairs). ``r = n_components``
    (default: number of relations - 1)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    fn = "lda_projection"
    P = as_numpy(check_array(points, fn, name="points", min_samples=2), np.float64)
    pr = _pairs(pairs, P.shape[0], fn)
    y = np.asarray(labels).reshape(-1)
    if y.size != len(pr):
        raise param_error(fn, "labels", f"one label per pair ({len(pr)})", f"{y.size} labels")
    n_rel = np.unique(y).size
    if n_rel < 2:
        raise param_error(fn, "labels", "at least 2 distinct relations", f"{n_rel}")
    r = n_rel - 1 if n_components is None else check_int(n_components, "n_components", fn, low=1,
                                                          high=n_rel - 1, high_inclusive=True)
    D = P[pr[:, 1]] - P[pr[:, 0]]  # (p, d)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto", n_components=r).fit(D, y)
    return np.asarray(lda.scalings_[:, :r], dtype=np.float64)


def _pairs(pairs: Any, m: int, fn: str) -> np.ndarray:
    pr = np.asarray(pairs, dtype=np.int64)
    if pr.ndim != 2 or pr.shape[1] != 2 or len(pr) == 0:
        raise param_error(fn, "pairs", "an (p, 2) array of point indices", f"shape {pr.shape}")
    if pr.min() < 0 or pr.max() >= m or (pr[:, 0] == pr[:, 1]).any():
        raise param_error(fn, "pairs", f"pairs of distinct indices in [0, {m})", pr[:4].tolist())
    return pr


def crystals(points: Any, *, pairs: Any = None, distractors: Any = None, projection: Any = None,
             tol: float = 0.2, k: int = 8, min_size: int = 2) -> Crystals:
    """Groups of pairs of ``points`` (m, d) with agreeing difference vectors (module docstring).

    ``pairs``: the pairs to compare (default all ``m (m - 1) / 2``; the search costs a kNN over
    twice as many vectors); ``tol``: relative tolerance of "parallel"; ``k``: neighbours examined
    per difference (a crystal larger than ``k + 1`` pairs is still found through chains);
    ``min_size``: fewest pairs in a reported crystal.
    """
    from repscope.neighbors import knn

    fn = "crystals"
    P = as_numpy(check_array(points, fn, name="points", min_samples=3), np.float64)
    m, d = P.shape
    tol = check_float(tol, "tol", fn, low=0.0, high=2.0, low_inclusive=False)
    min_size = check_int(min_size, "min_size", fn, low=2)
    M = np.eye(d)
    if distractors is not None:
        M = project_out(P, distractors)
    if projection is not None:
        W = as_numpy(projection, np.float64)
        if W.ndim != 2 or W.shape[0] != M.shape[1]:
            raise param_error(fn, "projection", f"a ({M.shape[1]}, r) matrix", f"shape {W.shape}")
        M = M @ W
    Q = P @ M  # (m, r)
    pr = np.array(np.triu_indices(m, 1)).T if pairs is None else _pairs(pairs, m, fn)
    D = Q[pr[:, 1]] - Q[pr[:, 0]]  # (p, r)
    norm = np.linalg.norm(D, axis=1)
    ok = norm > 1e-9 * max(float(np.median(norm)), 1e-300)  # coincident points carry no direction
    pr, D, norm = pr[ok], D[ok], norm[ok]
    p = len(pr)
    params = {"tol": tol, "k": k, "min_size": min_size, "pairs": "all" if pairs is None else "given",
              "distractors": None if distractors is None else
              (int(distractors) if isinstance(distractors, int | np.integer) else "given"),
              "projection": projection is not None, "dimension": int(M.shape[1])}
    if p < 2:
        return Crystals([], m, p, M, params)
    S = np.concatenate([D, -D])  # (2p, r) both orientations
    S_norm = np.r_[norm, norm]
    k = check_int(k, "k", fn, low=1)
    k_eff = min(k, 2 * p - 1)
    nb = knn(S.astype(np.float64), k_eff, duplicates="keep")
    corners = np.concatenate([pr, pr[:, ::-1]])  # (2p, 2) oriented pairs of node a
    a = np.repeat(np.arange(2 * p), k_eff)
    b = nb.indices.reshape(-1)
    dist = nb.distances.reshape(-1)
    distinct = ~((corners[a][:, :, None] == corners[b][:, None, :]).any((1, 2)))
    edge = (dist <= tol * (S_norm[a] + S_norm[b]) / 2) & distinct & (a % p != b % p)
    comp = _components(2 * p, a[edge], b[edge])
    found: list[Crystal] = []
    seen: set[frozenset[tuple[int, int]]] = set()
    for c in np.unique(comp):
        nodes = np.flatnonzero(comp == c)
        if nodes.size < min_size:
            continue
        key = frozenset(tuple(sorted(map(int, corners[v]))) for v in nodes)
        if key in seen:  # the mirrored component of one already kept
            continue
        seen.add(key)
        V = S[nodes]
        mean = V.mean(0)
        spread = float(np.linalg.norm(V - mean, axis=1).mean() / max(np.linalg.norm(mean), 1e-300))
        found.append(Crystal(pairs=corners[nodes], direction=mean, spread=spread))
    found.sort(key=lambda c: (-len(c.pairs), c.spread))
    return Crystals(found, m, p, M, params)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]
