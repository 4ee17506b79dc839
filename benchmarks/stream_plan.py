"""Map + merge vs one task: ``repscope analyze`` over every row of a large store.

Writes a synthetic ActivationStore (``--rows`` x ``--dim`` float32, 2 layers, shards of 16,384
rows), then runs the same plan (``max_rows=None``, the streamable covariance panel) three ways:

- **one task per layer**: ``stream_rows`` larger than the store, so each layer's rows are
  loaded at once (the behaviour without streaming);
- **map + merge, local**: ranges of ``--stream-rows`` rows mapped in this process;
- **map + merge, process pool**: the same ranges on ``--workers`` spawned workers.

Reported: wall time, the driver's peak traced allocation (``tracemalloc``; numpy reports its
buffers to it; for the process pool the map runs in the workers, so this is the driver's
share only) and the largest relative difference of the values from the one-task run.

    python benchmarks/stream_plan.py            # 400,000 x 256 rows per layer
    python benchmarks/stream_plan.py --quick    # smoke run: 40,000 x 64
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

MEASURES = ("spectrum", "effective_rank", "power_law_alpha", "stable_rank", "anisotropy",
            "isoscore")
LAYERS = ("layer.0", "layer.1")


def make_store(path: Path, rows: int, dim: int, seed: int = 0):
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(seed)
    writer = ActivationStore.create(path, layers={name: dim for name in LAYERS}, shard_rows=16384,
                                    identity={"bench": "stream_plan", "rows": rows, "dim": dim})
    scales = 1.0 / np.arange(1, dim + 1) ** 0.5  # a decaying spectrum
    chunk = 20000
    for c, lo in enumerate(range(0, rows, chunk)):
        b = min(chunk, rows - lo)
        acts = {name: (rng.normal(size=(b, dim)) * scales + 0.1 * i).astype(np.float32)
                for i, name in enumerate(LAYERS)}
        writer.append(acts, {"doc_id": np.full(b, c), "position": np.arange(b),
                             "token_id": np.zeros(b, dtype=np.int64)}, chunk=c)
    return writer.finish()


def run(store, out: Path, **kw) -> tuple[float, float, dict[str, float]]:
    from repscope.analysis.db import load_results
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    cfg = AnalyzeConfig(store=store.path, out=out, max_rows=None, measures=MEASURES,
                        pairs="none", report=False, **kw)
    tracemalloc.start()
    t0 = time.perf_counter()
    res = analyze(cfg)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.n_failed == 0, "a measure failed"
    df = load_results(res.db_path)
    return wall, peak / 2**20, dict(zip(df.key, df.value, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 40,000 x 64")
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--stream-rows", type=int, default=65536)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.dim, args.stream_rows = 40_000, 64, 16384
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = make_store(tmp / "warm", 2000, 8)  # imports and registry load, not timed
        run(warm, tmp / "warm-out", stream_rows=10**12)
        store = make_store(tmp / "store", args.rows, args.dim)
        cases = [("one task per layer", {"stream_rows": 10**12}),
                 ("map + merge, local", {"stream_rows": args.stream_rows}),
                 (f"map + merge, process x{args.workers}",
                  {"stream_rows": args.stream_rows, "executor": "process",
                   "workers": args.workers})]
        results = []
        for i, (name, kw) in enumerate(cases):
            results.append((name, *run(store, tmp / f"out{i}", **kw)))
    ref = results[0][3]
    n_ranges = -(-args.rows // max(args.stream_rows, 16384))
    print(f"# stream_plan benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"(shared machine), torch threads {__import__('torch').get_num_threads()}")
    print(f"store: {args.rows:,} rows x {args.dim} float32 x {len(LAYERS)} layers; "
          f"{len(MEASURES)} streamable measures; ranges of ~{args.stream_rows:,} rows "
          f"(~{n_ranges} map tasks per layer)\n")
    print("| run | wall (s) | driver peak traced memory (MiB) | max rel. diff vs one task |")
    print("|---|---:|---:|---:|")
    for name, wall, peak, vals in results:
        diff = max(abs(vals[k] - v) / max(abs(v), 1e-300) for k, v in ref.items())
        print(f"| {name} | {wall:.2f} | {peak:.0f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
