"""Rows whose candidates fail the certificate (:mod:`repscope.neighbors.certificate`).

A row that fails is retried with ``4 c + 16`` candidates from the same block
(:func:`_certified_rerank`); if it still fails, the rows are searched again with float64
products of rows centred in float64 (:func:`_float64_search`, same certificate with float64
margins). Rows that fail that too (neighbour gaps below float64 rounding against their centred
norms: a tight cluster far from the centroid) are searched among the rows the float64 bounds
cannot exclude, re-centred at those rows' own mean (:func:`_local_search`), and, if even that
fails, every such row is re-ranked by direct differences (:func:`_pruned_rerank`). Every path
ends in the same re-ranking, so ties keep the (distance, index) order, and
``Neighbors.float64_fraction`` / ``direct_fraction`` say how many rows needed the float64
search and the stages after it (zero on ordinary data).
"""

from __future__ import annotations

import numpy as np
import torch

from repscope.neighbors.blocks import _EXTRA_CANDIDATES, _smallest
from repscope.neighbors.certificate import (
    _Bounds,
    _certify,
    _expansion_bounds,
    _possible,
    _rerank_error,
)
from repscope.neighbors.prepare import _Prepared
from repscope.neighbors.rerank import _rerank

_RERANK_PIECE = 2**20  # last-resort re-ranking: candidates x d per call at most
_LOCAL_MAX_BYTES = 2**26  # locally re-centred float64 rows per group of failing queries


def _certified_rerank(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, c: int, k: int,
                      metric: str, bounds: _Bounds, rel: tuple[float, float], final: bool,
                      out_idx: np.ndarray, out_dist: np.ndarray) -> np.ndarray:
    """Rows of the ranking block ``R`` (b, n) (queries ``q``, sorted) re-ranked against ``ref``
    and written when their ``c`` smallest values are certified; the rows that fail are tried
    once more with ``4 c + 16`` candidates (a wider gap to the excluded rows). Returns the rows
    still failing; with ``final``, those are settled (and written) by :func:`_local_search` and
    :func:`_pruned_rerank`."""
    pos = np.arange(q.size)
    for width in (c, min(R.shape[1] - 1, 4 * c + 16)):
        sub = R if pos.size == q.size else R[torch.as_tensor(pos, device=R.device)]  # (f, n)
        cand = _smallest(sub, width)  # (f, width)
        vals = torch.gather(sub, 1, cand)
        vals = vals.to(torch.float64).cpu().numpy()  # (f, width); float16/bfloat16 searches too
        ok, keep = _certify(bounds, q[pos], cand.cpu().numpy(), vals, k, 0.0, rel)
        good = q[pos[ok]]
        if good.size:
            keep = torch.as_tensor(keep, device=R.device)
            out_idx[good], out_dist[good] = _rerank(ref, good, keep, k, metric)
        pos = pos[~ok]
        if not pos.size or width >= R.shape[1] - 1:
            break
    if final and pos.size:
        Rf = R[torch.as_tensor(pos, device=R.device)]  # (f, n)
        rest = _local_search(ref, Rf, q[pos], k, metric, bounds, rel, out_idx, out_dist)
        if rest.size:
            sel = torch.as_tensor(np.searchsorted(q[pos], rest), device=R.device)
            _pruned_rerank(ref, Rf[sel], rest, k, metric, bounds, rel, out_idx, out_dist)
    return q[pos]


