"""The exact search of query rows against one shard of reference rows (the worker side of
:func:`repscope.neighbors.distributed.knn_distributed`).

A shard is a sorted set of kept rows (their global positions ``ids``) held by one worker. For
every query row it returns the shard's ``k`` nearest rows under the order (squared distance,
index), the query itself excluded, with the same arithmetic as the single-machine search:

* candidates from float32 products of rows centred at the global centre (one ``addmm`` per
  block into a reused buffer, :func:`~repscope.neighbors.blocks._smallest`), certified row by
  row with the bounds of :mod:`repscope.neighbors.certificate` (query and reference norms
  kept apart), retried once with ``4 c + 16`` candidates;
* rows that still fail: float64 products of rows centred in float64, same certificate;
* rows that fail that too: every shard row the float64 bounds cannot exclude, re-ranked
  directly (exact for any data).

Squared distances come from direct coordinate differences of the reference rows (float32
squares summed in float64), a function of the two rows alone: the per-shard tables therefore
hold the very numbers the single-machine re-ranking computes, and merging them by (squared
distance, index) (:func:`merge_tables`) gives the single-machine table bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repscope.neighbors.blocks import _EXTRA_CANDIDATES, _blocks, _smallest
from repscope.neighbors.certificate import _Bounds, _certify, _expansion_bounds, _rerank_error
from repscope.neighbors.prepare import _centred, _squared_norms

SENTINEL = np.iinfo(np.int64).max
"Index of an empty slot (a shard with fewer rows than ``k``): sorts after every real row."
_DIRECT_PIECE = 2**20  # direct re-ranking: candidates x d per call at most


@dataclass(frozen=True)
class Shard:
    """One worker's reference rows, prepared for the search."""

    ids: np.ndarray
    "(m,) int64 sorted global positions of the rows (positions among the kept rows)."
    ref: np.ndarray
    "(m, d) rows whose differences give exact distances (X's rows, or float64 unit rows)."
    search: torch.Tensor
    "(m, d) rows centred at the global centre, in the search dtype."
    t: np.ndarray
    "(m,) float64 squared norms of ``search``."
    center: np.ndarray
    "(d,) float64 global centre."

    @property
    def m(self) -> int:
        return int(self.ids.shape[0])


def make_shard(ref: np.ndarray, ids: np.ndarray, center: np.ndarray,
               dtype: torch.dtype = torch.float32) -> Shard:
    """A :class:`Shard` over the reference rows ``ref`` (m, d) at global positions ``ids``."""
    S = torch.from_numpy(_centred(ref, center, dtype))  # (m, d)
    return Shard(np.asarray(ids, dtype=np.int64), ref, S, _squared_norms(S), center)


