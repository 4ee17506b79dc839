"""Representational similarity analysis (Kriegeskorte et al., 2008), blockwise.

An RDM holds the dissimilarity of every pair of inputs ``i < j`` under one representation;
RSA correlates the RDM entries of X with those of Y. The n x n RDM is never held in memory:

* ``compare="pearson"`` is exact for any n: the five sums (sum a, sum b, sum a^2, sum b^2,
  sum ab) are accumulated over (block, n) tiles of the upper triangle.
* ``compare="spearman"`` / ``"kendall"`` need the ranks of all entries; they use every pair
  when there are at most ``max_pairs`` (n up to ~2000 with the default), otherwise a seeded
  uniform sample of ``max_pairs`` pairs (``diagnostics['pairs_used']`` and ``'exact'`` say which).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_int
from repscope.measures.similarity._common import check_pair, make_estimate, resolve_device, to64
from repscope.registry import Prepared, register
from repscope.results import Estimate

__all__ = ["RDMState", "compare_rsa", "prepare_rsa", "rdm_entries", "rdm_upper", "rsa"]

RDMS = ("euclidean", "correlation", "cosine")
COMPARISONS = ("pearson", "spearman", "kendall")


def _rows_for(X64: torch.Tensor, rdm: str, fn: str, name: str) -> torch.Tensor:
    """Rows transformed so that the RDM is a Euclidean distance or ``1 - dot``."""
    if rdm == "euclidean":
        return X64 - X64.mean(0, keepdim=True)
    Z = X64 - X64.mean(1, keepdim=True) if rdm == "correlation" else X64.clone()
    norms = torch.linalg.vector_norm(Z, dim=1, keepdim=True)  # (n, 1)
    if bool((norms == 0).any()):
        bad = int((norms == 0).sum())
        what = "constant" if rdm == "correlation" else "all-zero"
        raise ValueError(f"{fn}: {bad} row(s) of '{name}' are {what}, so the {rdm} distance "
                         f"is undefined for them. Use rdm='euclidean' or drop those rows.")
    return Z / norms


def _dissim(Zb: torch.Tensor, Z: torch.Tensor, sq: torch.Tensor, sqb: torch.Tensor,
            rdm: str) -> torch.Tensor:
    """(b, m) dissimilarities between the rows of Zb and Z."""
    if rdm == "euclidean":
        return (sqb[:, None] + sq[None, :] - 2.0 * (Zb @ Z.T)).clamp_min_(0.0).sqrt_()
    return 1.0 - Zb @ Z.T


def rdm_entries(X64: torch.Tensor, i: np.ndarray, j: np.ndarray, rdm: str,
                chunk: int = 65_536) -> np.ndarray:
    """Dissimilarities of the listed pairs (X64 already transformed by ``_rows_for``).

    Gathers ``chunk`` pairs at a time, so memory stays O(chunk d) besides the output.
    """
    dev = X64.device
    out = np.empty(i.shape[0])
    for lo in range(0, i.shape[0], chunk):
        a = X64[torch.as_tensor(i[lo:lo + chunk], device=dev)]  # (c, d)
        b = X64[torch.as_tensor(j[lo:lo + chunk], device=dev)]  # (c, d)
        if rdm == "euclidean":
            out[lo:lo + chunk] = torch.linalg.vector_norm(a - b, dim=1).cpu().numpy()
        else:
            out[lo:lo + chunk] = (1.0 - torch.sum(a * b, dim=1)).cpu().numpy()
    return out


def rdm_upper(Z: torch.Tensor, rdm: str, block: int) -> np.ndarray:
    """All entries ``i < j`` in row-major order (as ``scipy.spatial.distance.pdist``), blockwise."""
    n = Z.shape[0]
    q = torch.sum(Z * Z, 1)
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for lo in range(0, n - 1, block):
        hi = min(lo + block, n)
        D = _dissim(Z[lo:hi], Z[lo:], q[lo:], q[lo:hi], rdm)  # (b, n - lo)
        rows = torch.arange(hi - lo, device=Z.device)[:, None]
        vals = D[torch.arange(n - lo, device=Z.device)[None, :] > rows].cpu().numpy()
        out[pos:pos + vals.size] = vals
        pos += vals.size
    return out


def _pearson_blockwise(Zx: torch.Tensor, Zy: torch.Tensor, rdm: str, block: int) -> float:
    n = Zx.shape[0]
    qx, qy = torch.sum(Zx * Zx, 1), torch.sum(Zy * Zy, 1)
    s = torch.zeros(5, dtype=torch.float64, device=Zx.device)
    for lo in range(0, n - 1, block):
        hi = min(lo + block, n)
        a = _dissim(Zx[lo:hi], Zx, qx, qx[lo:hi], rdm)  # (b, n)
        b = _dissim(Zy[lo:hi], Zy, qy, qy[lo:hi], rdm)  # (b, n)
        rows = torch.arange(lo, hi, device=Zx.device)[:, None]
        mask = torch.arange(n, device=Zx.device)[None, :] > rows  # upper triangle only
        a, b = a[mask], b[mask]
        s += torch.stack([a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()])
    m = n * (n - 1) / 2
    sa, sb, saa, sbb, sab = (float(v) for v in s)
    cov = sab - sa * sb / m
    var_a, var_b = saa - sa * sa / m, sbb - sb * sb / m
    if var_a <= 0 or var_b <= 0:
        raise ValueError("rsa: an RDM is constant (all pairwise dissimilarities equal); the "
                         "correlation is undefined.")
    return cov / math.sqrt(var_a * var_b)


def _pair_sample(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform sample of ``max_pairs`` pairs ``i != j``."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=max_pairs)
    j = (i + rng.integers(1, n, size=max_pairs)) % n
    return i, j


@dataclass(frozen=True)
class RDMState:
    """One representation's RDM, prepared once: entries (rank comparisons) or rows (Pearson)."""

    Z: torch.Tensor
    "(n, d) rows transformed so the RDM is a Euclidean distance or ``1 - dot``."
    entries: np.ndarray | None
    "RDM entries over all pairs i < j (or the seeded pair sample); ranks for Spearman."
    exact: bool
    "Whether every pair is used."


