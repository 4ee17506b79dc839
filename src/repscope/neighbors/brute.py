"""The brute search: full ``d``-dimensional products of row blocks, certified row by row."""

from __future__ import annotations

import logging

import numpy as np
import torch

from repscope.neighbors.blocks import _EXTRA_CANDIDATES, _blocks, _contiguous
from repscope.neighbors.certificate import _expansion_bounds, _rerank_error
from repscope.neighbors.fallbacks import _certified_rerank, _float64_search
from repscope.neighbors.prepare import _Prepared, _squared_norms

log = logging.getLogger(__name__)


def _brute_search(P: _Prepared, rows: np.ndarray, k: int, metric: str, budget: int,
                  out_idx: np.ndarray, out_dist: np.ndarray) -> tuple[int, int]:
    """Blockwise exact search of the query ``rows`` (sorted int64) against all rows of ``P``,
    written in place: candidates from products in the search dtype, certified row by row
    (:func:`~repscope.neighbors.certificate._certify` with zero residuals), re-ranked by
    direct distances.
    Rows that fail go to :func:`_float64_search`. Returns how many rows needed the float64
    search and how many the stages after it (:func:`_local_search`, :func:`_pruned_rerank`)."""
    Xs = P.search  # (n, d)
    n = Xs.shape[0]
    t = _squared_norms(Xs)  # (n,) float64
    sq = torch.from_numpy(t).to(device=Xs.device, dtype=Xs.dtype)  # (n,) rounded once
    c = min(n - 1, k + _EXTRA_CANDIDATES)
    bounds = _expansion_bounds(t, Xs.shape[1], Xs.dtype, Xs.device)
    rel = _rerank_error(P.ref)
    final = Xs.dtype == torch.float64  # nothing more precise to fall back on
    blocks = list(_blocks(rows.size, n, budget, Xs.element_size()))
    # One block buffer reused by every block: a fresh (b, n) tensor per block is a large
    # allocation the OS maps and zero-fills anew each time (~15 % of the product's time on CPU).
    buf = torch.empty((blocks[0][1] - blocks[0][0], n), dtype=Xs.dtype, device=Xs.device)
    failed, n_direct = [], 0
    for lo, hi in blocks:
        q = rows[lo:hi]
        if _contiguous(q):
            R = torch.addmm(sq[None, :], Xs[q[0]:q[-1] + 1], Xs.T, alpha=-2.0, out=buf[: hi - lo])
            R.diagonal(int(q[0])).fill_(float("inf"))  # R[i, q0 + i]: the query itself
        else:
            qt = torch.as_tensor(q, device=Xs.device)
            R = torch.addmm(sq[None, :], Xs[qt], Xs.T, alpha=-2.0, out=buf[: hi - lo])  # (b, n)
            R[torch.arange(hi - lo, device=Xs.device), qt] = float("inf")
        bad = _certified_rerank(P.ref, R, q, c, k, metric, bounds, rel, final, out_idx,
                                out_dist)
        if final:
            n_direct += bad.size
        else:
            failed.append(bad)
    failed = np.concatenate(failed) if failed else rows[:0]
    n64 = failed.size
    if n64:
        n_direct = _float64_search(P, failed, k, metric, budget, out_idx, out_dist)
    if n64 or n_direct:
        log.debug("knn: %d rows searched again in float64, %d by direct distances", n64, n_direct)
    return n64, n_direct
