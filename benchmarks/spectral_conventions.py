"""Measured conventions and finite-sample bias of the spectral and class-geometry measures.

    python benchmarks/spectral_conventions.py                 # writes spectral_conventions.md
    python benchmarks/spectral_conventions.py --quick         # fewer seeds (smoke run)
    python benchmarks/spectral_conventions.py --dse-dsmi DIR  # + the reference DSE/DSMI package

Every number in the "Conventions" and "Finite-sample bias" sections of ``docs/spectrum.md``
comes from this script (``tests/test_spectrum_conventions.py`` recomputes the headline ones
from the same generators). Sections:

1. finite-sample bias on isotropic Gaussian data (true IsoScore 1, true alpha 0, true
   effective dimensions d) as n / d goes from 1/4 to 50;
2. the same data under two conventions: ``spectral_entropy`` vs ``von_neumann_entropy``
   (Kim et al. 2023), ``effective_rank`` vs ``effective_rank_uncentred`` (Roy and Vetterli),
   ``nc2_equinorm`` with ddof 0 vs 1 (Papyan et al.'s code);
3. DSE on k separated clusters and on uniform noise: repscope's default bandwidth, the plain
   median heuristic and ``dse_liao2023``, across diffusion times;
4. DSMI with independent labels: the full-minus-conditional form vs the matched-n definition;
5. neural collapse: NC1 under 50 rotations with the default-cutoff pseudo-inverse vs the
   rank-(C-1) truncation, and NC2/NC3 on an imbalanced simplex, row-mean vs class-mean centring.

With ``--dse-dsmi DIR`` (a directory where ``pip install --no-deps --target DIR -r
benchmarks/requirements-spectral.txt`` put the reference package) ``dse_liao2023`` is compared
with ``dse_dsmi.diffusion_spectral_entropy``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_suffix(".md")


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# ----------------------------------------------------------------------------- generators
def activation_like(seed: int = 0, n: int = 2000, d: int = 64) -> np.ndarray:
    """(n, d) power-law covariance (lambda_r = r^-1, rotated) plus a common offset of norm 3."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) ** -0.5 @ Q.T  # (n, d)
    mu = rng.normal(size=d)
    return X + 3.0 * mu / np.linalg.norm(mu)


