"""Cross-check of repscope's benchmark manifolds against scikit-dimension's implementation.

For every member of ``repscope.data.manifolds.SUITE`` and the matching
``skdim.datasets.BenchmarkManifolds`` set, both generators draw ``n`` points (same n, ID and
ambient dimension, no noise; the random streams differ, so the comparison is distributional):

* shape and true ID;
* coordinate ranges: the largest difference between the per-coordinate 1st / 99th percentiles
  of the two samples, relative to the overall coordinate span (0 = same box; sampling noise at
  n = 2000 is ~0.01-0.03);
* TwoNN and MLE (k = 20), both computed by repscope on each sample (the estimator is fixed; the
  data are what is compared).

A second table follows ESS (Johnsson, Soneson and Fontes 2015) on the 1-D curves M5a and
M13 as n grows (k = 20): repscope's ``ess`` and scikit-dimension's ``ESS`` (its pointwise
estimates averaged), on the same points. Both read above 1 on curves by the same amount, and
the excess halves when n doubles: it is curvature inside the neighbourhood, not an
implementation error (``docs/dimension.md``, "ESS on curves").

Rows where the two libraries implement different formulas are marked; ``docs/dimension.md``
says which one follows which paper. scikit-dimension is NOT a repscope dependency: run this
with a venv that has it (``benchmarks/requirements-id.txt``), e.g.

    /work/venvs/B/bin/python benchmarks/manifolds_check.py --quick      # n = 500
    /work/venvs/B/bin/python benchmarks/manifolds_check.py              # n = 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np

#: repscope name -> (skdim name, where the definitions differ; "" when they agree)
PAIRS = {
    "M1_sphere": ("M1_Sphere", ""),
    "M2_affine": ("M2_Affine_3to5", "2 of the 15 coefficients (rows 2 and 5 use p2 vs Hein's p3)"),
    "M3_nonlinear": ("M3_Nonlinear_4to6", ""),
    "M4_nonlinear": ("M4_Nonlinear", ""),
    "M5a_helix_1d": ("M5a_Helix1d", ""),
    "M5b_helix_2d": ("M5b_Helix2d", "skdim: r, phi in [0, 10 pi), z = phi/2; Hein: r in [-pi, pi), z = phi"),
    "M6_nonlinear": ("M6_Nonlinear", ""),
    "M7_swiss_roll": ("M7_Roll", "skdim: classic roll (t cos t, h, t sin t); Hein: (phi sin 2.5phi, h, phi cos 2.5phi)"),
    "M8_nonlinear": ("M8_Nonlinear", ""),
    "M9_affine": ("M9_Affine", ""),
    "M10a_hypercube": ("M10a_Cubic", "skdim: boundary of a (d+1)-cube; Hein: solid d-cube, zero-padded"),
    "M10b_hypercube": ("M10b_Cubic", "as M10a"),
    "M10c_hypercube": ("M10c_Cubic", "as M10a"),
    "M10d_hypercube": ("M10d_Cubic", "as M10a"),
    "M11_moebius": ("M11_Moebius", ""),
    "M12_gaussian": ("M12_Norm", "repscope rotates the (isotropic) Gaussian: same distribution"),
    "M13_curve": ("M13b_Spiral", "skdim: helix (100 cos t, 100 sin t, t), zero-padded; Hein: curve 13"),
    "M13a_s_curve": ("M13a_Scurve", ""),
    "Mn1_nonlinear": ("Mn1_Nonlinear", "skdim: tan / arctan map; repscope: Rozza et al. 2012 map"),
    "Mn2_nonlinear": ("Mn2_Nonlinear", "as Mn1"),
    "Mbeta": ("Mbeta", ""),
    "Mp1_paraboloid": ("Mp1_Paraboloid", ""),
    "Mp2_paraboloid": ("Mp2_Paraboloid", ""),
    "Mp3_paraboloid": ("Mp3_Paraboloid", ""),
}


def _estimates(X: np.ndarray) -> tuple[float, float]:
    from repscope.measures import dimension as D
    from repscope.neighbors import knn

    nb = knn(X, 20)
    return (D.twonn(X, neighbors=nb, n_boot=0).value, D.mle(X, k=20, neighbors=nb, n_boot=0).value)


def _range_gap(A: np.ndarray, B: np.ndarray) -> float:
    """Largest gap between the per-coordinate 1st / 99th percentiles, over the overall span."""
    qa, qb = np.percentile(A, [1, 99], axis=0), np.percentile(B, [1, 99], axis=0)  # (2, D)
    span = max(np.ptp(A), np.ptp(B), 1e-12)
    return float(np.abs(qa - qb).max() / span)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="n = 500")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the Markdown table here")
    args = ap.parse_args()
    n = 500 if args.quick else args.n

    import skdim
    from skdim.datasets import BenchmarkManifolds

    from repscope.data.manifolds import SUITE

    bm = BenchmarkManifolds(random_state=args.seed)
    rows = []
    t0 = time.perf_counter()
    for name, (sk_name, differs) in PAIRS.items():
        ours = SUITE[name](n, args.seed, 0.0)
        d, dim, _ = bm._dict_truth[sk_name]
        theirs = np.asarray(bm.generate(sk_name, n=n, dim=dim, d=d), dtype=np.float64)
        same_shape = ours.X.shape == theirs.shape and ours.intrinsic_dim == d
        tw_o, ml_o = _estimates(ours.X)
        tw_t, ml_t = _estimates(theirs)
        rows.append((name, sk_name, ours.intrinsic_dim, ours.ambient_dim, "yes" if same_shape else
                     f"NO {theirs.shape}", _range_gap(ours.X, theirs) if same_shape else float("nan"),
                     tw_o, tw_t, ml_o, ml_t, differs or "same formulas"))
    took = time.perf_counter() - t0

    head = (f"n = {n}, seed = {args.seed}, scikit-dimension {skdim.__version__}, "
            f"{platform.machine()} / {os.cpu_count()} cpus, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {took:.0f} s")
    lines = [head, "",
             "| repscope | skdim | ID | D | same shape | range gap | TwoNN ours | TwoNN skdim "
             "| MLE ours | MLE skdim | definitions |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.3f} | {r[6]:.2f} "
                     f"| {r[7]:.2f} | {r[8]:.2f} | {r[9]:.2f} | {r[10]} |")
    lines += ["", "ESS on 1-D curves, k = 20 (true ID 1):", "",
              "| curve | n | repscope ess | skdim ESS (mean of pointwise) |", "|---|---:|---:|---:|"]
    from repscope.measures import dimension as D

    for name in ("M5a_helix_1d", "M13_curve"):
        for m in ((500, 1000) if args.quick else (1000, 2000, 4000)):
            X = SUITE[name](m, args.seed, 0.0).X
            ours = D.ess(X, k=20, n_boot=0).value
            theirs = skdim.id.ESS(random_state=args.seed).fit(X, n_neighbors=20).dimension_
            lines.append(f"| {name} | {m} | {ours:.3f} | {theirs:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
