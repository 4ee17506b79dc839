"""Exact re-ranking of candidates: distances from direct coordinate differences (float64
accumulation, no cancellation), sorted by (distance, index). Every search path ends here, so
every strategy gives the same table bit for bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from repscope.neighbors.blocks import _contiguous
from repscope.neighbors.prepare import _host_numpy


def _rerank(ref, rows, cand, k, metric):
    """Distances of the candidates of the query ``rows`` (sorted int64) from direct coordinate
    differences (no cancellation: relative error ~ eps of X's dtype), sorted by (distance,
    index); the first ``k`` kept."""
    if _host_numpy(ref.device):
        return _rerank_cpu(ref, rows, cand.numpy(), k, metric)
    d2 = _candidate_sqdist(ref, rows, cand)  # (b, c) float64
    key = torch.argsort(cand, dim=1)  # ties in distance are broken by index, on every backend
    cand, d2 = torch.gather(cand, 1, key), torch.gather(d2, 1, key)
    order = torch.argsort(d2, dim=1, stable=True)[:, :k]
    idx, d2 = torch.gather(cand, 1, order), torch.gather(d2, 1, order)
    dist = 0.5 * d2 if metric == "cosine" else torch.sqrt(d2)
    return idx.cpu().numpy(), dist.cpu().numpy()


def _rerank_cpu(ref: torch.Tensor, rows: np.ndarray, cand: np.ndarray, k: int, metric: str):
    """:func:`_rerank` on the CPU, in numpy (which releases the GIL): the rows are split
    between ``torch.get_num_threads()`` threads when there is enough work to share."""
    b, c = cand.shape
    idx = np.empty((b, k), dtype=np.int64)
    dist = np.empty((b, k), dtype=np.float64)

    def run(s: int, e: int) -> None:
        C = np.sort(cand[s:e], axis=1)  # (m, c) by index, so that equal distances keep it
        d2 = _sqdist_numpy(ref.numpy(), rows[s:e], C)  # (m, c) float64
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]  # (m, k)
        idx[s:e] = np.take_along_axis(C, order, 1)
        d2 = np.take_along_axis(d2, order, 1)
        dist[s:e] = 0.5 * d2 if metric == "cosine" else np.sqrt(d2)

    parts = max(1, min(torch.get_num_threads(), b * c * ref.shape[1] // 2**21))
    if parts == 1:
        run(0, b)
        return idx, dist
    cuts = np.linspace(0, b, parts + 1).astype(int)
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(run, cuts[:-1], cuts[1:]))
    return idx, dist


def _sqdist_numpy(R: np.ndarray, rows: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(b, c) float64 squared distances between the rows ``rows`` (b,) of ``R`` and rows ``C``
    (b, c): candidate rows gathered in chunks of a few MB (one reused buffer), subtracted,
    squared and summed in float64 (pairwise summation)."""
    b, c, d = C.shape[0], C.shape[1], R.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    out = np.empty(C.shape, dtype=np.float64)  # (b, c)
    buf = np.empty((min(step, b), c, d), dtype=R.dtype)
    contiguous = _contiguous(rows)
    for s in range(0, b, step):
        e = min(s + step, b)
        q = R[rows[0] + s:rows[0] + e] if contiguous else R[rows[s:e]]  # (s, d)
        diff = np.take(R, C[s:e], axis=0, out=buf[: e - s])  # (s, c, d)
        diff -= q[:, None, :]
        np.square(diff, out=diff)
        out[s:e] = diff.sum(-1, dtype=np.float64)
    return out


def _candidate_sqdist(ref: torch.Tensor, rows: np.ndarray, cand: torch.Tensor) -> torch.Tensor:
    """(b, c) float64 squared distances between the rows ``rows`` of ``ref`` and their candidates.

    Torch version of :func:`_sqdist_numpy` for accelerators: candidate rows gathered in chunks
    of a few MB, subtracted, squared and summed in float64.
    """
    b, c, d = cand.shape[0], cand.shape[1], ref.shape[1]
    step = max(1, 2**20 // (c * d))  # query rows per chunk
    rows_t = torch.as_tensor(rows, device=ref.device)
    d2 = torch.empty(cand.shape, dtype=torch.float64, device=cand.device)  # (b, c)
    for s in range(0, b, step):
        e = min(s + step, b)
        diff = ref.index_select(0, cand[s:e].reshape(-1)).view(e - s, c, d)  # (s, c, d)
        diff -= ref[rows_t[s:e], None, :]
        d2[s:e] = diff.square_().sum(-1, dtype=torch.float64)
    return d2