def separated_clusters(k: int, seed: int = 0, per: int = 50, d: int = 10,
                       spread: float = 0.5, distance: float = 100.0) -> np.ndarray:
    """(k * per, d) k Gaussian clusters (std ``spread``) with centres ``distance`` apart-ish."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d))
    C *= distance / np.linalg.norm(C, axis=1, keepdims=True)
    return C[np.repeat(np.arange(k), per)] + spread * rng.normal(size=(k * per, d))


def simplex(C: int, d: int, rng: np.random.Generator) -> np.ndarray:
    U = np.linalg.qr(rng.normal(size=(d, C)))[0]
    return (np.eye(C) - 1.0 / C) @ U.T * np.sqrt(C / (C - 1))


# ----------------------------------------------------------------------------- 1. finite sample
def finite_sample_rows(d: int = 100, ratios=(0.25, 0.5, 1, 2, 5, 10, 50), seeds: int = 5):
    from repscope.measures.dimension import participation_ratio
    from repscope.measures.spectrum import (
        effective_rank,
        isoscore,
        power_law_alpha,
        spectral_entropy,
        stable_rank,
    )

    rows = []
    for r in ratios:
        n = max(4, int(round(r * d)))
        vals = []
        for s in range(seeds):
            X = np.random.default_rng(1000 + s).normal(size=(n, d))
            iso = _quiet(isoscore, X)
            vals.append([iso.value, _quiet(power_law_alpha, X).value,
                         _quiet(participation_ratio, X, n_boot=0).value / d,
                         _quiet(effective_rank, X).value / d,
                         _quiet(spectral_entropy, X).diagnostics["exp_entropy"] / d,
                         _quiet(stable_rank, X).value / d, float(iso.diagnostics["finite_sample_biased"])])
        rows.append((r, n, np.mean(vals, axis=0)))
    return rows


# ----------------------------------------------------------------------------- 2. conventions
def convention_values(seed: int = 0) -> dict[str, float]:
    from repscope.measures.classes import nc2_equinorm
    from repscope.measures.spectrum import (
        effective_rank,
        effective_rank_uncentred,
        spectral_entropy,
        von_neumann_entropy,
    )

    X = activation_like(seed)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), 30)
    Z = rng.normal(size=(300, 16)) + 2.0 * rng.normal(size=(10, 16))[y]
    return {
        "spectral_entropy": spectral_entropy(X).value,
        "von_neumann_entropy": von_neumann_entropy(X).value,
        "effective_rank": effective_rank(X).value,
        "effective_rank_uncentred": effective_rank_uncentred(X).value,
        "nc2_equinorm_ddof0": nc2_equinorm(Z, labels=y).value,
        "nc2_equinorm_ddof1": nc2_equinorm(Z, labels=y, ddof=1).value,
    }


# ----------------------------------------------------------------------------- 3. DSE
def dse_rows(ts=(1, 2, 5, 10)):
    from repscope.measures.spectrum import dse, dse_liao2023

    out = []
    for k in (2, 5, 10):
        X = separated_clusters(k)
        N = np.random.default_rng(k).uniform(size=X.shape)  # same n and d, one piece
        for name, f in (("default", lambda Z, t: dse(Z, t=t).value),
                        ("sigma='median'", lambda Z, t: dse(Z, sigma="median", t=t).value),
                        ("dse_liao2023 (bits)", lambda Z, t: dse_liao2023(Z, t=t).value)):
            out.append((k, name, [f(X, t) for t in ts], [f(N, t) for t in ts]))
    return ts, out


# ----------------------------------------------------------------------------- 4. DSMI
def _dsmi_full_minus_conditional(X: np.ndarray, y: np.ndarray) -> float:
    """The pre-fix form: DSE(all rows) - sum_c p_c DSE(rows of c), with the bandwidth of all rows."""
    from repscope.measures.spectrum import dse

    full = dse(X)
    bw = full.diagnostics["bandwidth"]
    p = np.bincount(y) / y.size
    return full.value - sum(p[c] * dse(X[y == c], sigma=bw).value
                            for c in range(p.size) if np.sum(y == c) >= 2)


def dsmi_rows(seeds: int = 5, n: int = 500):
    from repscope.measures.spectrum import dsmi

    rows = []
    for C in (2, 10, 50):
        old, new = [], []
        for s in range(seeds):
            rng = np.random.default_rng(200 + s)
            X, y = rng.uniform(size=(n, 10)), rng.integers(0, C, n)
            old.append(_dsmi_full_minus_conditional(X, y))
            new.append(dsmi(X, labels=y, seed=s).value)
        rows.append((C, np.mean(old), np.mean(new), np.std(new)))
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 60)
    X = rng.normal(size=(240, 10)) + 8.0 * rng.normal(size=(4, 10))[y]
    informative = {t: dsmi(X, labels=y, t=t).value for t in (1, 5, 20)}
    return rows, informative


# ----------------------------------------------------------------------------- 5. neural collapse
def nc_values(seed: int = 0, rotations: int = 50) -> dict[str, float]:
    from repscope.measures.classes import nc1, nc2_equiangularity, nc2_equinorm, nc3

    rng = np.random.default_rng(seed)
    C, d, per = 10, 16, 20
    y = np.repeat(np.arange(C), per)
    X = simplex(C, d, rng)[y] + 0.01 * rng.normal(size=(C * per, d))
    old, new = [], []
    for _ in range(rotations):
        Z = X @ np.linalg.qr(rng.normal(size=(d, d)))[0]
        M = np.stack([Z[y == c].mean(0) for c in range(C)])
        Sw = (Z - M[y]).T @ (Z - M[y]) / len(Z)
        Sb = (M - Z.mean(0)).T @ (M - Z.mean(0)) / C
        old.append(np.trace(Sw @ np.linalg.pinv(Sb, hermitian=True)) / C)
        new.append(nc1(Z, labels=y).value)
    C5, d5 = 5, 12
    y5 = np.repeat(np.arange(C5), [10, 20, 40, 80, 160])
    M5 = simplex(C5, d5, rng)
    X5 = M5[y5] + 0.01 * rng.normal(size=(y5.size, d5))
    Mr = np.stack([X5[y5 == c].mean(0) for c in range(C5)]) - X5.mean(0)  # row-mean centring
    nr = np.linalg.norm(Mr, axis=1)
    U = Mr / nr[:, None]
    cos = (U @ U.T)[~np.eye(C5, dtype=bool)]
    W = M5 - M5.mean(0)
    return {"nc1_old_min": float(np.min(old)), "nc1_old_max": float(np.max(old)),
            "nc1_old_exploded": int(np.sum(np.array(old) > 1)),
            "nc1_new_min": float(np.min(new)), "nc1_new_max": float(np.max(new)),
            "equinorm_rowmean": float(nr.std() / nr.mean()),
            "equinorm": nc2_equinorm(X5, labels=y5).value,
            "equiangularity_rowmean": float(cos.std()),
            "equiangularity": nc2_equiangularity(X5, labels=y5).value,
            "nc3_rowmean": float(np.linalg.norm(W / np.linalg.norm(W) - Mr / np.linalg.norm(Mr)) ** 2),
            "nc3": nc3(X5, labels=y5, weights=W).value}


def reference_dse(path: str) -> list[tuple[str, float, float]]:
    sys.path.append(path)
    from dse_dsmi import diffusion_spectral_entropy

    from repscope.measures.spectrum import dse_liao2023

    rng = np.random.default_rng(0)
    out = []
    for name, X in (("uniform 500 x 64", rng.uniform(size=(500, 64))),
                    ("3 N(0, 1) 400 x 20", 3 * rng.normal(size=(400, 20)))):
        for t in (1, 2):
            out.append((f"{name}, t={t}", diffusion_spectral_entropy(X, t=t), dse_liao2023(X, t=t).value))
    return out


# ----------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, d = 50")
    ap.add_argument("--dse-dsmi", default=None, help="directory holding the dse_dsmi package")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    seeds, d = (2, 50) if args.quick else (5, 100)
    L = ["# Spectral and class-geometry conventions, measured\n",
         f"Script: `benchmarks/spectral_conventions.py{' --quick' if args.quick else ''}`; "
         f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} / {os.cpu_count()} cpus, "
         f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.\n"]
    L.append(f"## 1. Finite-sample bias, isotropic Gaussian, d = {d} (mean of {seeds} seeds)\n")
    L.append("True values: IsoScore 1, alpha 0, PR / d = erank / d = exp(entropy) / d = "
             "stable rank / d = 1.\n")
    L.append("| n / d | n | IsoScore | alpha | PR / d | erank / d | exp(entropy) / d | stable rank / d | warned |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r, n, v in finite_sample_rows(d, seeds=seeds):
        L.append(f"| {r:g} | {n} | " + " | ".join(f"{x:.3f}" for x in v[:6]) + f" | {'yes' if v[6] else 'no'} |")
    cv = convention_values()
    L.append("\n## 2. One dataset, two conventions\n")
    L.append("`activation_like(0)`: 2000 x 64, covariance spectrum r^-1 (rotated), common offset of "
             "norm 3. `nc2_equinorm`: 10 classes x 30 rows in 16-d, class means 2 N(0, I).\n")
    L.append("| repscope default | value | paper's convention | value |")
    L.append("|---|---|---|---|")
    L.append(f"| `spectral_entropy` (centred covariance) | {cv['spectral_entropy']:.3f} | "
             f"`von_neumann_entropy` (Kim et al. 2023) | {cv['von_neumann_entropy']:.3f} |")
    L.append(f"| `effective_rank` (centred) | {cv['effective_rank']:.2f} | `effective_rank_uncentred` "
             f"(Roy and Vetterli 2007) | {cv['effective_rank_uncentred']:.2f} |")
    L.append(f"| `nc2_equinorm` (ddof 0) | {cv['nc2_equinorm_ddof0']:.4f} | `nc2_equinorm(ddof=1)` "
             f"(Papyan et al.'s code) | {cv['nc2_equinorm_ddof1']:.4f} |")
    ts, rows = dse_rows()
    L.append("\n## 3. DSE: k separated clusters vs uniform noise of the same n and d\n")
    L.append("`separated_clusters(k)`: k x 50 rows in 10-d, cluster std 0.5, centres at norm 100. "
             "log k = 0.69 / 1.61 / 2.30 nats = 1 / 2.32 / 3.32 bits.\n")
    L.append("| k | setting | clusters, t = " + " / ".join(map(str, ts)) + " | noise, t = "
             + " / ".join(map(str, ts)) + " |")
    L.append("|---|---|---|---|")
    for k, name, a, b in rows:
        L.append(f"| {k} | {name} | " + " / ".join(f"{x:.2f}" for x in a) + " | "
                 + " / ".join(f"{x:.2f}" for x in b) + " |")
    drows, inf = dsmi_rows(seeds=seeds)
    L.append("\n## 4. DSMI with independent labels (uniform noise, 500 x 10)\n")
    L.append("| C | DSE(all) - mean class DSE | `dsmi` (matched n) | sd over seeds |")
    L.append("|---|---|---|---|")
    for C, o, nmean, nsd in drows:
        L.append(f"| {C} | {o:.3f} | {nmean:.4f} | {nsd:.4f} |")
    L.append("\nInformative labels (4 separated classes x 60, true MI log 4 = 1.386): `dsmi` = "
             + ", ".join(f"{v:.3f} at t = {t}" for t, v in inf.items()) + ".\n")
    nc = nc_values()
    L.append("## 5. Neural collapse\n")
    L.append(f"NC1 of a 10-class simplex ETF (+ 0.01 noise) under 50 rotations: default-cutoff "
             f"`pinv` {nc['nc1_old_min']:.3g} to {nc['nc1_old_max']:.3g} ({nc['nc1_old_exploded']} "
             f"above 1); rank-(C-1) truncation {nc['nc1_new_min']:.6g} to {nc['nc1_new_max']:.6g}.\n")
    L.append("Imbalanced simplex (5 classes of 10 / 20 / 40 / 80 / 160 rows, noise 0.01): "
             f"equinorm {nc['equinorm_rowmean']:.3f} -> {nc['equinorm']:.4f}, equiangularity "
             f"{nc['equiangularity_rowmean']:.3f} -> {nc['equiangularity']:.4f}, NC3 "
             f"{nc['nc3_rowmean']:.3f} -> {nc['nc3']:.5f} (row-mean -> class-mean centring).\n")
    if args.dse_dsmi:
        L.append("## Reference package\n")
        L.append("| data | dse_dsmi | dse_liao2023 | difference |")
        L.append("|---|---|---|---|")
        for name, r, m in reference_dse(args.dse_dsmi):
            L.append(f"| {name} | {r:.12f} | {m:.12f} | {abs(r - m):.1e} |")
    Path(args.out).write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
