"""Rounding bounds and the per-row certificate that a candidate list holds the ``k`` nearest.

Float32 products can rank wrongly: their rounding error grows with the centred norms
(``|c_i|^2 + |c_j|^2``), not with the distance, so when the gap between a row's ``k``-th and
next neighbours is below it (far-apart clusters, unit rows that are nearly collinear) a true
neighbour can fall outside the candidates. Every row is therefore certified like a low-rank
row with zero residual (``r = d``): with ``t_i = |s_i|^2`` of the rounded centred rows and
``gamma = 2 (2 d + 16) u`` (:func:`_expansion_bounds`), each ranking value is within
``gamma (t_i + t_j)`` of the squared distance, and the row is exact when the ``k``-th
candidate's upper bound is below the lower bound of every non-candidate (:func:`_certify`).
The low-rank search (:mod:`repscope.neighbors.lowrank`) uses the same certificate with its
residual norms ``rho``; rows that fail go to the fallbacks (:mod:`repscope.neighbors.fallbacks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class _Bounds:
    """What :func:`_certify` needs to bound the squared distances behind a ranking matrix."""

    t: np.ndarray
    "(n,) float64 squared norms of the centred rows."
    rho: np.ndarray
    "(n,) float64 norms of the parts the ranking leaves out (zero for the brute search)."
    gamma: float
    "Relative margin of the ranking: ``|M_hat - M| <= gamma (t_i + t_j)``."
    slack: float
    "Absolute margin (float64 roundings, underflow)."


def _expansion_bounds(t: np.ndarray, d: int, dtype: torch.dtype, device: torch.device) -> _Bounds:
    """Rounding bounds of the brute ranking ``|s_j|^2 - 2 s_i.s_j`` computed in ``dtype`` from
    the centred rows ``s`` rounded to ``dtype`` (``t_i = |s_i|^2`` in float64), for
    :func:`_certify` with zero residuals: ``|M_hat - D| <= gamma (t_i + t_j) + slack``.

    With ``u`` the unit roundoff of the products (:func:`_unit_roundoff`, and of the dtype)
    plus that of float64 (the centring): ``t`` (a float64 sum, ``d u64 t_i``) and its rounding
    to ``dtype`` (``u t_j``), the ``d``-term products of ``addmm`` and its final rounding
    (``gamma_d |s_i| |s_j|`` in any summation order, so ``(d + 3) u (t_i + t_j)``) and the
    rounding of the centred rows (relative ``u`` per entry, so ``|D_s - D| <= 4 u (t_i + t_j)``)
    add up to at most ``(d + 8) u (t_i + t_j)`` to first order; ``(2 d + 16) u`` is twice that.
    ``slack`` covers products that underflow (flushed to zero or not).
    """
    u = max(_unit_roundoff(dtype, device), float(torch.finfo(dtype).eps) / 2) + 2.0**-53
    gamma = 2.0 * (2 * d + 16) * u
    slack = 8.0 * (d + 4) * float(torch.finfo(dtype).tiny)
    return _Bounds(t, np.zeros(t.shape[0]), gamma, slack)


def _unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit roundoff of products in ``dtype`` on ``device``: float32 products are assumed to
    round like TF32 or bfloat16 when any torch setting (legacy or per-backend) allows it."""
    if dtype == torch.float64:
        return 2.0**-53
    roundoff = {"highest": 2.0**-24, "ieee": 2.0**-24, "none": 2.0**-24, "high": 2.0**-11,
                "tf32": 2.0**-11}
    modes = []
    try:
        modes.append(torch.get_float32_matmul_precision())
    except RuntimeError:  # legacy and new settings mixed: assume the least precise
        modes.append("bf16")
    backends = [torch.backends, torch.backends.cuda.matmul if device.type == "cuda"
                else getattr(torch.backends.mkldnn, "matmul", None)]
    modes += [str(getattr(b, "fp32_precision", "none")) for b in backends if b is not None]
    if device.type == "cuda":
        try:
            modes.append("tf32" if torch.backends.cuda.matmul.allow_tf32 else "none")
        except RuntimeError:
            modes.append("bf16")
    return max(roundoff.get(m, 2.0**-8) for m in modes)


