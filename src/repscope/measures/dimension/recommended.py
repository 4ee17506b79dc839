"""``intrinsic_dimension``: the recommended estimate, a calibrated panel with an interval that
covers sampling variance and the bias and disagreement of the estimators.

Design (every number below comes from reference data or from the data itself, never from a
benchmark's answers):

1. **One neighbour table** (``k = 20``) of the distinct rows (at most ``max_samples``, a seeded
   subsample above) feeds the seven panel readings of :mod:`repscope.measures.dimension._panel`.
2. **Calibration at the same n.** The panel is read on reference data of every candidate ID
   (:data:`~repscope.measures.dimension._panel.GRID`, 1-128) from four families: uniform balls,
   uniform cubes, uniform spheres, Gaussians (:mod:`repscope.measures.dimension._calibration`;
   ``n`` points each, two seeded replicates, cached on disk). Each reading is mapped to the ID
   whose reference gives that reading, once per family (monotone interpolation in ``log m``).
   This removes the finite-sample bias that makes every kNN estimator read low at high ID.
3. **Per estimator**: the calibrated value is the mean over the four families; ``sd_family``
   (their standard deviation) is the calibration's model uncertainty; ``sd_sampling`` is the
   replicate scatter of the calibrated reference readings at that ID (relative, smoothed over
   neighbouring IDs).
4. **Estimate**: the calibrated TwoNN. Of the panel it probes the smallest neighbourhood (the
   first two neighbours), so curvature and density variation, whose biases grow with the
   neighbourhood, affect it least (Facco et al. 2017); its one large bias, the finite-sample
   bias at high ID, is what the calibration removes. (Chosen on reference data and on
   development manifolds that are not the benchmark suite: tori, curved cubes, graphs of
   random functions, Beta/Student/exponential densities, where it had the smallest error.)
5. **Interval** (``params["interval"] = "sampling + estimator bias"``):
   ``value +- z sqrt(s^2 + f^2 + g^2)`` with ``s`` and ``f`` the TwoNN's ``sd_sampling`` and
   ``sd_family``, and ``g`` the root-mean-square difference between the other six calibrated
   readings and the estimate: what larger neighbourhoods and angles say beyond it (curvature,
   non-uniform density, several scales). The lower end is at least 1 (IDs below 1 read as 1).
6. **Verdict**: sentences for the report, from the same numbers (``diagnostics["verdict"]``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from repscope._validate import ArrayLike, check_choice, check_int
from repscope.measures.dimension._calibration import FAMILIES, MAX_QUERIES
from repscope.measures.dimension._common import (
    _DIM,
    IDEstimate,
    _cap,
    _check_X,
    _ci_level,
    _common,
    _dup_diag,
    _kept_rows,
    _table,
    _valid_rows,
    _z,
)
from repscope.measures.dimension._panel import (
    GRID,
    PANEL,
    REPLICATES,
    panel_k,
    panel_statistics,
    reference_table,
)
from repscope.neighbors import Neighbors
from repscope.registry import register

__all__ = ["intrinsic_dimension"]

MAX_SAMPLES_CAP = 50_000  # calibration cost ~ n * min(n, 2500) * sum(GRID) per reference
MIN_DISTINCT = 12


def _invert(curve: np.ndarray, value: float) -> float:
    """ID (log-linear interpolation on GRID) whose reference reading ``curve`` equals ``value``."""
    c = np.maximum.accumulate(curve)
    logm = np.log(np.asarray(GRID, dtype=np.float64))
    return float(np.exp(np.interp(value, c, logm)))


def calibrate(raw: np.ndarray, table: np.ndarray) -> dict[str, np.ndarray]:
    """Map raw panel readings through the reference table (module docstring, steps 2-3).

    ``raw`` (E,), ``table`` (F, G, R, E). Returns ``by_family`` (E, F), ``value`` (E,),
    ``sd_family`` (E,), ``sd_sampling`` (E,) and ``censored`` (E,) bool.
    """
    F, G, R, E = table.shape
    curves = table.mean(2)  # (F, G, E)
    grid = np.asarray(GRID, dtype=np.float64)
    by_family = np.array([[_invert(curves[f, :, e], raw[e]) for f in range(F)] for e in range(E)])
    # replicate scatter of calibrated reference readings, relative to the true ID
    rel = np.empty((E, G))
    for e in range(E):
        dev = np.array([[[_invert(curves[f, :, e], table[f, g, r, e]) / grid[g] - 1
                          for r in range(R)] for f in range(F)] for g in range(G)])  # (G, F, R)
        rel[e] = np.sqrt(R / (R - 1) * (dev**2).mean((1, 2)))  # deviations from a mean of R
        rel[e] = _running_median(rel[e], 5)
    value = by_family.mean(1)
    sd_sampling = np.array([value[e] * np.interp(math.log(value[e]), np.log(grid), rel[e])
                            for e in range(E)])
    top = curves.max(1)  # (F, E) reading at the largest reference ID
    return {"by_family": by_family, "value": value, "sd_family": by_family.std(1, ddof=1),
            "sd_sampling": sd_sampling, "censored": (raw >= top.min(0))}


def _running_median(x: np.ndarray, width: int) -> np.ndarray:
    h = width // 2
    return np.array([np.median(x[max(0, i - h):i + h + 1]) for i in range(x.size)])


def combine(cal: dict[str, np.ndarray], ci_level: float) -> dict[str, Any]:
    """The estimate and its interval (module docstring, steps 4-5)."""
    v = cal["value"]
    value = float(v[0])  # the calibrated TwoNN: the smallest neighbourhood of the panel
    s = float(cal["sd_sampling"][0])
    f = float(cal["sd_family"][0])
    g = float(np.sqrt(np.mean((v[1:] - value) ** 2)))  # how far the larger scales / angles read
    sd = max(math.sqrt(s * s + f * f + g * g), 1e-12)
    half = _z(ci_level) * sd
    return {"value": value, "stderr": sd, "ci": (max(value - half, 1.0), value + half),
            "sd_sampling": s, "sd_family": f, "sd_disagreement": g}


def verdict(cal: dict[str, np.ndarray], comb: dict[str, Any], raw: np.ndarray, t,
            subsampled: tuple[int, int] | None) -> list[str]:
    """What the panel saw, in words the report prints (one sentence each)."""
    v, out = cal["value"], []
    value, s, g = comb["value"], comb["sd_sampling"], comb["sd_disagreement"]
    lo, hi = int(np.argmin(v)), int(np.argmax(v))
    if g > max(2.0 * s, 0.1 * value):
        out.append(f"kNN estimators disagree: calibrated readings range from {v[lo]:.1f} "
                   f"({PANEL[lo]}) to {v[hi]:.1f} ({PANEL[hi]}), more than sampling explains: "
                   "strong curvature, non-uniform density or multiple scales; the interval "
                   "includes that spread.")
    larger = float(np.median(v[1:5]))
    if abs(larger - value) > max(2.0 * s, 0.1 * value):
        way = "rises" if larger > value else "falls"
        out.append(f"The ID {way} with the neighbourhood size (TwoNN {value:.1f}, larger "
                   f"neighbourhoods {larger:.1f}): curvature, density variation or noise at "
                   "small scales; see id_scale_curve.")
    dist, ang = np.median(v[:5]), np.median(v[5:])
    if ang - dist > max(2.0 * s, 0.1 * value):
        out.append(f"Angle-based estimators read higher than distance-based ones ({ang:.1f} vs "
                   f"{dist:.1f}): neighbourhoods are curved at this sample size.")
    mle_raw = float(raw[PANEL.index("mle")])
    if value > 20 and mle_raw < 0.9 * value:
        out.append(f"ID above ~20: kNN estimators read low (MLE {mle_raw:.1f}), corrected by "
                   "calibration on reference data of the same n.")
    if bool(cal["censored"].any()):
        out.append(f"ID at or beyond {GRID[-1]}, the largest calibrated dimension: the value is "
                   "a lower bound.")
    if float(np.median(cal["sd_family"])) > 0.1 * value:
        out.append("The reference families (balls, cubes, spheres, Gaussians) disagree by more "
                   "than 10 % at this ID and n: the calibration itself is uncertain.")
    rep = t.nb.duplicates
    if rep.fraction > 0.01:
        done = "dropped" if rep.policy == "drop" else rep.policy
        out.append(f"{100 * rep.fraction:.0f} % duplicates {done} ({rep.n_exact} exact, "
                   f"{rep.n_duplicates - rep.n_exact} near).")
    if subsampled is not None:
        out.append(f"Estimated on a seeded subsample of {subsampled[0]} of the {subsampled[1]} "
                   "rows (max_samples).")
    if not out:
        out.append("The calibrated estimators agree within sampling error.")
    return out


def _panel_table(X, fn, metric, duplicates, neighbors, device):
    """The neighbour table of the panel: ``k = 20``, or ``distinct rows - 2`` on tiny data."""
    k = panel_k(X.shape[0])
    try:
        return _table(X, k, fn, metric=metric, duplicates=duplicates, neighbors=neighbors,
                      device=device, takes_k=False)
    except ValueError as err:
        found = re.search(r"only (\d+) of the", str(err))
        if found is None or int(found.group(1)) < MIN_DISTINCT:
            if found is not None:
                raise ValueError(f"{fn} needs at least {MIN_DISTINCT} distinct rows; "
                                 f"{str(err).split(', but ')[1]}") from None
            raise
        return _table(X, panel_k(int(found.group(1))), fn, metric=metric,
                      duplicates=duplicates, neighbors=neighbors, device=device, takes_k=False)


@register("intrinsic_dimension", **_DIM, min_samples=MIN_DISTINCT)
def intrinsic_dimension(X: ArrayLike, *, max_samples: int = 5000, seed: int = 0,
                        ci_level: float = 0.95, metric: str = "euclidean",
                        duplicates: str = "drop", neighbors: Neighbors | None = None,
                        device: Any = None) -> IDEstimate:
    """The recommended intrinsic-dimension estimate: a panel of seven published estimators
    calibrated on reference data of the same sample size, with an interval that covers their
    sampling variance, their bias and their disagreement.

    The panel (TwoNN, MLE, MiND_ML, MADA, TLE, ESS, DANCo's angle concentration) is read from
    one neighbour table; each reading is mapped to the ID whose uniform balls, cubes, spheres
    and Gaussians of ``n`` points give that reading (so the downward bias of kNN estimators at
    high ID is removed); the value is the calibrated TwoNN, the smallest-scale member. The
    interval is ``params["interval"] = "sampling + estimator bias"``: its sampling scatter, the
    spread between reference families and how far the other six calibrated estimators read
    from it, combined in quadrature
    (``repscope.measures.dimension.recommended`` docstring, ``docs/dimension.md``). ``diagnostics``:
    ``verdict`` (sentences for the report), ``panel`` / ``panel_raw`` / ``panel_by_family``
    (what each estimator read, calibrated or not), and the three standard deviations.

    Rows beyond ``max_samples`` (distinct or not) are subsampled with ``seed``; the references
    are seeded by ``seed`` and cached on disk
    (``repscope.data.models.cache_dir()/id-calibration``). ``duplicates``: ``"drop"`` or
    ``"raise"`` (the references have none). IDs above 128 are censored at 128.
    Cost: the neighbour table (``k = 20``) and ``O(n k^2 d)`` for the panel; once per ``(n,
    seed)``, the calibration: 216 reference samples, ``~ 2 n min(n, 2500) sum(GRID)``
    multiply-adds (about 1 min on one core at n = 2500, 2 min at 5000); ``max_samples <= 50000``.
    """
    fn = "intrinsic_dimension"
    X = _check_X(X, fn, MIN_DISTINCT)
    n = X.shape[0]
    max_samples = check_int(max_samples, "max_samples", fn, low=MIN_DISTINCT)
    _cap(max_samples, "max_samples", fn, MAX_SAMPLES_CAP, "calibration cost grows as n^2")
    check_choice(duplicates, "duplicates", fn, ("drop", "raise"))
    ci_level = _ci_level(ci_level, fn)
    subsampled = None
    if n > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_samples, replace=False))
        X = X[torch.as_tensor(rows)] if isinstance(X, torch.Tensor) else X[rows]
        subsampled, neighbors = (max_samples, n), None
    t = _panel_table(X, fn, metric, duplicates, neighbors, device)
    m = t.nb.n
    k = panel_k(m)
    _valid_rows(t.lengths, 1, fn)
    rows_t = _kept_rows(X, t, device).cpu()
    raw = panel_statistics(rows_t, None, t.nb.indices[:, :k], t.lengths[:, :k], k)
    table = reference_table(m, k, seed)
    cal = calibrate(raw, table)
    comb = combine(cal, ci_level)
    params = {"max_samples": max_samples, "seed": seed, "ci_level": ci_level, "k": k,
              "interval": "sampling + estimator bias", "uncertainty": "calibrated panel",
              "panel": list(PANEL), "families": list(FAMILIES), "grid_max": GRID[-1],
              "replicates": REPLICATES, "n_reference": m, "n_queries": min(m, MAX_QUERIES),
              **_common(t, metric, device)}
    diag = {"verdict": verdict(cal, comb, raw, t, subsampled),
            "panel": dict(zip(PANEL, cal["value"].tolist(), strict=True)),
            "panel_raw": dict(zip(PANEL, raw.tolist(), strict=True)),
            "panel_by_family": cal["by_family"], "panel_sd_sampling": cal["sd_sampling"],
            "panel_sd_family": cal["sd_family"], "sd_sampling": comb["sd_sampling"],
            "sd_family": comb["sd_family"], "sd_disagreement": comb["sd_disagreement"],
            "censored": bool(cal["censored"].any()),
            "n_input_rows": n, **_dup_diag(t)}
    return IDEstimate(fn, comb["value"], m, comb["stderr"], comb["ci"], params, diag,
                      scale=float(np.median(t.lengths[:, k - 1])), rank=k)
