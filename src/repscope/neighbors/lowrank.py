"""Certified low-rank pruning (``strategy="lowrank"``, chosen by ``"auto"`` when it pays).

When the rows (centred) lie close to an ``r``-dimensional subspace with ``r`` well below ``d``,
most of the full-dimensional arithmetic is wasted. Split each centred row ``c_i = x_i - mu``
into its coordinates ``p_i = V_r^T c_i`` in an orthonormal basis ``V_r`` (d, r) of the top
principal directions and its residual ``e_i = c_i - V_r p_i`` (computed explicitly in float64),
of norm ``rho_i``. Since ``e_i`` is orthogonal to the subspace,

    ||x_i - x_j||^2 = ||p_i - p_j||^2 + rho_i^2 + rho_j^2 - 2 e_i.e_j,   |e_i.e_j| <= rho_i rho_j,

so with ``M_ij = ||p_i - p_j||^2 + rho_i^2 + rho_j^2`` (an ``r``-dimensional product, blockwise as
in the brute search) every squared distance lies in ``[M_ij - 2 rho_i rho_j, M_ij + 2 rho_i rho_j]``.
For each row the ``k + extra`` smallest ``M`` are the candidates. The row is **certified** when
the ``k``-th smallest upper bound among its candidates is below a lower bound valid for every
non-candidate (the largest candidate ``M`` minus ``2 rho_i max_j rho_j``): no non-candidate can
then be among the ``k`` nearest. All bounds carry rigorous rounding margins (the float32
expanded product, the float64 projection, the relative error of the re-ranking distances), so a
certified row gets exactly the table of the brute search: the same candidates re-ranked by the
same direct float64 distances with the same tie rule. Rows that fail (typically those whose
residual is not small against the gap between their ``k``-th and further neighbours) are searched
again by the brute path. ``"auto"`` estimates the spectrum from a seeded subsample of 256 rows,
takes the smallest ``r`` leaving at most a ``1e-4`` fraction of the variance, uses pruning only
when ``d >= 2 r + 64`` and ``r <= 128`` (what 256 rows can vouch for), and switches to the brute
search if more than half of a first probe block of 512 rows fails the certificate. Cosine
distances are Euclidean distances of the unit rows, which are pruned the same way. This is
standard bound-based pruning (a distance bounded by that of a projection plus what the
projection leaves out), specialised to an exact, certified table.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from repscope.neighbors.blocks import _blocks, _smallest
from repscope.neighbors.certificate import _certify, _rerank_error, _unit_roundoff
from repscope.neighbors.prepare import _host_numpy, _LowRank, _Prepared
from repscope.neighbors.rerank import _rerank

log = logging.getLogger(__name__)

# The thresholds only decide speed, never correctness.
_LOWRANK_EXTRA = 8  # candidates beyond k in the projected search
_LOWRANK_TAIL = 1e-4  # variance fraction the r principal directions may leave out
_LOWRANK_SAMPLE = 256  # rows of the seeded subsample whose spectrum chooses r (auto: r <= 128)
_LOWRANK_MIN_SAVING = 64  # auto prunes only when d >= 2 r + this (selection costs ~ that much)
_PROBE_ROWS = 512  # auto: rows of the first (probe) block
_PROBE_MAX_FAIL = 0.5  # auto: switch to brute when more of the probe rows fail the certificate


def _with_lowrank(P: _Prepared, strategy: str, dtype: torch.dtype, seed: int) -> _Prepared:
    """``P`` with its projected rows when the low-rank search is used, else ``P`` unchanged."""
    d = P.ref.shape[1]
    if strategy == "auto" and d < 2 + _LOWRANK_MIN_SAVING:
        return P  # too few columns to save anything
    V = _sample_basis(P, seed, strategy == "auto")  # (d, r) or None
    if V is None:
        return P
    return replace(P, lowrank=_project(P, V, dtype, strategy == "auto"))


def _sample_basis(P: _Prepared, seed: int, auto: bool) -> np.ndarray | None:
    """(d, r) float64 orthonormal basis of the top principal directions of a seeded subsample
    of the centred rows: the smallest ``r`` leaving out at most ``_LOWRANK_TAIL`` of its
    variance. With ``auto``, None when pruning would not pay (``d < 2 r + 64``), or when the
    subsample cannot tell (``m`` rows show at most ``m - 1`` directions; trusted for ``r <= m/2``).

    The spectrum comes from the smaller Gram matrix (``C C^T`` (m, m) or ``C^T C`` (d, d)),
    on the CPU in float64; the basis is orthonormalised by Householder QR (any orthonormal
    basis keeps the search exact; a better one certifies more rows).
    """
    n, d = P.ref.shape
    m = min(n, _LOWRANK_SAMPLE)
    rows = np.sort(np.random.default_rng(seed).choice(n, m, replace=False)) if m < n else np.arange(n)
    if P.ref.device.type == "cpu":
        S = P.ref.numpy()[rows]  # (m, d)
    else:
        S = P.ref[torch.as_tensor(rows, device=P.ref.device)].cpu().numpy()
    C = np.subtract(S, P.center.cpu().numpy())  # (m, d) float64, host
    # small dense algebra in numpy (no change to torch's global thread settings)
    G = C @ C.T if m < d else C.T @ C
    lam = np.clip(np.linalg.eigvalsh(G)[::-1], 0.0, None)  # descending
    tail = np.append(np.cumsum(lam[::-1])[::-1], 0.0)  # tail[j]: left out by the first j
    r = max(1, int(np.argmax(tail <= _LOWRANK_TAIL * tail[0])))
    if auto and (d < 2 * r + _LOWRANK_MIN_SAVING or 2 * r > m):
        log.debug("knn: rank %d of %d columns (subsample of %d rows), brute search", r, d, m)
        return None
    W = np.linalg.eigh(G)[1][:, ::-1][:, :r]  # top r eigenvectors
    V = C.T @ W if m < d else W  # (d, r) principal directions (scaled if m < d)
    return np.linalg.qr(V)[0]


def _project(P: _Prepared, V: np.ndarray, dtype: torch.dtype, auto: bool) -> _LowRank:
    """Coordinates ``p_i = V^T c_i`` and residual norms ``rho_i = |c_i - V p_i|`` of the
    centred rows ``c_i = ref_i - mu``, all in float64 (the residual explicitly, not as
    ``|c|^2 - |p|^2``, which cancels), and the rounding margins of the projected ranking.
    numpy on the CPU (faster float64 elementwise work), torch on accelerators."""
    n, d = P.ref.shape
    r = V.shape[1]
    dev = P.ref.device
    sdtype = torch.float64 if dtype == torch.float64 else torch.float32
    cpu = _host_numpy(dev)
    ref = P.ref.numpy() if cpu else P.ref
    mu = P.center.numpy() if cpu else P.center
    Vx = V if cpu else torch.as_tensor(V, device=dev)
    proj = torch.empty((n, r), dtype=sdtype, device=dev)
    t = np.empty(n)
    rho = np.empty(n)
    norm_max = 0.0
    chunk = max(1, 2**20 // d)  # float64 chunks of 8 MB
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        if cpu:
            norm_max = max(norm_max, float(np.einsum("ij,ij->i", ref[lo:hi], ref[lo:hi],
                                                     dtype=np.float64).max()) ** 0.5)
            C = np.subtract(ref[lo:hi], mu)  # (c, d) float64
            p = C @ Vx  # (c, r)
            E = np.matmul(p, Vx.T)
            np.subtract(C, E, out=E)  # (c, d) residual, explicit
            rho2, p2 = np.einsum("ij,ij->i", E, E), np.einsum("ij,ij->i", p, p)
        else:
            rows = ref[lo:hi].to(torch.float64)  # (c, d)
            norm_max = max(norm_max, float((rows * rows).sum(1).max()) ** 0.5)
            C = rows - mu
            p = C @ Vx  # (c, r)
            E = torch.addmm(C, p, Vx.T, alpha=-1.0)  # (c, d) residual, explicit
            rho2, p2 = (E * E).sum(1).cpu().numpy(), (p * p).sum(1).cpu().numpy()
        rho[lo:hi] = np.sqrt(rho2)
        t[lo:hi] = p2 + rho2
        proj[lo:hi] = torch.as_tensor(p, device=dev)
    u = _unit_roundoff(sdtype, dev)
    u64 = 2.0**-53
    # Ranking error: rounding p and t to the search dtype, and the (r + 1)-term dot product of
    # addmm (|error| <= gamma_{r+1} |x|.|y|, any summation order), all <= (2r + 8) u (t_i + t_j);
    # doubled for safety. The float64 work (centring, projection, residual, the non-orthogonality
    # of V) is bounded by a few (d (sqrt(r) + 2) u64) (max |ref| + |mu|)^2; taken 64 times.
    gamma = 2.0 * (2 * r + 8) * u
    B = norm_max + float(np.linalg.norm(P.center.cpu().numpy()))
    slack = 64.0 * d * (np.sqrt(r) + 2.0) * u64 * B * B
    bias = torch.as_tensor(t, device=dev).to(sdtype)
    return _LowRank(proj, bias, t, rho, gamma, slack, auto)


def _lowrank_search(P: _Prepared, k: int, metric: str, budget: int,
                    out_idx: np.ndarray, out_dist: np.ndarray) -> np.ndarray:
    """Projected blockwise search with a per-row certificate (above); certified rows
    are re-ranked and written in place. Returns the sorted rows left to the brute search."""
    L = P.lowrank
    Ps = L.proj  # (n, r)
    n = Ps.shape[0]
    c = min(n - 1, k + _LOWRANK_EXTRA)
    b = next(_blocks(n, n, budget, Ps.element_size()))[1]
    probe = min(b, _PROBE_ROWS)
    starts = [0, *range(probe, n, b)]
    buf = torch.empty((b, n), dtype=Ps.dtype, device=Ps.device)
    rho_max = float(L.rho.max())
    rel = _rerank_error(P.ref)
    failed = []
    for i, lo in enumerate(starts):
        hi = min(n, probe if i == 0 else lo + b)
        R = torch.addmm(L.bias[None, :], Ps[lo:hi], Ps.T, alpha=-2.0, out=buf[: hi - lo])  # (b, n)
        R.diagonal(lo).fill_(float("inf"))
        cand = _smallest(R, c)  # (b, c)
        vals = torch.gather(R, 1, cand)
        ok, keep = _certify(L.bounds, slice(lo, hi), cand.cpu().numpy(), vals.cpu().numpy(), k,
                            rho_max, rel)
        rows = lo + np.flatnonzero(ok)
        if rows.size:
            keep = torch.as_tensor(keep, device=Ps.device)
            out_idx[rows], out_dist[rows] = _rerank(P.ref, rows, keep, k, metric)
        failed.append(lo + np.flatnonzero(~ok))
        if i == 0 and L.auto and hi < n and failed[0].size > _PROBE_MAX_FAIL * (hi - lo):
            log.debug("knn: %d of %d probe rows failed the certificate, brute search",
                      failed[0].size, hi - lo)
            failed.append(np.arange(hi, n))
            break
    return np.concatenate(failed).astype(np.int64)