def prepare_rsa(X: ArrayLike, device: torch.device, params: Mapping[str, Any],
                name: str) -> RDMState:
    """Transform rows and, for rank comparisons, compute (and rank) the RDM entries once."""
    fn = "rsa"
    rdm, compare = params["rdm"], params["compare"]
    check_choice(rdm, "rdm", fn, RDMS)
    check_choice(compare, "compare", fn, COMPARISONS)
    max_pairs = check_int(params["max_pairs"], "max_pairs", fn, low=3)
    block = check_int(params["block_size"], "block_size", fn, low=1)
    Z = _rows_for(to64(X, device), rdm, fn, name)  # (n, d)
    n = Z.shape[0]
    if compare == "pearson":
        return RDMState(Z, None, True)
    exact = n * (n - 1) // 2 <= max_pairs
    if exact:
        entries = rdm_upper(Z, rdm, block)
    else:
        i, j = _pair_sample(n, max_pairs, params["seed"])
        entries = rdm_entries(Z, i, j, rdm)
    if np.all(entries == entries[0]):
        raise ValueError(f"rsa: the RDM of '{name}' is constant (all pairwise dissimilarities "
                         f"equal); the correlation is undefined.")
    if compare == "spearman":
        from scipy.stats import rankdata

        entries = rankdata(entries)
    return RDMState(Z, entries, exact)


def compare_rsa(sx: RDMState, sy: RDMState, params: Mapping[str, Any]) -> Estimate:
    n = sx.Z.shape[0]
    if sx.entries is None:
        value = _pearson_blockwise(sx.Z, sy.Z, params["rdm"], params["block_size"])
        pairs = n * (n - 1) // 2
    elif params["compare"] == "spearman":  # Pearson correlation of the ranks
        a, b = sx.entries - sx.entries.mean(), sy.entries - sy.entries.mean()
        value = float(a @ b / math.sqrt((a @ a) * (b @ b)))
        pairs = a.shape[0]
    else:
        from scipy import stats

        value = float(stats.kendalltau(sx.entries, sy.entries).statistic)  # tau-b
        pairs = sx.entries.shape[0]
    diag = {"pairs_used": int(pairs), "exact": sx.exact}
    return make_estimate("rsa", min(max(value, -1.0), 1.0), n, params, diag)


@register("rsa", family="similarity", kind="pair",
          invariances={"rotation", "translation", "scale", "permutation"},
          higher_is_better=True, bounds=(-1.0, 1.0), min_samples=3, symmetric=True,
          prepared=Prepared(prepare_rsa, compare_rsa))
def rsa(X: ArrayLike, Y: ArrayLike, *, rdm: str = "euclidean", compare: str = "spearman",
        max_pairs: int = 2_000_000, block_size: int = 1024, seed: int = 0,
        device: str | None = None) -> Estimate:
    """RSA: correlation between the representational dissimilarity matrices of X and Y.

    ``rdm``: ``"euclidean"`` (``||x_i - x_j||``), ``"correlation"`` (``1 - Pearson(x_i, x_j)``
    across features) or ``"cosine"`` (``1 - cos(x_i, x_j)``); ``compare``: ``"pearson"``
    (exact and blockwise for any n), ``"spearman"`` or ``"kendall"`` (tau-b) over the upper
    triangle ``i < j`` (Kriegeskorte, Mur and Bandettini, 2008). Rank comparisons use all
    pairs up to ``max_pairs`` and a seeded sample of pairs beyond (see the module docstring).
    The declared invariances hold for the default Euclidean RDM; the correlation and cosine
    RDMs are invariant to feature permutation and scale but not to rotation or translation.
    """
    X, Y = check_pair(X, Y, "rsa", min_samples=3)
    dev = resolve_device(X, device)
    params = {"rdm": rdm, "compare": compare, "max_pairs": max_pairs, "block_size": block_size,
              "seed": seed, "device": device}
    return compare_rsa(prepare_rsa(X, dev, params, "X"), prepare_rsa(Y, dev, params, "Y"), params)
