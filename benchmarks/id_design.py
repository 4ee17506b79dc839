"""The evidence behind two design decisions of the ID estimators, measured on reference data and
on development manifolds that are NOT the benchmark suite (``benchmarks/id_accuracy.py`` runs
the suite; nothing here reads it).

1. GRIDE's default scale: bias and scatter of ``gride(n1=...)`` on uniform balls, cubes,
   spheres and Gaussians of ID 2-40 (3 seeds) at n = 1000 and 2500.
2. ``intrinsic_dimension``'s estimate: on development manifolds (flat tori, curved cubes, graphs
   of random functions, Beta / Student-t / exponential densities, curved Gaussians, von
   Mises-Fisher spheres, a Swiss roll times a cube, a Gaussian mixture; IDs 2-40), the error of
   each way of combining the calibrated panel, and the coverage and width of the interval.

    python benchmarks/id_design.py            # writes benchmarks/id_design.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _rot(Z, ambient, rng):
    Z = np.hstack([Z, np.zeros((Z.shape[0], ambient - Z.shape[1]))])
    Q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))
    return Z @ Q.T


def development_manifolds():
    """name -> (generator(n, rng), ID). Chosen to stress curvature, density and nonlinearity."""
    from repscope.data import manifolds as M

    def torus(m):
        def gen(n, r):
            t = r.random((n, m)) * 2 * np.pi
            return np.hstack([np.cos(t), np.sin(t)])
        return gen

    def curved_cube(m):
        def gen(n, r):
            x = r.random((n, m))
            return np.hstack([x, np.sin(np.pi * x) / 2, np.cos(np.pi * x) / 2])
        return gen

    def beta(m):
        return lambda n, r: _rot(r.beta(2, 5, size=(n, m)), m + 5, r)

    def student(m):
        return lambda n, r: _rot(r.standard_t(5, size=(n, m)), m + 3, r)

    def exp_curved(m):
        def gen(n, r):
            u = 1 / (1 + r.exponential(size=(n, m)))
            return np.hstack([u, np.sin(2 * u), u**2])
        return gen

    def gauss_curved(m):
        def gen(n, r):
            x = r.standard_normal((n, m))
            return np.hstack([x, np.sin(x), np.cos(x)])
        return gen

    def vmf(m):
        def gen(n, r):
            g = r.standard_normal((n, m + 1))
            g[:, 0] += 2.0
            return g / np.linalg.norm(g, axis=1, keepdims=True)
        return gen

    def swiss_cube(n, r):
        phi = 1.5 * np.pi * (1 + 2 * r.random(n))
        h = 21 * r.random(n)
        base = np.stack([phi * np.cos(phi), h, phi * np.sin(phi)], 1) / 10
        return np.hstack([base, r.random((n, 4))])

    def mixture(n, r):
        c = r.standard_normal((3, 18)) * 4
        B = np.linalg.qr(r.standard_normal((18, 8)))[0]
        return c[r.integers(0, 3, n)] + r.standard_normal((n, 8)) @ B.T

    def nonlinear(d, amb):
        return lambda n, r: M.nonlinear(n, d, amb, seed=int(r.integers(1e6))).X

    out = {f"torus{m}": (torus(m), m) for m in (2, 5, 10, 16)}
    out |= {f"curved_cube{m}": (curved_cube(m), m) for m in (6, 14)}
    out |= {f"beta{m}": (beta(m), m) for m in (5, 12)}
    out |= {f"student{m}": (student(m), m) for m in (4, 10)}
    out |= {f"exp_curved{m}": (exp_curved(m), m) for m in (4, 8)}
    out |= {f"gauss_curved{m}": (gauss_curved(m), m) for m in (5, 12)}
    out |= {f"vmf{m}": (vmf(m), m) for m in (6, 12)}
    out |= {"nonlinear3": (nonlinear(3, 10), 3), "nonlinear8": (nonlinear(8, 24), 8),
            "nonlinear15": (nonlinear(15, 40), 15), "swiss_x_cube6": (swiss_cube, 6),
            "mixture8": (mixture, 8),
            "sphere3": (lambda n, r: M.sphere(n, 3, ambient=12, seed=int(r.integers(1e6))).X, 3),
            "gauss30": (lambda n, r: r.standard_normal((n, 30)), 30),
            "cube40": (lambda n, r: r.random((n, 40)), 40)}
    return out


def gride_scale(ns, lines):
    from repscope.measures.dimension import gride
    from repscope.measures.dimension._calibration import reference_sample
    from repscope.neighbors import knn

    fams, ids, n1s = ("ball", "cube", "sphere", "gaussian"), (2, 5, 10, 20, 40), (1, 2, 4, 8)
    lines += ["## 1. GRIDE's scale on reference data", "",
              "Relative bias (mean over families and 3 seeds of `value / ID - 1`) and scatter "
              "(standard deviation over seeds, relative), by ID; last column the mean absolute "
              "relative error.", "",
              "| n | n1 | " + " | ".join(f"ID {m}: bias, sd" for m in ids) + " | mean abs error |",
              "|---:|---:|" + "---|" * len(ids) + "---:|"]
    for n in ns:
        res = {}
        for f in fams:
            for m in ids:
                for s in range(3):
                    Y = reference_sample(f, n, m, np.random.default_rng([s, m, n]))
                    nb = knn(Y, 32)
                    for n1 in n1s:
                        res[(f, m, s, n1)] = gride(Y, n1=n1, neighbors=nb).value / m - 1
        for n1 in n1s:
            cells = []
            for m in ids:
                bias = np.mean([res[(f, m, s, n1)] for f in fams for s in range(3)])
                sd = np.mean([np.std([res[(f, m, s, n1)] for s in range(3)]) for f in fams])
                cells.append(f"{100 * bias:+.1f} %, {100 * sd:.1f} %")
            mae = np.mean([abs(v) for k, v in res.items() if k[3] == n1])
            lines.append(f"| {n} | {n1} | " + " | ".join(cells) + f" | {100 * mae:.1f} % |")
    lines.append("")


def combination_rules(ns, seeds, lines):
    from repscope.measures.dimension import intrinsic_dimension

    panel = ("twonn", "mle", "mind_ml", "mada", "tle", "ess", "angles")
    rules = {
        "calibrated TwoNN (the estimate)": lambda v, w: v[0],
        "median of the 7": lambda v, w: float(np.median(v)),
        "mean of the 7": lambda v, w: float(np.mean(v)),
        "inverse-variance mean": lambda v, w: float((w * v).sum() / w.sum()),
        "median of the 5 distance-based": lambda v, w: float(np.median(v[:5])),
        "calibrated MLE": lambda v, w: v[1],
        "calibrated ESS": lambda v, w: v[5],
    }
    lines += ["## 2. Combining the calibrated panel (development manifolds)", ""]
    dev = development_manifolds()
    for n in ns:
        rows = []
        for name, (gen, d) in dev.items():
            for s in range(seeds):
                r = intrinsic_dimension(gen(n, np.random.default_rng(100 + s)))
                v = np.array([r.diagnostics["panel"][p] for p in panel])
                w = 1 / (r.diagnostics["panel_sd_sampling"] ** 2
                         + r.diagnostics["panel_sd_family"] ** 2)
                rows.append((name, d, v, w, r))
        lines += [f"### n = {n} ({len(dev)} manifolds x {seeds} seeds)", "",
                  "| rule | cases within +-10 % | mean % error | mean % error, ID >= 12 |",
                  "|---|---:|---:|---:|"]
        for label, rule in rules.items():
            err = np.array([abs(rule(v, w) - d) / d for _, d, v, w, _ in rows])
            hi = np.array([abs(rule(v, w) - d) / d for _, d, v, w, _ in rows if d >= 12])
            lines.append(f"| {label} | {100 * np.mean(err <= 0.1):.0f} % | {100 * err.mean():.1f}"
                         f" | {100 * hi.mean():.1f} |")
        cov = np.mean([r.ci[0] <= d <= r.ci[1] for _, d, _, _, r in rows])
        width = np.median([(r.ci[1] - r.ci[0]) / d for _, d, _, _, r in rows])
        lines += ["", f"`intrinsic_dimension`'s 95 % interval contains the true ID in "
                      f"{100 * cov:.0f} % of the cases; median width {100 * width:.0f} % of the ID.",
                  "", "| manifold | ID | value (seed 0) | interval |", "|---|---:|---:|---|"]
        for name, d, _, _, r in rows[::seeds]:
            lines.append(f"| {name} | {d} | {r.value:.2f} | [{r.ci[0]:.2f}, {r.ci[1]:.2f}] |")
        lines.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 2500])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "id_design.md"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.time()
    lines: list[str] = []
    gride_scale(args.n, lines)
    combination_rules(args.n, args.seeds, lines)
    from repscope._version import __version__

    head = ["# Intrinsic dimension: design evidence (reference data and development manifolds)",
            "", f"Generated by `benchmarks/id_design.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,"
            f" repscope {__version__}, {platform.machine()}, {os.cpu_count()} logical CPUs "
            f"(shared), wall time {time.time() - t0:.0f} s. None of these data sets is in the "
            "benchmark suite.", ""]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))


if __name__ == "__main__":
    main()
