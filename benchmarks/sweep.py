"""Sweep benchmark: one plan of >= 200 tasks on the local, process-pool and Ray executors.

The "store" is one float32 ``.npy`` file per layer on disk; each task (layer x measure) opens
its own layer memory-mapped and computes one covariance-spectrum measure, as a real sweep's
tasks read their rows from an ActivationStore, so no array travels through the driver.
Reported per executor and worker count: worker start-up, sweep wall time, tasks/s, speed-up
over one worker, concurrency (the tasks' own compute seconds over the wall time: how many ran
at once on average) and the scheduling overhead per task measured with no-op tasks. Every
executor's results are checked against the local executor's (rtol 1e-9).

    python benchmarks/sweep.py            # 25 layers x 8 measures = 200 tasks
    python benchmarks/sweep.py --quick    # smoke run: 5 layers x 8 measures
    python benchmarks/sweep.py --executors local,process   # without Ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from repscope.analysis.executors import make_executor

MEASURES = ("participation_ratio", "effective_rank", "stable_rank", "top1_share", "pca90",
            "spectral_entropy", "anisotropy", "mean_norm")


def layer_measure(task: tuple[str, str]) -> float:
    """One measure of one layer, reading the layer's rows from disk."""
    path, measure = task
    X = np.load(path, mmap_mode="r").astype(np.float64)  # (n, d)
    if measure == "mean_norm":
        return float(np.linalg.norm(X, axis=1).mean())
    if measure == "anisotropy":  # mean cosine similarity over 1,000 rows
        U = X[:1000] / np.linalg.norm(X[:1000], axis=1, keepdims=True)  # (m, d)
        G = U @ U.T  # (m, m)
        m = G.shape[0]
        return float((G.sum() - m) / (m * (m - 1)))
    Xc = X - X.mean(axis=0)  # (n, d)
    ev = np.clip(np.linalg.eigvalsh(Xc.T @ Xc / (len(X) - 1))[::-1], 0, None)  # (d,)
    p = ev / ev.sum()
    if measure == "participation_ratio":
        return float(ev.sum() ** 2 / (ev**2).sum())
    if measure == "effective_rank":  # Roy and Vetterli (2007)
        return float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    if measure == "stable_rank":
        return float(ev.sum() / ev[0])
    if measure == "top1_share":
        return float(p[0])
    if measure == "pca90":
        return float(np.searchsorted(np.cumsum(p), 0.9) + 1)
    if measure == "spectral_entropy":
        return float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    raise ValueError(f"unknown measure {measure!r}")


def noop(task: int) -> int:
    return task


def make_store(root: Path, layers: int, n: int, d: int) -> list[str]:
    """One (n, d) float32 file per layer with a layer-dependent power-law spectrum."""
    rng = np.random.default_rng(0)
    paths = []
    for layer in range(layers):
        scales = np.arange(1, d + 1) ** -(0.5 + layer / layers)  # (d,)
        X = (rng.standard_normal((n, d)) * scales).astype(np.float32)  # (n, d)
        path = root / f"layer{layer:02d}.npy"
        np.save(path, X)
        paths.append(str(path))
    return paths


def run_one(kind: str, workers: int, tasks: list, noops: int) -> dict:
    options = {"threads_per_worker": 1} if kind == "process" else {}
    if kind == "ray":
        options = {"num_cpus": workers}
    t0 = time.perf_counter()
    ex = make_executor(kind, workers=None if kind == "local" else workers, **options)
    try:
        list(ex.map(noop, range(2 * workers), key=str))  # start the workers
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs = list(ex.map(layer_measure, tasks, key=lambda t: f"{Path(t[0]).stem}/{t[1]}"))
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(ex.map(noop, range(noops), key=str))
        noop_wall = time.perf_counter() - t0
    finally:
        ex.close()
    failed = [o for o in outs if not o.ok]
    if failed:
        raise RuntimeError(f"{kind}: {len(failed)} tasks failed; first: {failed[0].error}")
    return {
        "executor": kind, "workers": workers, "startup_s": startup, "wall_s": wall,
        "tasks": len(outs), "tasks_per_s": len(outs) / wall,
        "task_compute_s": sum(o.seconds for o in outs),
        "overhead_ms_per_task": 1000 * noop_wall / noops,
        "results": {o.key: o.result for o in outs},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (40 tasks)")
    ap.add_argument("--executors", default="local,process,ray")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    layers, n, d, noops = (5, 2000, 128, 200) if args.quick else (25, 4000, 256, 1000)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # the local executor runs single-threaded like each worker
    import repscope._validate  # noqa: F401  (the driver's one-off torch import, not start-up)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="repscope-sweep-") as tmp:
        paths = make_store(Path(tmp), layers, n, d)
        tasks = [(p, m) for p in paths for m in MEASURES]
        for kind in args.executors.split(","):
            for workers in ((1,) if kind == "local" else (1, 2)):
                row = run_one(kind, workers, tasks, noops)
                rows.append(row)
                print(f"{kind:8s} workers={workers} startup={row['startup_s']:6.2f}s "
                      f"wall={row['wall_s']:6.2f}s tasks/s={row['tasks_per_s']:7.1f} "
                      f"overhead={row['overhead_ms_per_task']:.2f} ms/task", flush=True)
    ref = rows[0]["results"]
    for row in rows:
        got = row.pop("results")
        assert got.keys() == ref.keys()
        np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), rtol=1e-9)
    base = {r["executor"]: r["wall_s"] for r in rows if r["workers"] == 1}
    print(f"\n{len(tasks)} tasks ({layers} layers x {len(MEASURES)} measures, n={n}, d={d}), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; results identical "
          f"across executors (rtol 1e-9)\n")
    print("| executor | workers | start-up (s) | sweep wall (s) | tasks/s | speed-up | "
          "concurrency | overhead (ms/task) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = base[r["executor"]] / r["wall_s"]
        r["concurrency"] = r["task_compute_s"] / r["wall_s"]  # tasks running at once, on average
        print(f"| {r['executor']} | {r['workers']} | {r['startup_s']:.2f} | {r['wall_s']:.2f} | "
              f"{r['tasks_per_s']:.1f} | {r['speedup']:.2f}x | {r['concurrency']:.2f} | "
              f"{r['overhead_ms_per_task']:.2f} |")
    if args.out:
        meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.platform(), "cpus": os.cpu_count(),
                "load_average_1m": os.getloadavg()[0], "layers": layers, "n": n, "d": d,
                "tasks": len(tasks), "noop_tasks": noops}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
