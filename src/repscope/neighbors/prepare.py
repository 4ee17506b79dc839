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
    if metric == "cosine":
        ref = torch.empty((n, d), dtype=torch.float64, device=device)
        for lo in range(0, n, chunk):
            rows = Xo[lo:lo + chunk].to(torch.float64)  # (c, d)
            norms = torch.linalg.vector_norm(rows, dim=1)  # (c,)
            if bool((norms == 0).any()):
                bad = lo + int((norms == 0).nonzero()[0, 0])
                raise ValueError(
                    f"knn with metric='cosine' needs non-zero rows; row {bad} of X has norm 0."
                )
            ref[lo:lo + chunk] = rows / norms[:, None]
    else:
        ref = Xo if Xo.dtype in (torch.float32, torch.float64) else Xo.to(torch.float32)
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


def _prepare_numpy(ref: torch.Tensor, metric: str, dtype: torch.dtype) -> _Prepared:
    """CPU path of :func:`_prepare`: numpy's float64-accumulating reductions and casting
    subtraction run in a few passes over X (torch's float64 column sums are ~10x slower)."""
    A = ref.numpy()  # (n, d) float32 or float64, shares memory with ref
    n = A.shape[0]
    mean = np.add.reduce(A, axis=0, dtype=np.float64) / n  # (d,)
    sq = float(np.einsum("ij,ij->", A, A, dtype=np.float64))
    rms = float(np.sqrt(max(sq / n - float(mean @ mean), 0.0)))
    out = np.empty(A.shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
    if np.float64 in (A.dtype, out.dtype):  # unit rows (cosine) are float64
        np.subtract(A, mean, out=out, casting="same_kind")  # centred in float64, then rounded
    else:
        np.subtract(A, mean.astype(A.dtype), out=out)  # exact near the centre: a translation
    return _Prepared(torch.from_numpy(out), ref, rms, torch.from_numpy(mean))


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
