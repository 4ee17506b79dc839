"""Massive activations and outlier coordinates: the few entries that can own a layer's geometry.

Transformer LMs keep a handful of huge entries in fixed coordinates, mostly at the first token
(the attention sink) and sometimes at delimiter tokens. A single such coordinate can hold almost
all of a layer's variance, so a covariance-based measure (participation ratio, effective rank,
PCA counts, linear CKA) describes that one coordinate, not the representation. This module finds
them so a run can warn and suggest leaving the positions out (``--exclude-positions 0``).

Two criteria, both computed on the rows given (an ``(n, d)`` block):

- **Massive entries** (Sun, Chen, Kolter & Liu 2024, "Massive activations in large language
  models", section 2): an entry ``x_ij`` with ``|x_ij| >= min_abs`` (default 100) **and**
  ``|x_ij| >= ratio * median |X|`` (default 1000 times the median magnitude of the layer's
  entries, all rows and coordinates given: Sun et al. compare a layer's top magnitudes with
  the median of its hidden states). On SmolLM2-135M, coordinate 507 at position 0 reaches
  ~24,000 from block 12 on against a layer median of ~2 (ratio ~10^4), while the median of
  that first row alone is ~50 (the whole first-token state is inflated), so a per-row median
  would miss it.
- **Dominant coordinate** (the outlier / "rogue" dimensions of Kovaleva et al. 2021, "BERT
  busters", and Timkey & van Schijndel 2021, "All bark and no bite"): a coordinate ``j`` whose
  variance is a share ``s_j = var_j / sum_j' var_j'`` of the total of at least ``max_share``
  (default 0.5). Because the top covariance eigenvalue is at least any diagonal entry, such a
  coordinate caps the participation ratio at ``1 / s_j**2`` (4 at the default), whatever the
  rest of the representation does; the bound is reported as ``pr_bound``.

:func:`massive_activations` returns a frozen :class:`MassiveActivations` with the flagged
coordinates (:class:`OutlierCoordinate`: index, largest magnitude, ratio to the median,
variance share, where the massive entries sit by position and token) and the positions to
exclude: those where at least half of the rows hold a massive entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repscope._validate import as_numpy, check_array, check_float, param_error

__all__ = ["MassiveActivations", "OutlierCoordinate", "massive_activations"]

_FN = "massive_activations"


@dataclass(frozen=True)
class OutlierCoordinate:
    """One flagged coordinate of a layer."""

    coordinate: int
    "Column index in the layer's ``(n, d)`` rows."
    max_abs: float
    "Largest ``|x|`` in the coordinate."
    ratio_to_median: float
    "``max_abs`` over the median ``|x|`` of the layer (all rows and coordinates given)."
    variance_share: float
    "The coordinate's variance over the layer's total variance (the trace of the covariance)."
    n_massive: int
    "Entries of this coordinate meeting the massive criterion."
    positions: Mapping[int, int] = field(default_factory=dict)
    "Sequence position -> massive entries there (empty when positions are not known)."
    token_ids: Mapping[int, int] = field(default_factory=dict)
    "Token id -> massive entries on it (empty when token ids are not known)."

    def to_dict(self) -> dict[str, Any]:
        return {"coordinate": self.coordinate, "max_abs": self.max_abs,
                "ratio_to_median": self.ratio_to_median, "variance_share": self.variance_share,
                "n_massive": self.n_massive,
                "positions": {str(k): v for k, v in self.positions.items()},
                "token_ids": {str(k): v for k, v in self.token_ids.items()}}


@dataclass(frozen=True, eq=False)
class MassiveActivations:
    """What :func:`massive_activations` found in one layer's rows."""

    n_rows: int
    d: int
    coordinates: tuple[OutlierCoordinate, ...]
    "Flagged coordinates (massive entries or a dominant variance share), largest share first."
    n_massive_rows: int
    "Rows holding at least one massive entry."
    top_share: float
    "The largest coordinate variance share (flagged or not)."
    top_coordinate: int
    "The coordinate holding ``top_share``."
    share_without: float | None
    "``top_share`` recomputed without the rows holding massive entries (None: none, or too few left)."
    exclude_positions: tuple[int, ...]
    "Positions where at least half of the rows hold a massive entry: the ones to leave out."
    params: Mapping[str, Any] = field(default_factory=dict)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    "(n_massive_rows,) indices of the rows holding a massive entry (to drop them, if wanted)."

    @property
    def pr_bound(self) -> float:
        """Upper bound ``1 / top_share**2`` on the participation ratio set by one coordinate."""
        return float("inf") if self.top_share <= 0 else 1.0 / self.top_share ** 2

    @property
    def massive(self) -> bool:
        """Whether any entry meets the massive criterion."""
        return self.n_massive_rows > 0

    @property
    def dominated(self) -> bool:
        """Whether one coordinate holds at least ``max_share`` of the variance."""
        return self.top_share >= self.params.get("max_share", 0.5)

    @property
    def warn(self) -> bool:
        """Whether a run should warn: massive entries, or a dominant coordinate."""
        return self.massive or self.dominated

    def message(self, layer: str = "") -> str:
        """One line describing the finding, with the option that removes it when known."""
        where = f"{layer}: " if layer else ""
        if not self.warn:
            return f"{where}no massive activation or dominant coordinate."
        top = self.coordinates[0] if self.coordinates else None
        parts = [f"{where}coordinate {self.top_coordinate} holds {self.top_share:.0%} of the "
                 f"variance (participation ratio <= {self.pr_bound:.3g})"]
        if top is not None and top.n_massive:
            parts.append(f"max |x| {top.max_abs:.3g} = {top.ratio_to_median:.3g}x the median |x|, "
                         f"massive in {self.n_massive_rows} of {self.n_rows} rows")
        if top is not None and top.positions:
            pos = ", ".join(f"{p} ({c})" for p, c in list(top.positions.items())[:3])
            parts.append(f"at positions {pos}")
        if self.share_without is not None:
            parts.append(f"{self.share_without:.0%} without those rows")
        if self.exclude_positions:
            flags = " ".join(f"--exclude-positions {p}" for p in self.exclude_positions)
            parts.append(f"consider {flags}")
        return "; ".join(parts) + "."

    def to_dict(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "d": self.d, "n_massive_rows": self.n_massive_rows,
                "top_share": self.top_share, "top_coordinate": self.top_coordinate,
                "share_without": self.share_without, "pr_bound": self.pr_bound,
                "exclude_positions": list(self.exclude_positions), "warn": self.warn,
                "coordinates": [c.to_dict() for c in self.coordinates],
                "params": dict(self.params)}

    def __repr__(self) -> str:
        coords = ", ".join(str(c.coordinate) for c in self.coordinates[:5])
        more = "" if len(self.coordinates) <= 5 else f", +{len(self.coordinates) - 5}"
        return (f"MassiveActivations(n_rows={self.n_rows}, d={self.d}, warn={self.warn}, "
                f"top_coordinate={self.top_coordinate}, top_share={self.top_share:.3g}, "
                f"n_massive_rows={self.n_massive_rows}, coordinates=[{coords}{more}], "
                f"exclude_positions={list(self.exclude_positions)})")