def search_shard(shard: Shard, Q: np.ndarray, qids: np.ndarray, k: int, metric: str,
                 budget: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The shard's ``k`` nearest rows of each query row ``Q`` (b, d) (reference rows of the
    queries, global positions ``qids``): ``(ids (b, k) int64, squared distances (b, k)
    float64, counts)``, sorted by (squared distance, index). Slots beyond the shard's rows
    hold :data:`SENTINEL` and ``inf``. ``counts``: rows past each certificate."""
    b = Q.shape[0]
    out_idx = np.full((b, k), SENTINEL, dtype=np.int64)
    out_d2 = np.full((b, k), np.inf)
    counts = {"float64": 0, "direct": 0}
    m = shard.m
    if m == 0 or b == 0:
        return out_idx, out_d2, counts
    self_col = _self_columns(shard.ids, qids)  # (b,) column of the query itself, or -1
    if m <= k + _EXTRA_CANDIDATES + 1:  # tiny shard: every row is a candidate
        cand = np.broadcast_to(np.arange(m), (b, m))
        _rerank_into(shard, Q, np.arange(b), cand, self_col, k, out_idx, out_d2)
        return out_idx, out_d2, counts
    Qs = torch.from_numpy(_centred(Q, shard.center, shard.search.dtype))  # (b, d)
    tq = _squared_norms(Qs)  # (b,)
    sq = torch.from_numpy(shard.t).to(shard.search.dtype)  # (m,) rounded once
    rel = _rerank_error(torch.from_numpy(shard.ref[:1]))
    c = k + _EXTRA_CANDIDATES
    d = shard.ref.shape[1]
    failed = []
    blocks = list(_blocks(b, m, budget, shard.search.element_size()))
    buf = torch.empty((blocks[0][1] - blocks[0][0], m), dtype=shard.search.dtype)
    for lo, hi in blocks:
        R = torch.addmm(sq[None, :], Qs[lo:hi], shard.search.T, alpha=-2.0, out=buf[:hi - lo])
        rows = np.arange(lo, hi)
        _mask_self(R, self_col[lo:hi])
        bounds = _expansion_bounds(np.concatenate([shard.t, tq[lo:hi]]), d, R.dtype, R.device)
        failed.append(_certified(shard, Q, R, rows, c, k, bounds, rel, self_col, out_idx, out_d2))
    failed = np.concatenate(failed)
    if failed.size:
        counts["float64"] = int(failed.size) if shard.search.dtype != torch.float64 else 0
        failed = _float64_pass(shard, Q, failed, c, k, budget, rel, self_col, out_idx, out_d2)
    counts["direct"] = int(failed.size)
    return out_idx, out_d2, counts


def _self_columns(ids: np.ndarray, qids: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(ids, qids)
    hit = (pos < ids.size) & (ids[np.minimum(pos, ids.size - 1)] == qids)
    return np.where(hit, pos, -1)


def _mask_self(R: torch.Tensor, cols: np.ndarray) -> None:
    inside = np.flatnonzero(cols >= 0)
    if inside.size:
        R[torch.as_tensor(inside), torch.as_tensor(cols[inside])] = float("inf")


def _certified(shard: Shard, Q: np.ndarray, R: torch.Tensor, rows: np.ndarray, c: int, k: int,
               bounds: _Bounds, rel: tuple[float, float], self_col: np.ndarray,
               out_idx: np.ndarray, out_d2: np.ndarray) -> np.ndarray:
    """Rows of the ranking block ``R`` (queries ``rows``) whose ``c`` (then ``4 c + 16``)
    smallest values are certified are re-ranked and written; returns the rows that fail.
    In ``bounds.t`` the shard's rows come first, then the block's queries."""
    m = shard.m
    pos = np.arange(rows.size)
    for width in (c, min(m - 1, 4 * c + 16)):
        sub = R if pos.size == rows.size else R[torch.as_tensor(pos)]  # (f, m)
        cand = _smallest(sub, width)  # (f, width)
        vals = torch.gather(sub, 1, cand).to(torch.float64).numpy()
        ok, keep = _certify(bounds, m + pos, cand.numpy(), vals, k, 0.0, rel)
        if ok.any():
            _rerank_into(shard, Q, rows[pos[ok]], keep, self_col, k, out_idx, out_d2)
        pos = pos[~ok]
        if not pos.size or width >= m - 1:
            break
    return rows[pos]


def _float64_pass(shard: Shard, Q: np.ndarray, rows: np.ndarray, c: int, k: int, budget: int,
                  rel: tuple[float, float], self_col: np.ndarray, out_idx: np.ndarray,
                  out_d2: np.ndarray) -> np.ndarray:
    """The float64 search of the failing query ``rows``: products of rows centred in float64
    (column chunks of the shard converted on the fly), certified; the rows that fail even
    that are settled by :func:`_direct` and returned."""
    m, d = shard.ref.shape
    chunk = max(1, 2**20 // d)
    t64 = np.empty(m)
    for j in range(0, m, chunk):
        C = shard.ref[j:j + chunk].astype(np.float64) - shard.center  # (s, d)
        t64[j:j + chunk] = np.einsum("ij,ij->i", C, C)
    step = max(1, min(rows.size, budget // (16 * max(m, d))))
    left = []
    for lo in range(0, rows.size, step):
        q = rows[lo:lo + step]
        Qc = Q[q].astype(np.float64) - shard.center  # (f, d)
        R = np.empty((q.size, m))
        for j in range(0, m, chunk):
            C = shard.ref[j:j + chunk].astype(np.float64) - shard.center
            R[:, j:j + chunk] = t64[None, j:j + chunk] - 2.0 * (Qc @ C.T)
        Rt = torch.from_numpy(R)
        _mask_self(Rt, self_col[q])
        tq = np.einsum("ij,ij->i", Qc, Qc)
        bounds = _expansion_bounds(np.concatenate([t64, tq]), d, torch.float64, Rt.device)
        bad = _certified(shard, Q, Rt, q, c, k, bounds, rel, self_col, out_idx, out_d2)
        if bad.size:
            sel = np.searchsorted(q, bad)
            _direct(shard, Q, bad, R[sel], t64, tq[sel], bounds, rel, k, self_col, out_idx,
                    out_d2)
        left.append(bad)
    return np.concatenate(left)


def _direct(shard: Shard, Q: np.ndarray, rows: np.ndarray, R: np.ndarray, t: np.ndarray,
            tq: np.ndarray, bounds: _Bounds, rel: tuple[float, float], k: int,
            self_col: np.ndarray, out_idx: np.ndarray, out_d2: np.ndarray) -> None:
    """Last resort: every shard row that the float64 bounds cannot exclude from a query's
    ``k`` nearest (lower bound at most the ``k``-th smallest upper bound; nan counts as
    possible) is re-ranked by direct distances, in pieces whose ``k`` best are kept."""
    eps, tiny = rel
    M = tq[:, None] + R  # (f, m)
    spread = bounds.gamma * (tq[:, None] + t[None, :]) + bounds.slack
    ceiling = np.partition(M + spread, k - 1, axis=1)[:, k - 1] * (1 + eps) + tiny
    possible = ~((M - spread) * (1 - eps) - tiny > ceiling[:, None])  # (f, m)
    piece = max(k + 1, _DIRECT_PIECE // shard.ref.shape[1])
    for i, row in enumerate(rows):
        may = possible[i].copy()
        if self_col[row] >= 0:
            may[self_col[row]] = False
        cand = np.flatnonzero(may)
        while cand.size > piece:  # the union of each piece's k best holds the k best
            parts = []
            for s in range(0, cand.size, piece):
                ids, _ = _ranked(shard, Q[row], cand[s:s + piece], k)
                parts.append(ids)
            cand = np.sort(np.concatenate(parts))
        ids, d2 = _ranked(shard, Q[row], cand, k)
        out_idx[row, :ids.size], out_d2[row, :ids.size] = shard.ids[ids], d2


def _ranked(shard: Shard, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of the local candidates ``cand`` (sorted) of one query row ``q``."""
    d2 = sqdist(q[None], shard.ref, cand[None])[0]  # (c,)
    order = np.argsort(d2, kind="stable")[:k]
    return cand[order], d2[order]


