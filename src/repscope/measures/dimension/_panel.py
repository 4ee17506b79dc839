"""The panel behind :func:`~repscope.measures.dimension.intrinsic_dimension`: seven published
estimators read from one neighbour table, and what they read on reference data of known
dimension at the same sample size.

Panel (``k = 20`` neighbours, ``k / 2`` for MiND and the angles; fewer on tiny data):

==============  ======================================================================
``twonn``        TwoNN maximum likelihood ``(N - 1) / sum log(r_2 / r_1)`` (Facco et al. 2017)
``mle``          Levina-Bickel / MacKay-Ghahramani ``1 / mean(S / (k - 1))``
``mind_ml``      MiND_MLk on ``r_1 / r_{k/2+1}`` (Rozza et al. 2012)
``mada``         mean of ``ln 2 / ln(r_k / r_{k/2})`` (Farahmand et al. 2007)
``tle``          mean TLE local estimate (Amsaleg et al. 2019)
``ess``          mean expected-simplex-skewness statistic (Johnsson et al. 2015)
``angles``       1 / mean variance of the angles between neighbours (DANCo's angle
                 concentration, Ceruti et al. 2014)
==============  ======================================================================

Five read distance ratios (second order in curvature), two read angles (first order in
curvature, insensitive to how distances concentrate). Each raw reading is a statistic that
increases with the dimension; :func:`reference_table` says what it is on ``n`` points of each
reference family (:mod:`repscope.measures.dimension._calibration`) for every ID of :data:`GRID`.
"""

from __future__ import annotations

import numpy as np
import torch

from repscope.measures.dimension._calibration import (
    FAMILIES,
    MAX_QUERIES,
    cached,
    query_neighbors,
    reference_sample,
)
from repscope.measures.dimension._core import ess_local_statistic
from repscope.measures.dimension.mind import mind_fit, mind_rho
from repscope.measures.dimension.tle_mada import mada_local, tle_local

__all__ = ["GRID", "PANEL", "REPLICATES", "panel_k", "panel_statistics", "reference_table"]

PANEL = ("twonn", "mle", "mind_ml", "mada", "tle", "ess", "angles")
#: candidate IDs of the reference data (readings are interpolated between them)
GRID = (*range(1, 13), 14, 16, 18, 20, 23, 26, 30, 35, 40, 48, 56, 64, 80, 96, 128)
REPLICATES = 2


def panel_k(n_rows: int) -> int:
    """Neighbours of the panel: 20, or fewer when there are fewer than 22 distinct rows."""
    return int(min(20, n_rows - 2))


def panel_statistics(rows: torch.Tensor, queries: np.ndarray | None, idx: np.ndarray,
                     lengths: np.ndarray, k: int) -> np.ndarray:
    """The raw panel readings (one per :data:`PANEL` name) of the query rows.

    ``rows`` (n, d) float64; ``idx`` / ``lengths`` (q, >= k): the neighbours of
    ``rows[queries]`` (all rows when ``queries`` is None), nearest first, self excluded.
    One Gram matrix of each point and its ``k`` neighbours (centred at their mean) gives the
    ESS statistic, the distances between neighbours (TLE) and the neighbour angles.
    """
    h = max(2, k // 2)
    L = lengths[:, :k]
    out = np.empty(len(PANEL))
    log_mu = np.log(L[:, 1] / L[:, 0])
    out[0] = (log_mu.size - 1) / log_mu.sum()
    logs = np.log(L)
    out[1] = 1.0 / np.mean((logs[:, k - 1:k] - logs[:, :k - 1]).sum(1) / (k - 1))
    log_rho, ok = mind_rho(L, h)
    out[2] = mind_fit(log_rho[ok], np.ones(int(ok.sum())), h)[0]
    out[3] = float(np.mean(mada_local(L, k)))
    q = idx.shape[0]
    ess, tle, var = np.empty(q), np.empty(q), np.empty(q)
    centre = np.arange(rows.shape[0]) if queries is None else queries
    full = torch.as_tensor(np.concatenate([centre[:, None], idx[:, :k]], 1))  # (q, k+1)
    iu = np.triu_indices(h, 1)
    step = max(1, 2**22 // ((k + 1) * rows.shape[1]))
    for lo in range(0, q, step):
        P = rows[full[lo:lo + step]]  # (b, k+1, d): the point, then its neighbours
        P = P - P.mean(1, keepdim=True)
        G = torch.bmm(P, P.transpose(1, 2)).numpy()  # (b, k+1, k+1), centred Gram
        sq = np.einsum("bii->bi", G)
        D2 = sq[:, :, None] + sq[:, None, :] - 2 * G  # squared distances
        ess[lo:lo + step] = ess_local_statistic(G)
        tle[lo:lo + step] = tle_local(L[lo:lo + step], D2[:, 1:, 1:])
        # vectors from the point to its neighbours: v_i . v_j = (|v_i|^2 + |v_j|^2 - D2_ij) / 2
        a = D2[:, 0, 1:h + 1]  # (b, h) squared lengths
        dot = (a[:, :, None] + a[:, None, :] - D2[:, 1:h + 1, 1:h + 1]) / 2
        cos = dot[:, iu[0], iu[1]] / np.sqrt(a[:, iu[0]] * a[:, iu[1]])
        var[lo:lo + step] = np.arccos(np.clip(cos, -1.0, 1.0)).var(1)
    out[4] = float(np.mean(tle[np.isfinite(tle)]))
    out[5] = float(np.mean(ess))
    out[6] = 1.0 / float(np.mean(var))
    return out


def reference_table(n: int, k: int, seed: int) -> np.ndarray:
    """Panel readings on the references: ``(len(FAMILIES), len(GRID), REPLICATES, len(PANEL))``.

    Replicate ``r`` of family ``f`` at ID ``m`` is seeded by ``(seed, f, m, r)``; statistics
    over ``min(n, 2500)`` query points of the ``n`` simulated ones. Cached on disk.
    """

    def compute() -> dict[str, np.ndarray]:
        out = np.empty((len(FAMILIES), len(GRID), REPLICATES, len(PANEL)))
        for fi, fam in enumerate(FAMILIES):
            for gi, m in enumerate(GRID):
                for r in range(REPLICATES):
                    rng = np.random.default_rng([seed, fi, m, r])
                    Y = reference_sample(fam, n, m, rng)
                    q = np.sort(rng.choice(n, min(n, MAX_QUERIES), replace=False))
                    idx, dist = query_neighbors(Y, q, k)
                    out[fi, gi, r] = panel_statistics(torch.from_numpy(Y), q, idx, dist, k)
        return {"readings": out}

    params = {"n": n, "k": k, "seed": seed, "families": FAMILIES, "grid": GRID,
              "replicates": REPLICATES, "panel": PANEL, "n_queries": min(n, MAX_QUERIES)}
    return cached("panel", params, compute)["readings"]