def _certify(L: _Bounds, q: slice | np.ndarray, cand: np.ndarray, vals: np.ndarray, k: int,
             rho_max: float, rel: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Which query rows ``q`` (a slice or indices) are certified, and the candidates of those
    rows that can still be among their ``k`` nearest, ordered by lower bound:
    ``(ok (b,) bool, cand (b_ok, w) int64)``.

    ``vals`` (b, c) are the computed ranking values ``t_j - 2 p_i.p_j`` of the candidates, so
    ``M_hat = t_i + vals`` estimates ``M_ij`` within ``gamma (t_i + t_j)`` (see :func:`_project`;
    for the brute search ``rho = 0``, ``M = D`` and the margins of :func:`_expansion_bounds`).
    Squared distances satisfy ``M - 2 rho_i rho_j - margin <= D <= M + 2 rho_i rho_j + margin``.
    A non-candidate has ``M_hat >= max(candidate M_hat)`` and ``t_j <= 2 t_i + 2 D``, hence
    ``D (1 + 2 gamma) >= max M_hat - 3 gamma t_i - 2 rho_i rho_max - slack``. The re-ranking
    computes ``D`` with relative error ``eps`` (plus ``tiny`` for underflow), so the row is exact
    when that lower bound, lowered by it, exceeds the ``k``-th smallest candidate upper bound,
    raised by it. A row with a non-finite candidate value (overflow) fails. Small (b, c)
    arrays: numpy on the host for every device.
    """
    eps, tiny = rel
    gamma = L.gamma
    ti, ri = L.t[q, None], L.rho[q, None]  # (b, 1)
    M = ti + vals.astype(np.float64)  # (b, c)
    spread = 2.0 * ri * L.rho[cand] + gamma * (ti + L.t[cand]) + L.slack
    upper_k = np.partition(M + spread, k - 1, axis=1)[:, k - 1]  # (b,)
    ceiling = upper_k * (1 + eps) + tiny  # >= the computed distance of k candidates
    if cand.shape[1] >= L.t.shape[0] - 1:  # every other row is a candidate
        ok = np.ones(ti.shape[0], dtype=bool)
    else:
        floor = M.max(1) - 3.0 * gamma * ti[:, 0] - 2.0 * ri[:, 0] * rho_max - L.slack
        ok = (floor / (1 + 2.0 * gamma)) * (1 - eps) - tiny > ceiling
        ok &= np.isfinite(M).all(1)  # an overflowed product bounds nothing
    lower = ((M - spread) * (1 - eps) - tiny)[ok]  # (b_ok, c) <= computed distances
    order = np.argsort(lower, axis=1)
    need = lower <= ceiling[ok, None]  # may be among the k nearest
    width = max(k, int(need.sum(1).max())) if need.shape[0] else k
    return ok, np.take_along_axis(cand[ok], order[:, :width], 1)


def _rerank_error(ref: torch.Tensor) -> tuple[float, float]:
    """(relative, absolute) error bound of the re-ranking's squared distances: the difference
    and square in ``ref``'s dtype, the float64 sum over ``d`` terms, doubled for safety; the
    absolute part covers squares that underflow."""
    d = ref.shape[1]
    u = 2.0**-24 if ref.dtype == torch.float32 else 2.0**-53
    return 2.0 * (3.0 * u + (d + 4) * 2.0**-53), 4.0 * d * float(torch.finfo(ref.dtype).tiny)


def _possible(R: torch.Tensor, q: np.ndarray, bounds: _Bounds, rel: tuple[float, float],
              k: int) -> np.ndarray:
    """(f, n) bool: the rows that may be among the ``k`` nearest of each query ``q`` (f,),
    from its ranking row in ``R`` (f, n) and the bounds of :func:`_certify` over the whole row:
    lower bound of the computed distance at most the ``k``-th smallest upper bound (nan, from
    an overflow, counts as possible); the query itself excluded. No other row can be."""
    eps, tiny = rel
    t = bounds.t
    M = t[q, None] + R.to(torch.float64).cpu().numpy()  # (f, n)
    spread = bounds.gamma * (t[q, None] + t[None, :]) + bounds.slack
    ceiling = np.partition(M + spread, k - 1, axis=1)[:, k - 1] * (1 + eps) + tiny  # (f,)
    lower = (M - spread) * (1 - eps) - tiny  # <= computed distances
    out = ~(lower > ceiling[:, None])
    out[np.arange(q.size), q] = False
    return out
