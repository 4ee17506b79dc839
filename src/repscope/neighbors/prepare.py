"""The search copy of X: centred rows (or centred unit rows for cosine) in the search dtype, the
reference rows whose direct differences give exact distances, and, for the low-rank search,
the rows split into principal coordinates and residual norms (:mod:`repscope.neighbors.lowrank`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repscope._arrays import take_rows
from repscope._validate import ArrayLike, as_torch
from repscope.neighbors.certificate import _Bounds

_NUMPY_ON_CPU = True  # numpy fast paths for CPU tensors (off: the accelerator code runs on CPU)


def _host_numpy(device: torch.device) -> bool:
    """Whether work on ``device`` takes the numpy fast paths (CPU, unless switched off)."""
    return device.type == "cpu" and _NUMPY_ON_CPU


@dataclass(frozen=True)
class _Prepared:
    search: torch.Tensor
    "(n, d) in the search dtype: centred rows (euclidean) or centred unit rows (cosine)."
    ref: torch.Tensor
    "(n, d) rows whose float64 differences give exact distances: X itself, or unit rows."
    rms_radius: float
    "sqrt(mean squared distance to the centroid) of the rows the metric sees."
    center: torch.Tensor
    "(d,) float64 centroid of ``ref``."
    lowrank: _LowRank | None = None
    "The projected rows of the low-rank search, when it is used."

    def subset(self, rows: np.ndarray) -> _Prepared:
        """The prepared rows ``rows`` (sorted int64), centre and radius unchanged."""
        if rows.shape[0] == self.search.shape[0]:
            return self
        low = None if self.lowrank is None else self.lowrank.subset(rows)
        return _Prepared(take_rows(self.search, rows), take_rows(self.ref, rows),
                         self.rms_radius, self.center, low)


@dataclass(frozen=True)
class _LowRank:
    """Rows split into principal coordinates and residual norms (:mod:`~.lowrank`)."""

    proj: torch.Tensor
    "(n, r) coordinates ``p_i`` rounded to the search dtype."
    bias: torch.Tensor
    "(n,) ``t_i`` rounded to the search dtype: the row term of the ranking ``t_j - 2 p_i.p_j``."
    t: np.ndarray
    "(n,) float64 ``t_i = |p_i|^2 + rho_i^2`` (= ``|c_i|^2``), on the host."
    rho: np.ndarray
    "(n,) float64 residual norms ``rho_i``, on the host."
    gamma: float
    "Relative margin of the ranking: ``|M_hat - M| <= gamma (t_i + t_j)``."
    slack: float
    "Absolute margin for every float64 rounding (centring, projection, residual)."
    auto: bool = False
    "Chosen by strategy='auto': hand everything to the brute search if the probe block fails."

    @property
    def rank(self) -> int:
        return int(self.proj.shape[1])

    @property
    def bounds(self) -> _Bounds:
        return _Bounds(self.t, self.rho, self.gamma, self.slack)

    def subset(self, rows: np.ndarray) -> _LowRank:
        return _LowRank(*(take_rows(a, rows) for a in (self.proj, self.bias, self.t, self.rho)),
                        self.gamma, self.slack, self.auto)


def _prepare(X: ArrayLike, metric: str, device: torch.device, dtype: torch.dtype) -> _Prepared:
    """Search copy (centred rows, or centred unit rows for cosine: exact translation invariance
    and less cancellation in the expanded form) and the reference rows for exact distances;
    chunked float64 work."""
    Xo = as_torch(X, device=device)  # (n, d), not copied when possible
    n, d = Xo.shape
    chunk = max(1, 2**20 // d)  # float64 chunks of 8 MB: reused heap memory, not fresh maps
    ref = _reference_rows(Xo, metric)
    if device.type == "cpu" and dtype in (torch.float32, torch.float64):
        return _prepare_numpy(ref, metric, dtype)
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    sq = torch.zeros((), dtype=torch.float64, device=device)
    for lo in range(0, n, chunk):
        rows = ref[lo:lo + chunk].to(torch.float64)  # (c, d)
        mean += rows.sum(0)
        sq += (rows * rows).sum()
    mean /= n
    rms = float(torch.sqrt((sq / n - (mean * mean).sum()).clamp(min=0)))
    search = torch.empty((n, d), dtype=dtype, device=device)
    for lo in range(0, n, chunk):
        rows = ref[lo:lo + chunk].to(torch.float64)
        search[lo:lo + chunk] = rows - mean
    return _Prepared(search, ref, rms, mean)


MOMENT_BLOCK = 4096
"""Rows per block of the centre and radius sums (:func:`_block_moments`). The per-block float64
sums are added in block order, so every split of the rows on block boundaries (the shards of
:func:`repscope.neighbors.distributed.knn_distributed`) gives the same centre and radius, bit
for bit."""


def _block_moments(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block float64 column sums ``(nb, d)`` and sums of squares ``(nb,)`` of the rows of
    ``A`` (n, d), in blocks of :data:`MOMENT_BLOCK` rows starting at row 0."""
    n, d = A.shape
    nb = -(-n // MOMENT_BLOCK)
    sums = np.empty((nb, d))
    sqs = np.empty(nb)
    for b in range(nb):
        rows = A[b * MOMENT_BLOCK:(b + 1) * MOMENT_BLOCK]  # (<= block, d)
        sums[b] = np.add.reduce(rows, axis=0, dtype=np.float64)  # row after row: any alignment
        sqs[b] = np.add.reduce(np.add.reduce(np.square(rows, dtype=np.float64), axis=0))
    return sums, sqs


def _combine_moments(sums: np.ndarray, sqs: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """(mean (d,), rms radius) from the block sums of :func:`_block_moments`, in block order."""
    mean = np.add.reduce(sums, axis=0) / n  # (d,)
    sq = float(np.add.reduce(sqs))
    return mean, float(np.sqrt(max(sq / n - float(mean @ mean), 0.0)))


def _centred(A: np.ndarray, mean: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """Rows of ``A`` minus ``mean`` in the search dtype (float32 or float64)."""
    out = np.empty(A.shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
    if np.float64 in (A.dtype, out.dtype):  # unit rows (cosine) are float64
        np.subtract(A, mean, out=out, casting="same_kind")  # centred in float64, then rounded
    else:
        np.subtract(A, mean.astype(A.dtype), out=out)  # exact near the centre: a translation
    return out


def _prepare_numpy(ref: torch.Tensor, metric: str, dtype: torch.dtype) -> _Prepared:
    """CPU path of :func:`_prepare`: numpy's float64-accumulating reductions and casting
    subtraction run in a few passes over X (torch's float64 column sums are ~10x slower)."""
    A = ref.numpy()  # (n, d) float32 or float64, shares memory with ref
    mean, rms = _combine_moments(*_block_moments(A), A.shape[0])
    return _Prepared(torch.from_numpy(_centred(A, mean, dtype)), ref, rms, torch.from_numpy(mean))


def _unit_rows(rows: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """(c, d) float64 unit rows of ``rows`` (cosine); a zero row is refused (``offset``: the
    first row's index in X, for the message)."""
    rows = rows.to(torch.float64)
    norms = torch.linalg.vector_norm(rows, dim=1)  # (c,)
    if bool((norms == 0).any()):
        bad = offset + int((norms == 0).nonzero()[0, 0])
        raise ValueError(f"knn with metric='cosine' needs non-zero rows; row {bad} of X has norm 0.")
    return rows / norms[:, None]


def _reference_rows(Xo: torch.Tensor, metric: str) -> torch.Tensor:
    """The rows whose direct differences give exact distances: X itself (float16/bfloat16 as
    float32), or its float64 unit rows for cosine (chunks of 8 MB)."""
    n, d = Xo.shape
    if metric != "cosine":
        return Xo if Xo.dtype in (torch.float32, torch.float64) else Xo.to(torch.float32)
    chunk = max(1, 2**20 // d)
    ref = torch.empty((n, d), dtype=torch.float64, device=Xo.device)
    for lo in range(0, n, chunk):
        ref[lo:lo + chunk] = _unit_rows(Xo[lo:lo + chunk], lo)
    return ref


def _squared_norms(S: torch.Tensor) -> np.ndarray:
    """(n,) float64 squared norms of the rows of ``S`` (n, d), in chunks of 8 MB."""
    n, d = S.shape
    t = np.empty(n)
    chunk = max(1, 2**20 // d)
    host = _host_numpy(S.device) and S.dtype in (torch.float32, torch.float64)
    for lo in range(0, n, chunk):
        if host:
            rows = S[lo:lo + chunk].numpy()  # (c, d)
            t[lo:lo + chunk] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        else:
            rows = S[lo:lo + chunk].to(torch.float64)  # (c, d)
            t[lo:lo + chunk] = (rows * rows).sum(1).cpu().numpy()
    return t
