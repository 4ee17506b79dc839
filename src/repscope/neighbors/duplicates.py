"""Exact and near-duplicate rows, and the policy that decides what happens to them.

Duplicates (identical rows, and rows closer than ``tol`` times the data's RMS radius) make
distance ratios degenerate (``r1 = 0``). The ``duplicates`` policy decides what happens:

* ``"drop"`` (default): keep one representative per group (the first row), search among
  representatives only;
* ``"weight"``: as ``"drop"``, and estimators weight each representative by its multiplicity;
* ``"raise"``: raise a ``ValueError`` when any duplicate is found;
* ``"keep"``: search among all rows (zero distances stay; estimators then exclude the points
  whose distances are zero and warn).

Every policy reports the same fraction, exact plus near duplicates (``DuplicateReport.fraction``,
``n_exact``, ``describe()``), so the ``"raise"`` message, warnings and reports agree.

Exact duplicates are found by hashing rows (any group size). Near duplicates are merged through
neighbour edges shorter than the threshold (single linkage), so a near-duplicate cluster larger
than ``k + 1`` rows can be merged only partially; exact duplicates never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

POLICIES = ("drop", "weight", "raise", "keep")


@dataclass(frozen=True)
class DuplicateReport:
    """What the duplicates policy found and did.

    Row indices refer to the input ``X``; "kept" rows are the ones the neighbour table is over.
    """

    policy: str
    "'drop', 'weight', 'raise' or 'keep'."
    tol: float
    "Relative tolerance: rows closer than ``tol * rms_radius`` are duplicates."
    threshold: float
    "Absolute distance threshold used (``tol`` times the RMS distance to the centroid)."
    n_input: int
    "Rows in the input."
    fraction: float
    "Fraction of input rows that duplicate another row: ``1 - n_groups / n_input``."
    kept: np.ndarray
    "(n_kept,) int64 indices into X of the rows the table is over."
    multiplicity: np.ndarray
    "(n_kept,) int64 number of input rows each kept row stands for (all ones for 'keep')."
    inverse: np.ndarray
    "(n_input,) int64 position in ``kept`` of the row that stands for each input row."
    n_exact: int = 0
    "Rows bitwise equal to an earlier row (the rest of the duplicates are near duplicates)."

    @property
    def n_kept(self) -> int:
        return int(self.kept.shape[0])

    @property
    def n_duplicates(self) -> int:
        "Rows that duplicate another row, exact or near: ``fraction * n_input``."
        return int(round(self.fraction * self.n_input))

    def describe(self) -> str:
        """The fraction and both kinds in the words of every duplicates message, e.g.
        ``'12 % duplicates (fraction 0.12 of 1100 rows: 100 exact, 32 near (closer than
        tol=1e-06 x rms radius))'``."""
        return (f"{100 * self.fraction:.2g} % duplicates "
                f"({_kinds(self.n_duplicates, self.n_input, self.n_exact, self.tol)}))")

    def summary(self) -> dict[str, Any]:
        """Scalars for an estimate's params/diagnostics."""
        return {"duplicates": self.policy, "duplicate_fraction": float(self.fraction),
                "duplicate_threshold": float(self.threshold), "n_input": self.n_input,
                "n_exact_duplicates": self.n_exact}


def _exact_groups(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bitwise-identical rows: (kept first-row indices in input order, inverse, counts).

    Rows are first grouped by a 64-bit hash of their bytes (one pass, fast); the grouping is
    then verified bytewise, and the slower sort of whole rows runs only on a hash collision.
    """
    X = np.ascontiguousarray(X)
    if X.nbytes % (4 * X.shape[0]) == 0:
        words = X.view(np.uint32).reshape(X.shape[0], -1)  # (n, w)
        mult = np.random.default_rng(0x5EED).integers(1, 2**63, words.shape[1], dtype=np.uint64) | 1
        h = np.empty(X.shape[0], dtype=np.uint64)  # wraps modulo 2**64
        step = max(1, 2**20 // words.shape[1])  # rows per 8 MB uint64 chunk
        for lo in range(0, X.shape[0], step):
            h[lo:lo + step] = words[lo:lo + step] @ mult
        _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True,
                                              return_counts=True)
        inverse = inverse.ravel()
        dup = np.flatnonzero(first[inverse] != np.arange(X.shape[0]))  # rows that join a group
        if np.array_equal(words[dup], words[first[inverse[dup]]]):  # bitwise equal to its first
            return _in_input_order(first, inverse, counts)
    rows = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()  # (n,)
    _, first, inverse, counts = np.unique(rows, return_index=True, return_inverse=True,
                                          return_counts=True)
    return _in_input_order(first, inverse.ravel(), counts)


def _in_input_order(first, inverse, counts):
    """Renumber groups by their first row's position in the input."""
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse], counts[order]


def _merge_near(idx, dist, threshold, kept, inverse, mult):
    """Merge kept rows joined by a neighbour edge within ``threshold``; None if there is none."""
    close = dist <= threshold  # (m, k)
    if not close.any():
        return None
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = idx.shape[0]
    rows = np.repeat(np.arange(m), idx.shape[1])[close.ravel()]
    graph = coo_matrix((np.ones(rows.size), (rows, idx.ravel()[close.ravel()])), shape=(m, m))
    _, label = connected_components(graph, directed=False)  # (m,)
    first = np.full(label.max() + 1, m)
    np.minimum.at(first, label, np.arange(m))  # representative: first kept row of each group
    order = np.argsort(first)
    new_pos = np.empty_like(order)
    new_pos[order] = np.arange(order.size)
    group = new_pos[label]  # (m,) new position of each old kept row
    new_mult = np.bincount(group, weights=mult, minlength=order.size).astype(np.int64)
    return kept[first[order]], group[inverse], new_mult


def _count_joined(a: np.ndarray, b: np.ndarray) -> int:
    """Number of groups when rows in the same group of labelling ``a`` or of ``b`` are joined."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = a.shape[0]
    graph = coo_matrix((np.ones(n), (a, n + b)), shape=(2 * n, 2 * n))  # label nodes, one edge a row
    _, label = connected_components(graph, directed=False)
    return int(np.unique(label[a]).size)


def _raise_duplicates(fraction: float, n: int, n_exact: int, tol: float, threshold: float) -> None:
    n_dup = int(round(fraction * n))
    raise ValueError(
        f"knn found duplicate rows in X ({_kinds(n_dup, n, n_exact, tol)} = {threshold:.3g}) and "
        f"duplicates='raise'. Use duplicates='drop' (default), 'weight' or 'keep'."
    )


def _kinds(n_dup: int, n: int, n_exact: int, tol: float) -> str:
    """'fraction 0.12 of 1100 rows: 100 exact, 32 near (closer than tol=1e-06 x rms radius'."""
    return (f"fraction {n_dup / n:.4g} of {n} rows: {n_exact} exact, {n_dup - n_exact} near "
            f"(closer than tol={tol:g} x rms radius")

