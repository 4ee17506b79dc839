"""Approximate candidate backends (faiss HNSW, pynndescent), re-ranked exactly; the table is then
``exact=False``. Both libraries are optional and imported on use."""

from __future__ import annotations

import numpy as np
import torch

from repscope.neighbors.blocks import _EXTRA_CANDIDATES
from repscope.neighbors.prepare import _Prepared
from repscope.neighbors.rerank import _rerank


def _refine(P: _Prepared, cand: np.ndarray, k: int, metric: str):
    """Exact re-ranking of approximate candidates; self, missing (-1) and repeated entries
    are removed first."""
    n = P.search.shape[0]
    out_idx = np.empty((n, k), dtype=np.int64)
    out_dist = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        row = np.unique(cand[i][(cand[i] >= 0) & (cand[i] != i)])
        if row.size < k:
            raise RuntimeError(
                f"The approximate backend returned {row.size} < k={k} distinct neighbours for "
                f"row {i}; use backend='exact'."
            )
        cand[i, : row.size] = row
        cand[i, row.size:] = row[-1]  # repeats sort after the distinct copy and are cut below
    c = torch.as_tensor(cand, device=P.search.device)  # (n, c)
    idx, dist = _rerank(P.ref, np.arange(n), c, c.shape[1], metric)
    for i in range(n):
        keep = np.ones(idx.shape[1], dtype=bool)
        keep[1:] = idx[i, 1:] != idx[i, :-1]
        out_idx[i], out_dist[i] = idx[i, keep][:k], dist[i, keep][:k]
    return out_idx, out_dist


def _faiss_candidates(Xs: torch.Tensor, k: int) -> np.ndarray:
    try:
        import faiss
    except ImportError as err:
        raise ImportError("knn(backend='faiss') needs faiss: pip install faiss-cpu") from err
    A = np.ascontiguousarray(Xs.cpu().numpy(), dtype=np.float32)  # (n, d)
    index = faiss.IndexHNSWFlat(A.shape[1], 32)
    index.hnsw.efSearch = max(64, 2 * (k + 1))
    index.add(A)
    _, cand = index.search(A, min(A.shape[0], k + 1 + _EXTRA_CANDIDATES))
    return cand.astype(np.int64)


def _pynndescent_candidates(Xs: torch.Tensor, k: int, seed: int) -> np.ndarray:
    try:
        from pynndescent import NNDescent
    except ImportError as err:
        raise ImportError("knn(backend='pynndescent') needs pynndescent: pip install pynndescent") from err
    A = np.ascontiguousarray(Xs.cpu().numpy(), dtype=np.float32)  # (n, d)
    c = min(A.shape[0], k + 1 + _EXTRA_CANDIDATES)
    cand, _ = NNDescent(A, n_neighbors=c, metric="euclidean", random_state=seed).neighbor_graph
    return cand.astype(np.int64)
