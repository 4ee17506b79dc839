"""Streaming covariance spectrum of a large ActivationStore in bounded memory.

    python benchmarks/spectral.py            # 1,000,000 x 768 rows (writes ~3 GB to --dir)
    python benchmarks/spectral.py --quick    # 100,000 x 768 rows, plus an exactness check

Step 1 writes a float32 store with a planted power-law spectrum (``lambda_r = r^-alpha``, plus
a constant offset) through ``ActivationStore.create``. Step 2 runs in a FRESH child process,
so its peak RSS measures only the streaming pass: it opens the store and computes spectrum,
power_law_alpha, effective_rank, isoscore and outlier_dimensions in one pass over
``store.iter_batches`` with ``measures_from_batches`` (float64 Moments accumulation). It
reports rows/s, wall time, peak RSS, and the fitted exponent against the planted one. With
``--quick`` (or ``--check``) it also compares the streamed eigenvalues with the in-memory
batch computation on the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEASURES = ["spectrum", "power_law_alpha", "effective_rank", "isoscore", "outlier_dimensions"]
LAYER = "layer"


def planted_scales(d: int, alpha: float) -> np.ndarray:
    return np.arange(1, d + 1, dtype=np.float64) ** (-alpha / 2)  # (d,) standard deviations


def write_store(path: Path, rows: int, d: int, alpha: float, chunk: int, seed: int) -> float:
    from repscope.capture.store import ActivationStore

    t0 = time.perf_counter()
    scales = planted_scales(d, alpha).astype(np.float32)
    offset = np.random.default_rng(seed + 1).normal(size=d).astype(np.float32)
    writer = ActivationStore.create(path, layers={LAYER: d}, dtype="float32", shard_rows=65536,
                                    identity={"benchmark": "spectral", "rows": rows, "d": d,
                                              "alpha": alpha, "seed": seed})
    with writer:
        for i, lo in enumerate(range(0, rows, chunk)):
            m = min(chunk, rows - lo)
            rng = np.random.default_rng([seed, i])
            X = rng.standard_normal((m, d), dtype=np.float32) * scales + offset  # (m, d)
            meta = {"doc_id": np.arange(lo, lo + m), "position": np.zeros(m, np.int32),
                    "token_id": np.zeros(m, np.int32)}
            writer.append({LAYER: X}, meta, chunk=i)
        writer.finish()
    return time.perf_counter() - t0


def _rss_anon_mb() -> float:
    """Anonymous resident memory of this process (heap, arrays; not file-backed pages), MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path, batch_size: int, check: bool) -> dict:
    """Child-process side: one streaming pass, then peak RSS.

    ``peak_rss_mb`` (ru_maxrss) counts every resident page, including the file-backed pages of
    memory-mapped shards; ``peak_anon_mb`` samples the anonymous memory after every batch.
    """
    import torch

    from repscope.capture.store import ActivationStore
    from repscope.measures.spectrum import measures_from_batches, spectrum

    store = ActivationStore.open(path)
    peak_anon = [0.0]

    def batches():
        for X in store.iter_batches(LAYER, batch_size=batch_size):
            yield X
            peak_anon[0] = max(peak_anon[0], _rss_anon_mb())

    t0, c0 = time.perf_counter(), time.process_time()
    out = measures_from_batches(MEASURES, batches())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    res = {
        "rows": store.n_rows, "d": store.dim(LAYER), "batch_size": batch_size,
        "seconds": seconds, "rows_per_s": store.n_rows / seconds, "peak_rss_mb": peak_mb,
        "peak_anon_mb": peak_anon[0], "cpu_seconds": cpu, "rows_per_cpu_s": store.n_rows / cpu,
        "torch_threads": torch.get_num_threads(),
        "values": {k: float(v.value) for k, v in out.items()},
        "fit_range": list(out["power_law_alpha"].diagnostics["fit_range"]),
    }
    if check:
        ev_stream = out["spectrum"].diagnostics["eigenvalues"]
        ev_batch = spectrum(store.read(LAYER).astype(np.float64)).diagnostics["eigenvalues"]
        res["max_rel_diff_vs_batch"] = float(np.max(np.abs(ev_stream - ev_batch) / ev_batch[0]))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 rows and the exactness check")
    ap.add_argument("--rows", type=int, default=None, help="rows (default 1,000,000; quick 100,000)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--alpha", type=float, default=1.0, help="planted power-law exponent")
    ap.add_argument("--batch-size", type=int, default=16384)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the store (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    ap.add_argument("--check", action="store_true", help="compare with the in-memory batch result")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--_measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._measure is not None:  # child process
        print(json.dumps(measure(args._measure, args.batch_size, args.check)))
        return 0

    rows = args.rows or (100_000 if args.quick else 1_000_000)
    base = Path(args.dir or tempfile.mkdtemp(prefix="repscope-spectral-"))
    path = base / "store"
    try:
        write_s = write_store(path, rows, args.dim, args.alpha, chunk=16384, seed=0)
        cmd = [sys.executable, __file__, "--_measure", str(path), "--batch-size", str(args.batch_size)]
        if args.quick or args.check:
            cmd.append("--check")
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(base if args.dir is None else path, ignore_errors=True)
    res.update({"write_seconds": write_s, "planted_alpha": args.alpha,
                "machine": f"{platform.machine()} {os.cpu_count()} logical cores, {platform.platform()}",
                "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    _print(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    ok = res["peak_rss_mb"] < 2048 and abs(res["values"]["power_law_alpha"] - args.alpha) < 0.05
    if "max_rel_diff_vs_batch" in res:
        ok &= res["max_rel_diff_vs_batch"] < 1e-10
    return 0 if ok else 1


def _print(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"streaming spectrum of {res['rows']:,} x {res['d']} float32 rows from an ActivationStore")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("measures in one pass", ", ".join(MEASURES))
    t.add_row("stream seconds", f"{res['seconds']:.1f}")
    t.add_row("rows / s (wall)", f"{res['rows_per_s']:,.0f}")
    t.add_row("CPU seconds (all threads) / rows per CPU-second",
              f"{res['cpu_seconds']:.1f} / {res['rows_per_cpu_s']:,.0f}")
    t.add_row("peak RSS (child, MB; incl. mapped shard pages)", f"{res['peak_rss_mb']:.0f}")
    t.add_row("peak anonymous memory (child, MB)", f"{res['peak_anon_mb']:.0f}")
    t.add_row("batch size / torch threads", f"{res['batch_size']} / {res['torch_threads']}")
    t.add_row("store write seconds", f"{res['write_seconds']:.1f}")
    t.add_row("power_law_alpha (planted)", f"{res['values']['power_law_alpha']:.4f} ({res['planted_alpha']})")
    t.add_row("effective_rank / isoscore", f"{res['values']['effective_rank']:.2f} / {res['values']['isoscore']:.4f}")
    if "max_rel_diff_vs_batch" in res:
        t.add_row("max |ev_stream - ev_batch| / ev_1", f"{res['max_rel_diff_vs_batch']:.2e}")
    t.add_row("load average (1, 5, 15 min)", ", ".join(f"{x:.1f}" for x in res["load_average"]))
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