def _float64_search(P: _Prepared, rows: np.ndarray, k: int, metric: str, budget: int,
                    out_idx: np.ndarray, out_dist: np.ndarray) -> int:
    """Fallback of the brute search: the same certified search with float64 products of the
    rows centred in float64 (centring removes a common offset, float64 the rest of the
    rounding), column chunks converted on the fly (no float64 copy of X). Rows that still fail
    (neighbour gaps below float64 rounding against their centred norms) are settled by
    :func:`_local_search` and :func:`_pruned_rerank`; returns how many."""
    ref, dev = P.ref, P.ref.device
    n, d = ref.shape
    mu = P.center.to(dev)  # (d,) float64
    chunk = max(1, 2**20 // d)  # float64 column chunks of 8 MB
    rel = _rerank_error(ref)
    c = min(n - 1, k + _EXTRA_CANDIDATES)
    b = max(1, min(rows.size, budget // (16 * max(n, d))))  # (b, n) block and (b, d) queries
    buf = torch.empty((b, n), dtype=torch.float64, device=dev)
    t = torch.empty(n, dtype=torch.float64, device=dev)  # |c_j|^2, filled by the first block
    bounds = None
    n_direct = 0
    for lo in range(0, rows.size, b):
        q = rows[lo:lo + b]
        qt = torch.as_tensor(q, device=dev)
        Q = ref[qt].to(torch.float64) - mu  # (b, d)
        R = buf[: q.size]  # (b, n)
        for j in range(0, n, chunk):
            C = ref[j:j + chunk].to(torch.float64) - mu  # (s, d) centred in float64
            if bounds is None:
                t[j:j + chunk] = (C * C).sum(1)
            torch.addmm(t[None, j:j + chunk], Q, C.T, alpha=-2.0, out=buf[: q.size, j:j + chunk])
        if bounds is None:
            bounds = _expansion_bounds(t.cpu().numpy(), d, torch.float64, dev)
        R[torch.arange(q.size, device=dev), qt] = float("inf")
        n_direct += _certified_rerank(ref, R, q, c, k, metric, bounds, rel, True, out_idx,
                                      out_dist).size
    return n_direct


def _local_search(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, k: int, metric: str,
                  bounds: _Bounds, rel: tuple[float, float], out_idx: np.ndarray,
                  out_dist: np.ndarray) -> np.ndarray:
    """Rows whose neighbour gaps are below float64 rounding against their centred norms (e.g.
    a tight cluster far from the centroid, or nearly collinear unit rows) are searched again
    among the rows their bounds cannot exclude (:func:`_possible`), with float64 products of
    rows centred at the mean of those rows: the rounding then scales with the cluster's own
    spread. Queries are grouped greedily (a first row and the failing rows it may be near);
    each group's union ``U`` (sorted) is ranked with the excluded rows masked, certified and
    re-ranked as everywhere else (within ``U``, whose order is the global index order). Groups
    whose union exceeds ``_LOCAL_MAX_BYTES`` as float64 rows are skipped. Returns the rows
    still failing (sorted)."""
    n, d = ref.shape
    dev = ref.device
    step = max(1, 2**21 // n)  # query rows per (step, n) float64 temporary
    S = np.concatenate([_possible(R[lo:lo + step], q[lo:lo + step], bounds, rel, k)
                        for lo in range(0, q.size, step)])  # (f, n)
    left = np.ones(q.size, dtype=bool)
    failed = []
    while left.any():
        a = int(np.flatnonzero(left)[0])
        near = S[a][q]  # (f,) failing rows that may be among a's nearest
        near[a] = True
        G = np.flatnonzero(left & near)  # positions in q
        left[G] = False
        mask = S[G].any(0)
        mask[q[G]] = True
        U = np.flatnonzero(mask)  # (u,) sorted global rows
        if U.size * d * 8 > _LOCAL_MAX_BYTES:
            failed.append(q[G])
            continue
        C = ref[torch.as_tensor(U, device=dev)].to(torch.float64)  # (u, d)
        C -= C.mean(0)  # centred in float64 at the group's own mean
        t = (C * C).sum(1)  # (u,)
        ql = np.searchsorted(U, q[G])  # (g,) queries' positions in U
        qt = torch.as_tensor(ql, device=dev)
        Rl = torch.addmm(t[None, :], C[qt], C.T, alpha=-2.0)  # (g, u)
        Rl[torch.as_tensor(~S[G][:, U], device=dev)] = float("inf")  # excluded and self
        lb = _expansion_bounds(t.cpu().numpy(), d, torch.float64, dev)
        li = np.empty((U.size, k), dtype=np.int64)
        ld = np.empty((U.size, k), dtype=np.float64)
        c = min(U.size - 1, k + _EXTRA_CANDIDATES)
        bad = _certified_rerank(ref[torch.as_tensor(U, device=dev)], Rl, ql, c, k, metric, lb,
                                rel, False, li, ld)
        good = np.setdiff1d(ql, bad)
        out_idx[U[good]], out_dist[U[good]] = U[li[good]], ld[good]
        failed.append(U[bad])
    return np.sort(np.concatenate(failed))


def _pruned_rerank(ref: torch.Tensor, R: torch.Tensor, q: np.ndarray, k: int, metric: str,
                   bounds: _Bounds, rel: tuple[float, float], out_idx: np.ndarray,
                   out_dist: np.ndarray) -> None:
    """Last resort for rows that no candidate list certifies: every row that may be among
    their ``k`` nearest (:func:`_possible`) is re-ranked by direct distances (in pieces, keeping
    each piece's ``k`` best), the rest cannot be. Exact for any data; its cost is the number
    of rows the bounds cannot exclude (``O(n d)`` per query at worst)."""
    n = R.shape[1]
    step = max(1, 2**21 // n)  # query rows per (step, n) float64 temporary
    piece = max(k + 1, _RERANK_PIECE // ref.shape[1])  # candidates per re-ranking call
    dev = ref.device
    for lo in range(0, q.size, step):
        rows = q[lo:lo + step]
        may = _possible(R[lo:lo + step], rows, bounds, rel, k)  # (s, n)
        for i, row in enumerate(rows):
            cand = np.flatnonzero(may[i])
            while cand.size > piece:  # the union of each piece's k best holds the k best
                cand = np.concatenate([
                    _rerank(ref, row[None], torch.as_tensor(cand[None, s:s + piece], device=dev),
                            min(k, cand[s:s + piece].size), metric)[0][0]
                    for s in range(0, cand.size, piece)])
            idx, dist = _rerank(ref, row[None], torch.as_tensor(cand[None], device=dev), k, metric)
            out_idx[row], out_dist[row] = idx[0], dist[0]