def _rerank_into(shard: Shard, Q: np.ndarray, rows: np.ndarray, cand: np.ndarray,
                 self_col: np.ndarray, k: int, out_idx: np.ndarray, out_d2: np.ndarray) -> None:
    """Re-rank the local candidates ``cand`` (f, w) of the query ``rows`` by direct squared
    distances, ties by index, and write the ``k`` best as global ids (the query itself, when
    it is in the shard, is left out)."""
    C = np.sort(cand, axis=1)  # (f, w) by index, so that equal distances keep it
    d2 = sqdist(Q[rows], shard.ref, C)  # (f, w)
    is_self = C == self_col[rows, None]  # the tiny-shard path (masked in R elsewhere)
    d2[is_self] = np.inf
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    d2 = np.take_along_axis(d2, order, 1)
    ids = shard.ids[np.take_along_axis(C, order, 1)]
    ids[np.take_along_axis(is_self, order, 1)] = SENTINEL
    w = ids.shape[1]
    out_idx[rows, :w], out_d2[rows, :w] = ids, d2


def sqdist(Q: np.ndarray, ref: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(b, c) float64 squared distances between query rows ``Q`` (b, d) and the rows ``C``
    (b, c) of ``ref``: the candidate rows minus the query row, squared in the rows' dtype and
    summed in float64 (the arithmetic of the single-machine re-ranking,
    :func:`repscope.neighbors.rerank._sqdist_numpy`)."""
    b, c, d = C.shape[0], C.shape[1], ref.shape[1]
    step = max(1, 2**20 // max(1, c * d))
    out = np.empty(C.shape, dtype=np.float64)
    buf = np.empty((min(step, b), c, d), dtype=ref.dtype)
    for s in range(0, b, step):
        e = min(s + step, b)
        diff = np.take(ref, C[s:e], axis=0, out=buf[:e - s])  # (s, c, d)
        diff -= Q[s:e, None, :].astype(ref.dtype, copy=False)
        np.square(diff, out=diff)
        out[s:e] = diff.sum(-1, dtype=np.float64)
    return out


def merge_tables(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two (ids, squared distances) tables of the same queries, by
    (squared distance, id): associative and commutative, so any merge tree gives the same."""
    ids = np.concatenate([a[0], b[0]], axis=1)  # (q, ka + kb)
    d2 = np.concatenate([a[1], b[1]], axis=1)
    order = np.lexsort((ids, d2), axis=1)[:, :k] if ids.shape[0] else np.zeros((0, k), int)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(d2, order, 1)