def massive_activations(X: Any, *, positions: Any = None, token_ids: Any = None,
                        min_abs: float = 100.0, ratio: float = 1000.0,
                        max_share: float = 0.5) -> MassiveActivations:
    """Find massive activations and dominant coordinates in one layer's rows.

    Parameters
    ----------
    X : array of shape (n, d)
        The layer's rows (token rows for positions to mean anything); numpy or torch.
    positions : array of int, shape (n,), optional
        Sequence position of each row (the store's ``position`` metadata column).
    token_ids : array of int, shape (n,), optional
        Token id of each row (the store's ``token_id`` column).
    min_abs : float, default 100
        Absolute floor of a massive entry (Sun et al. 2024).
    ratio : float, default 1000
        A massive entry is at least ``ratio`` times the median ``|x|`` of the layer's entries.
    max_share : float in (0, 1], default 0.5
        A coordinate holding this share of the total variance is flagged as dominant; it caps
        the participation ratio at ``1 / max_share**2``.

    Returns
    -------
    MassiveActivations
        Flagged coordinates, their magnitudes, variance shares and positions, the positions to
        exclude and whether to warn.
    """
    X = check_array(X, _FN, min_samples=2)
    X = as_numpy(X, np.float64)  # (n, d)
    n, d = X.shape
    min_abs = check_float(min_abs, "min_abs", _FN, low=0.0)
    ratio = check_float(ratio, "ratio", _FN, low=1.0)
    max_share = check_float(max_share, "max_share", _FN, low=0.0, high=1.0,
                            low_inclusive=False, high_inclusive=True)
    positions = _column(positions, n, "positions")
    token_ids = _column(token_ids, n, "token_ids")

    A = np.abs(X)  # (n, d)
    median = float(np.median(A))
    massive = (A >= min_abs) & (A >= ratio * median)  # (n, d)
    var = X.var(axis=0)  # (d,)
    total = float(var.sum())
    shares = var / total if total > 0 else np.zeros(d)  # (d,)
    top = int(np.argmax(shares))
    hit_rows = massive.any(axis=1)  # (n,)
    n_hit = int(hit_rows.sum())
    flagged = sorted(set(np.flatnonzero(massive.any(axis=0)).tolist())
                     | set(np.flatnonzero(shares >= max_share).tolist()),
                     key=lambda j: (-shares[j], j))
    coords = []
    for j in flagged:
        rows = np.flatnonzero(massive[:, j])  # (m,)
        i = int(np.argmax(A[:, j]))
        coords.append(OutlierCoordinate(
            coordinate=int(j), max_abs=float(A[i, j]),
            ratio_to_median=float(A[i, j] / median) if median > 0 else float("inf"),
            variance_share=float(shares[j]), n_massive=len(rows),
            positions=_counts(positions, rows), token_ids=_counts(token_ids, rows)))
    share_without = None
    if 0 < n_hit and n - n_hit >= 2:
        rest = X[~hit_rows].var(axis=0)  # (d,)
        share_without = float(rest.max() / rest.sum()) if rest.sum() > 0 else 0.0
    exclude: tuple[int, ...] = ()
    if positions is not None and n_hit:
        exclude = tuple(sorted(
            int(p) for p in np.unique(positions[hit_rows])
            if hit_rows[positions == p].mean() >= 0.5))
    return MassiveActivations(
        n_rows=n, d=d, coordinates=tuple(coords), n_massive_rows=n_hit,
        top_share=float(shares[top]), top_coordinate=top, share_without=share_without,
        exclude_positions=exclude,
        params={"min_abs": min_abs, "ratio": ratio, "max_share": max_share},
        rows=np.flatnonzero(hit_rows).astype(np.int64))


def _column(values: Any, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values).reshape(-1)  # (n,)
    if arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer):
        raise param_error(_FN, name, f"an int array with one value per row ({n})",
                          f"{arr.dtype} array of shape {np.asarray(values).shape}")
    return arr


def _counts(values: np.ndarray | None, rows: np.ndarray) -> dict[int, int]:
    """value -> count over ``rows``, most common first (ties by value)."""
    if values is None or not len(rows):
        return {}
    counts = Counter(int(v) for v in values[rows])
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
