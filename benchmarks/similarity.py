"""Similarity benchmark: repscope vs netrep and rsatoolbox on the same data, in one run.

Run in a venv that has the competitors (see benchmarks/requirements-similarity.txt):

    python benchmarks/similarity.py --quick      # smoke run, about a minute
    python benchmarks/similarity.py              # the issue's sizes

Sections
1. 12 x 12 linear CKA matrix, n = 10,000, d = 384: ``repscope.measures.similarity.similarity_matrix`` vs a loop of
   netrep ``LinearCKA().score`` (which returns ``arccos(CKA)``; compared as such). netrep builds
   two n x n Gram matrices per pair, so in the full run it is timed on ``--netrep-pairs`` pairs and
   its 66-pair time is extrapolated linearly (stated in the output).
2. Linear CKA at n = 50,000, d = 768 streamed from a memory-mapped file in a child process;
   peak RSS reported. netrep is not run there: its two float64 n x n Gram matrices alone need
   2 * 8 * n^2 bytes = 40 GB.
3. Procrustes (angular) at n = 20,000: ``procrustes_angular`` vs netrep
   ``LinearMetric(alpha=1, score_method="angular").fit_score``.
4. RSA (Euclidean RDM, Spearman) layer matrix vs rsatoolbox ``calc_rdm`` + ``compare``.
   rsatoolbox's "euclidean" RDM is the squared distance divided by d, a monotone transform,
   so Spearman values must agree exactly.
5. CCA family (``--sections cca``) at n = 20,000, d = 384: ``cca_mean``, ``svcca``, ``pwcca``
   vs scikit-learn ``CCA`` (NIPALS, one component at a time: fitted with ``--sklearn-components``
   components, its score correlations compared with repscope's leading ones), cca-zoo ``CCA``
   (all components; correlations of its transformed views) and repsim (``cca(...,
   "pillai")``, which is the mean canonical correlation, and ``pwcca``, which is the average of
   the two directions; repsim's ``svcca`` is timed but not compared, see benchmarks/similarity.md).
   Accuracy is also checked against a float64 Householder-QR reference (QR of each centred
   matrix, SVD of ``Qx^T Qy``), on the same data and on an ill-conditioned copy (features
   scaled 1e-3..1e3, offset +1e4) where only accuracy is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def layer_chain(n_layers: int, n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic layers: each a random orthogonal map of the previous one plus fresh noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.linspace(2.0, 0.2, d)
    out = {}
    for i in range(n_layers):
        out[f"layer{i:02d}"] = X
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        X = X @ q + 0.3 * rng.standard_normal((n, d))
    return out


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def bench_cka_matrix(n: int, d: int, layers: int, netrep_pairs: int | None, device: str) -> dict:
    """repscope in float64 and in mixed precision (best of 2 alternating runs each) vs netrep."""
    from repscope.measures.similarity import similarity_matrix

    reps = layer_chain(layers, n, d)
    times: dict[str, float] = {"float64": math.inf, "mixed": math.inf}
    mats = {}
    for _ in range(2):
        for precision in times:
            mats[precision], t = timed(similarity_matrix, reps, "cka_linear", device=device,
                                       params={"precision": precision})
            times[precision] = min(times[precision], t)
    names = list(reps)
    pairs = [(i, j) for i in range(layers) for j in range(i + 1, layers)]
    row = {"section": "cka_matrix", "n": n, "d": d, "layers": layers, "repscope_s": times["float64"],
           "repscope_mixed_s": times["mixed"], "device": device}
    try:
        from netrep.metrics import LinearCKA
    except ImportError:
        row["netrep"] = "not installed"
        return row
    todo = pairs if netrep_pairs is None else pairs[:netrep_pairs]
    metric = LinearCKA()
    t = time.perf_counter()
    theirs = {(i, j): metric.score(reps[names[i]], reps[names[j]]) for i, j in todo}  # arccos(CKA)
    t_theirs = (time.perf_counter() - t) * len(pairs) / len(todo)
    row.update({"netrep_s": t_theirs, "netrep_pairs_timed": len(todo), "pairs": len(pairs),
                "extrapolated": len(todo) < len(pairs)})
    for precision, M in mats.items():
        tag = "" if precision == "float64" else "_mixed"
        row["speedup" + tag] = t_theirs / times[precision]
        row["max_abs_diff_arccos" + tag] = max(abs(a - math.acos(min(1.0, M.values[p]))) for p, a in theirs.items())
        row["max_abs_diff_cka" + tag] = max(abs(math.cos(a) - M.values[p]) for p, a in theirs.items())
    return row


_CHILD = """
import sys, time, resource, numpy as np
from repscope.measures.similarity import cka_linear
path, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, 2 * d))
t = time.perf_counter()
e = cka_linear(X[:, :d], X[:, d:], batch_size=4096)
dt = time.perf_counter() - t
# VmHWM is the peak resident set of this process image (ru_maxrss would include the
# parent's peak, inherited through fork).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(e.value, dt, int(hwm) / 1024)
"""


def bench_cka_large(n: int, d: int) -> dict:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "xy.f32")
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, 2 * d))
        for lo in range(0, n, 10_000):
            hi = min(lo + 10_000, n)
            Z = rng.standard_normal((hi - lo, d)).astype(np.float32)
            mm[lo:hi, :d] = Z
            mm[lo:hi, d:] = Z[:, ::-1] * 0.5 + rng.standard_normal((hi - lo, d)).astype(np.float32)
        mm.flush()
        del mm
        out = subprocess.run([sys.executable, "-c", _CHILD, path, str(n), str(d)],
                             capture_output=True, text=True, check=True)
    value, dt, rss = (float(v) for v in out.stdout.split())
    return {"section": "cka_large", "n": n, "d": d, "repscope_s": dt, "peak_rss_mb": rss,
            "value": value, "data_mb": n * 2 * d * 4 / 2**20,
            "netrep_gram_gb_needed": 2 * 8 * n * n / 1e9}


def bench_procrustes(n: int, d: int) -> dict:
    from repscope.measures.similarity import procrustes_angular

    reps = layer_chain(2, n, d, seed=2)
    X, Y = reps["layer00"], reps["layer01"]
    ours, t_ours = timed(procrustes_angular, X, Y)
    row = {"section": "procrustes", "n": n, "d": d, "repscope_s": t_ours, "value": ours.value}
    try:
        from netrep.metrics import LinearMetric
    except ImportError:
        row["netrep"] = "not installed"
        return row
    theirs, t_theirs = timed(LinearMetric(alpha=1.0, score_method="angular").fit_score, X, Y)
    row.update({"netrep_s": t_theirs, "speedup": t_theirs / t_ours,
                "max_abs_diff": abs(theirs - ours.value)})
    # alpha = 0 (full whitening): the CCA end of the shape family must agree too.
    from repscope.measures.similarity import shape_alpha

    cca_theirs = LinearMetric(alpha=0.0, score_method="angular").fit_score(X, Y)
    row["alpha0_abs_diff"] = abs(cca_theirs - shape_alpha(X, Y, alpha=0.0).value)
    return row


def bench_rsa(n: int, d: int, layers: int) -> dict:
    from repscope.measures.similarity import similarity_matrix

    reps = layer_chain(layers, n, d, seed=3)
    M, t_ours = timed(similarity_matrix, reps, "rsa", diagonal=False)
    row = {"section": "rsa", "n": n, "d": d, "layers": layers, "repscope_s": t_ours}
    try:
        import rsatoolbox
    except ImportError:
        row["rsatoolbox"] = "not installed"
        return row
    t = time.perf_counter()
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method="euclidean")
            for A in reps.values()]
    names = list(reps)
    worst = 0.0
    for i in range(layers):
        for j in range(i + 1, layers):
            theirs = float(rsatoolbox.rdm.compare(rdms[i], rdms[j], method="spearman")[0, 0])
            worst = max(worst, abs(theirs - M.values[i, j]))
    t_theirs = time.perf_counter() - t
    row.update({"rsatoolbox_s": t_theirs, "speedup": t_theirs / t_ours,
                "max_abs_diff": worst, "pairs": len(names) * (len(names) - 1) // 2})
    return row


def clock(fn, *args, **kw):
    """(result, wall seconds, process CPU seconds: all threads)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def qr_reference(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Canonical correlations by Householder QR (LAPACK) of each centred matrix, SVD of Qx^T Qy."""
    qx, _ = np.linalg.qr(X - X.mean(0))  # (n, d_x)
    qy, _ = np.linalg.qr(Y - Y.mean(0))  # (n, d_y)
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def score_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of two score matrices (n, k)."""
    A, B = A - A.mean(0), B - B.mean(0)
    return np.abs((A * B).sum(0) / np.sqrt((A * A).sum(0) * (B * B).sum(0)))


def cca_pair(n: int, d: int, ill: bool, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two layers of :func:`layer_chain`; ``ill``: columns scaled 1e-3..1e3 and offset +1e4."""
    reps = layer_chain(2, n, d, seed=seed)
    X, Y = reps["layer00"], reps["layer01"]
    if ill:
        rng = np.random.default_rng(seed + 1)
        X = X * rng.permutation(np.logspace(-3, 3, d)) + 1e4
        Y = Y * rng.permutation(np.logspace(-3, 3, d)) + 1e4
    return X, Y


def _competitors(X: np.ndarray, Y: np.ndarray, k_sk: int, skip: frozenset = frozenset()) -> dict:
    """Each installed competitor's canonical correlations / scalars, with wall and CPU time."""
    out: dict = {}
    try:
        from sklearn.cross_decomposition import CCA as SkCCA
    except ImportError:
        out["sklearn"] = "not installed"
    else:
        if k_sk > 0 and "sklearn" not in skip:
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                (sx, sy), t, c = clock(SkCCA(n_components=k_sk, max_iter=500).fit_transform, X, Y)
            rho = score_correlations(sx, sy)
            out["sklearn"] = {"rho": rho, "wall_s": t, "cpu_s": c, "components": k_sk,
                              "warnings": sorted({str(w.message)[:80] for w in caught})}
    try:
        from cca_zoo.linear import CCA as ZooCCA
    except ImportError:
        out["cca_zoo"] = "not installed"
    else:
        k = min(X.shape[1], Y.shape[1])

        def zoo():
            zx, zy = ZooCCA(n_components=k).fit_transform([X, Y])
            return score_correlations(zx, zy)

        rho, t, c = clock(zoo)
        out["cca_zoo"] = {"rho": rho, "wall_s": t, "cpu_s": c, "components": k}
    try:
        import repsim
    except ImportError:
        out["repsim"] = "not installed"
    else:
        for name, fn in [("cca_pillai", lambda: repsim.cca([X, Y], "pillai")),
                         ("pwcca", lambda: repsim.pwcca([X, Y])),
                         ("svcca_pillai", lambda: repsim.svcca([X, Y], "pillai"))]:
            if f"repsim_{name}" in skip:
                out[f"repsim_{name}"] = "skipped (--cca-skip)"
                continue
            M, t, c = clock(fn)
            out[f"repsim_{name}"] = {"value": float(M[0, 1]), "wall_s": t, "cpu_s": c}
    return out


def bench_cca(n: int, d: int, k_sk: int, ill: bool, skip: frozenset = frozenset()) -> dict:
    """repscope's CCA family vs sklearn, cca-zoo, repsim and a Householder-QR reference."""
    from repscope.measures.similarity import cca_mean, pwcca, svcca

    X, Y = cca_pair(n, d, ill)
    ref, t_ref, c_ref = clock(qr_reference, X, Y)
    ours: dict = {}
    for _ in range(2):  # best of 2 (the first call also pays torch's warm-up)
        for name, fn in [("cca_mean", cca_mean), ("svcca", svcca), ("pwcca", pwcca)]:
            e, t, c = clock(fn, X, Y)
            if name not in ours or t < ours[name][1]:
                ours[name] = (e, t, c)
    rho = ours["cca_mean"][0].diagnostics["correlations"]
    row = {"section": "cca_ill" if ill else "cca", "n": n, "d": d,
           "qr_reference_s": t_ref, "qr_reference_cpu_s": c_ref,
           "repscope_rho_vs_qr": float(np.max(np.abs(rho - ref))),
           "repscope_mean_vs_qr": abs(ours["cca_mean"][0].value - float(ref.mean())),
           "svcca_ranks": [ours["svcca"][0].diagnostics["rank_x"],
                           ours["svcca"][0].diagnostics["rank_y"]]}
    for name, (e, t, c) in ours.items():
        row[f"repscope_{name}"] = {"value": e.value, "wall_s": t, "cpu_s": c}
    pw_sym = (ours["pwcca"][0].value + pwcca(Y, X).value) / 2  # repsim averages directions
    scalar_ref = {"repsim_cca_pillai": ours["cca_mean"][0].value, "repsim_pwcca": pw_sym}
    for lib, r in _competitors(X, Y, k_sk, skip).items():
        if isinstance(r, str):
            row[lib] = r
            continue
        if "rho" in r:
            theirs = r.pop("rho")  # (k,)
            k = len(theirs)
            r["rho_vs_repscope"] = float(np.max(np.abs(theirs - rho[:k])))
            r["rho_vs_qr"] = float(np.max(np.abs(theirs - ref[:k])))
        elif lib in scalar_ref:
            r["vs_repscope"] = abs(r["value"] - scalar_ref[lib])
        if lib == "repsim_cca_pillai":
            r["vs_qr_mean"] = abs(r["value"] - float(ref.mean()))
        if lib == "repsim_svcca_pillai" and isinstance(row.get("repsim_cca_pillai"), dict):
            # not compared: see benchmarks/similarity.md
            r["minus_repsim_cca"] = abs(r["value"] - row["repsim_cca_pillai"]["value"])
        if "wall_s" in r and not ill:
            base = "cca_mean" if lib != "repsim_pwcca" else "pwcca"
            if lib == "repsim_svcca_pillai":
                base = "svcca"
            r["speedup"] = r["wall_s"] / ours[base][1]
        row[lib] = r
    return row

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--netrep-pairs", type=int, default=6,
                    help="pairs netrep is timed on in the full CKA matrix (0 = all 66)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--sections", default="cka_matrix,cka_large,procrustes,rsa,cca")
    ap.add_argument("--sklearn-components", type=int, default=8,
                    help="components scikit-learn's iterative CCA fits in the cca section")
    ap.add_argument("--cca-skip", default=None,
                    help="comma list of cca competitors not to run: sklearn, repsim_cca_pillai, "
                         "repsim_pwcca, repsim_svcca_pillai; prefixed 'ill:', only in the ill-conditioned "
                         "case (default: the repsim ones at full size, where one call runs > 10 min; "
                         "none with --quick; pass '' to run every competitor)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    sections = set(args.sections.split(","))
    rows = []
    q = args.quick
    if args.cca_skip is None:
        args.cca_skip = "" if q else "repsim_cca_pillai,repsim_pwcca,repsim_svcca_pillai"
    if "cka_matrix" in sections:
        rows.append(bench_cka_matrix(2000 if q else 10_000, 64 if q else 384, 4 if q else 12,
                                     None if q or args.netrep_pairs == 0 else args.netrep_pairs,
                                     args.device))
    if "cka_large" in sections:
        rows.append(bench_cka_large(5000 if q else 50_000, 128 if q else 768))
    if "procrustes" in sections:
        rows.append(bench_procrustes(2000 if q else 20_000, 64 if q else 384))
    if "rsa" in sections:
        rows.append(bench_rsa(300 if q else 2000, 32 if q else 384, 3 if q else 6))
    if "cca" in sections:
        for ill in (False, True):
            rows.append(bench_cca(2000 if q else 20_000, 64 if q else 384,
                                  args.sklearn_components, ill,
                                  frozenset(x.removeprefix("ill:") for x in args.cca_skip.split(",")
                                            if ill or not x.startswith("ill:"))))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "env_threads": {v: os.environ.get(v) for v in
                            ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "load_avg_1m_start": load_start, "load_avg_1m": os.getloadavg()[0],
            "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
