"""Intrinsic-dimension benchmark: repscope vs scikit-dimension and DADApy on the same data.

Data: a Gaussian of intrinsic dimension 10 in 768 ambient dimensions (float32, seeded), the
case of issue 3. Each tool runs in its own subprocess (so peak RSS is its own), on the same
points, and the driver prints and writes a Markdown table.

* repscope: one exact neighbour table (k = 32) + TwoNN + MLE (k = 20) + GRIDE (with its
  multiscale curve) + local MLE from that table, with the default search strategy ("auto":
  certified low-rank pruning when the spectrum says it pays, here the data has rank 10).
* repscope_brute: the same panel with ``knn(..., strategy="brute")`` (full 768-dimensional
  products), in its own process of the same run.
* matmul: a float32 product of the same size, X @ X.T computed in the same row blocks as the
  neighbour search (the hardware limit for exact search); timed in its own process (peak RSS)
  and also inside the repscope process right before and after the search (same load), which
  is what the kNN / matmul ratio uses.
* skdim: TwoNN + MLE (+ its GRIDE where the installed version has one), each fitted on X.
* dadapy: TwoNN (compute_id_2NN) + GRIDE scaling, on a ``Data`` object.

Competitors are NOT repscope dependencies: install them in a separate venv
(``benchmarks/requirements-id.txt``) and run this script with that venv's python.

    python benchmarks/id.py --quick            # n = 5000
    python benchmarks/id.py --n 20000 50000    # the issue's sizes
    python benchmarks/id.py --n 20000 --tools repscope repscope_brute   # repscope only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np

ID, AMBIENT, SEED = 10, 768, 0


def _data(n: int) -> np.ndarray:
    from repscope.data.manifolds import gaussian_subspace

    return gaussian_subspace(n, ID, AMBIENT, seed=SEED).X.astype(np.float32)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ workers


def work_repscope(X: np.ndarray, strategy: str = "auto") -> dict:
    import warnings

    import scipy.special  # noqa: F401  imports stay outside the timed region, as for dadapy and skdim

    from repscope.measures.dimension import gride, local_mle, mle, twonn
    from repscope.neighbors import knn

    warnings.simplefilter("ignore")
    mm_before = _blocked_matmul(X)
    t0, c0 = time.perf_counter(), time.process_time()
    nb = knn(X, 32, strategy=strategy)
    t_knn, c_knn = time.perf_counter() - t0, time.process_time() - c0
    est = {
        "twonn": twonn(X, neighbors=nb).value,
        "twonn_mle": twonn(X, fit="mle", neighbors=nb).value,
        "mle_k20": mle(X, k=20, neighbors=nb).value,
        "gride_n1_1": gride(X, n1=1, neighbors=nb).value,
        "gride_n1_4": gride(X, n1=4, neighbors=nb).value,
        "local_mle_median": local_mle(X, k=20, neighbors=nb).value,
    }
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    mm_after = _blocked_matmul(X)
    # The matmul reference timed in this process right before and after the search (same load),
    # as the mean of the two runs: the kNN / matmul ratio is taken against it.
    return {"seconds": seconds, "panel_cpu_seconds": cpu_seconds, "knn_seconds": t_knn,
            "knn_cpu_seconds": c_knn,
            "mm_seconds": (mm_before[0] + mm_after[0]) / 2,
            "mm_cpu_seconds": (mm_before[1] + mm_after[1]) / 2, "estimates": est,
            "search": {"strategy": nb.strategy, "rank": nb.rank,
                       "fallback_fraction": nb.fallback_fraction}}


def work_repscope_brute(X: np.ndarray) -> dict:
    return work_repscope(X, strategy="brute")


def _blocked_matmul(X: np.ndarray) -> tuple[float, float]:
    """(wall s, CPU s) of the float32 product X @ X.T in the search's row blocks."""
    import torch

    from repscope.neighbors import DEFAULT_MEMORY_BUDGET, _blocks

    Xt = torch.from_numpy(X)
    n = Xt.shape[0]
    blocks = list(_blocks(n, n, DEFAULT_MEMORY_BUDGET, 4))
    out = torch.empty((blocks[0][1] - blocks[0][0], n), dtype=torch.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for lo, hi in blocks:
        torch.mm(Xt[lo:hi], Xt.T, out=out[: hi - lo])
    return time.perf_counter() - t0, time.process_time() - c0


def work_matmul(X: np.ndarray) -> dict:
    return {"seconds": _blocked_matmul(X)[0], "estimates": {}}


def work_skdim(X: np.ndarray) -> dict:
    import skdim

    t0 = time.perf_counter()
    # MLE: neighbourhood-based with 20 neighbours and the MacKay-Ghahramani combination
    # (comb="mle"), i.e. repscope's mle(k=20); GRIDE at n1 = 1 and 4 (n2 = 2 n1).
    est = {"twonn": float(skdim.id.TwoNN().fit(X).dimension_),
           "mle_k20": float(skdim.id.MLE().fit(X, n_neighbors=20, comb="mle").dimension_)}
    if hasattr(skdim.id, "GRIDE"):
        est["gride_n1_4"] = float(skdim.id.GRIDE(n1=4).fit(X).dimension_)
    return {"seconds": time.perf_counter() - t0, "estimates": est}


def work_dadapy(X: np.ndarray) -> dict:
    from dadapy import Data

    t0 = time.perf_counter()
    data = Data(X.astype(np.float64), maxk=32, verbose=False)
    id2, _, _ = data.compute_id_2NN()
    ids, _, _ = data.return_id_scaling_gride(range_max=16)
    est = {"twonn": float(id2), "gride_n1_1": float(ids[0]), "gride_n1_4": float(ids[2])}
    return {"seconds": time.perf_counter() - t0, "estimates": est}


WORKERS = {"repscope": work_repscope, "repscope_brute": work_repscope_brute,
           "matmul": work_matmul, "skdim": work_skdim, "dadapy": work_dadapy}
PANELS = ("repscope", "repscope_brute")


# ------------------------------------------------------------------------------ driver


def _run_worker(tool: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", tool, "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: dict) -> str:
    lines = ["| n | tool | wall s | CPU s | kNN wall s | kNN CPU s | search | peak RSS MB | estimates |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, per in results.items():
        for tool, r in per.items():
            if "error" in r:
                lines.append(f"| {n} | {tool} | error: {r['error']} | | | | | | |")
                continue
            est = ", ".join(f"{k}={v:.3f}" for k, v in r["estimates"].items())
            knn_s = f"{r['knn_seconds']:.2f} | {r['knn_cpu_seconds']:.2f}" if "knn_seconds" in r else " | "
            sr = r.get("search")
            search = (f"{sr['strategy']} r={sr['rank']} fallback={sr['fallback_fraction']:.3f}"
                      if sr else "")
            lines.append(f"| {n} | {tool} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {knn_s} "
                         f"| {search} | {r['peak_mb']:.0f} | {est} |")
    return "\n".join(lines)


def _ratios(results: dict) -> str:
    out = []
    for n, per in results.items():
        for panel in PANELS:
            rs = per.get(panel, {})
            if "seconds" not in rs:
                continue
            line = [f"n={n} {panel}:"]
            if "mm_seconds" in rs:
                line.append(f"kNN / matmul in the same process = "
                            f"{rs['knn_seconds'] / rs['mm_seconds']:.2f} (wall), "
                            f"{rs['knn_cpu_seconds'] / rs['mm_cpu_seconds']:.2f} (CPU)")
            if "seconds" in per.get("matmul", {}):
                mm = per["matmul"]
                line.append(f"kNN / matmul = {rs['knn_seconds'] / mm['seconds']:.2f} (wall), "
                            f"{rs['knn_cpu_seconds'] / mm['cpu_seconds']:.2f} (CPU)")
            for tool in ("skdim", "dadapy"):
                if "seconds" in per.get(tool, {}):
                    line.append(f"{tool} / panel = {per[tool]['seconds'] / rs['seconds']:.1f}x (wall), "
                                f"{per[tool]['cpu_seconds'] / rs['cpu_seconds']:.1f}x (CPU)")
                    for key, v in per[tool]["estimates"].items():
                        mine = rs["estimates"].get(key)
                        if mine is not None:
                            line.append(f"{key} diff vs {tool} = {100 * (mine - v) / v:+.2f}%")
            out.append("; ".join(line))
        a, b = per.get("repscope", {}), per.get("repscope_brute", {})
        if "seconds" in a and "seconds" in b:
            out.append(f"n={n}: brute / auto = {b['knn_seconds'] / a['knn_seconds']:.2f}x kNN wall, "
                       f"{b['knn_cpu_seconds'] / a['knn_cpu_seconds']:.2f}x kNN CPU, "
                       f"{b['seconds'] / a['seconds']:.2f}x panel wall; same estimates: "
                       f"{a['estimates'] == b['estimates']}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 5000 only")
    ap.add_argument("--n", type=int, nargs="+", default=[20000, 50000])
    ap.add_argument("--tools", nargs="+", default=list(WORKERS), choices=list(WORKERS))
    ap.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.worker:
        X = _data(args.n[0])
        c0 = time.process_time()
        res = WORKERS[args.worker](X)
        res["cpu_seconds"] = res.pop("panel_cpu_seconds", time.process_time() - c0)
        res["peak_mb"] = _peak_mb()
        print(json.dumps(res))
        return
    sizes = [5000] if args.quick else args.n
    import torch

    meta = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "machine": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "load_avg": os.getloadavg()}
    results: dict = {}
    for n in sizes:
        results[n] = {}
        for tool in args.tools:
            results[n][tool] = _run_worker(tool, n)
            print(f"n={n} {tool}: {results[n][tool]}", flush=True)
    print(json.dumps(meta))
    print(_table(results))
    print(_ratios(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
