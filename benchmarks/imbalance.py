"""Information imbalance: repscope vs DADApy (the Glielmo et al. group's library), one run.

Run in the venv of benchmarks/requirements-id.txt (it has dadapy==0.3.4):

    python benchmarks/imbalance.py            # n = 2,000 and 5,000

Cases: the paper's toy (A = 3 Gaussian coordinates, B = the first one), a rotation, independent
noise, and two noisy views of a 10-dimensional signal in 50 dimensions. For each, the paper's
Delta(A -> B) and Delta(B -> A) (``diagnostics["delta_paper_ab"]`` / ``["delta_paper_ba"]`` of
``repscope.measures.similarity.imbalance.information_imbalance``; its value is the
floor-corrected ``Delta*``, an affine function of the same mean rank) and from
DADApy's ``MetricComparisons.return_inf_imb_two_selected_coords`` (full ranks, ``maxk = n - 1``,
on the concatenated coordinates), and the time of each. Both single-threaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def cases(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    A3 = rng.normal(size=(n, 3))
    A = rng.normal(size=(n, 8))
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    S = rng.normal(size=(n, 10)) @ rng.normal(size=(10, 50))
    return {
        "toy: B = A[:, :1]": (A3, A3[:, :1].copy()),
        "rotation": (A, A @ Q),
        "independent": (A, rng.normal(size=(n, 8))),
        "two noisy views": (S + 0.5 * rng.normal(size=S.shape), S + 2.0 * rng.normal(size=S.shape)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,5000")
    args = ap.parse_args()
    import torch
    from dadapy import MetricComparisons

    import repscope
    from repscope.measures.similarity.imbalance import information_imbalance

    torch.set_num_threads(1)
    print("| n | case | repscope A->B | DADApy A->B | repscope B->A | DADApy B->A | "
          "repscope s | DADApy s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(0)
        for name, (A, B) in cases(n, rng).items():
            t0 = time.perf_counter()
            est = information_imbalance(A, B)
            t_rep = time.perf_counter() - t0
            t0 = time.perf_counter()
            mc = MetricComparisons(coordinates=np.hstack([A, B]), maxk=n - 1, n_jobs=1)
            ca, cb = list(range(A.shape[1])), list(range(A.shape[1], A.shape[1] + B.shape[1]))
            d_ab, d_ba = mc.return_inf_imb_two_selected_coords(ca, cb)
            t_dd = time.perf_counter() - t0
            dg = est.diagnostics
            print(f"| {n} | {name} | {dg['delta_paper_ab']:.5f} | {d_ab:.5f} | "
                  f"{dg['delta_paper_ba']:.5f} | {d_ba:.5f} | {t_rep:.2f} | {t_dd:.2f} |")
    import dadapy

    print(f"\nMachine: {platform.machine()} {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, repscope "
          f"{repscope.__version__}, dadapy {getattr(dadapy, '__version__', '0.3.4')}")


if __name__ == "__main__":
    main()
