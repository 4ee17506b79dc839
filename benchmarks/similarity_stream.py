"""Streamed pair measures from shared pair moments vs the in-memory matrix path.

Writes a synthetic ActivationStore (``--layers`` layers of ``--rows`` x ``--dim`` float32,
shards of 16,384 rows), then runs ``repscope analyze`` over every row (``max_rows=None``,
adjacent layer pairs) with the six moment-based pair measures (cka_linear,
procrustes_angular, cca_mean, svcca, pwcca, shape_alpha) three ways:

- **matrix tasks**: ``stream_rows`` larger than the store, so each measure loads every layer
  whole and prepares it (the behaviour of a non-streamable measure);
- **one stream task, shared states**: map over row ranges, ONE moments state per layer pair
  for all six measures (this module's design);
- **one pass per measure**: six analyze runs of one measure each, i.e. six passes over the
  store, one state per measure and pair (what one stream task per measure would cost).

Reported: wall time, the driver's peak traced allocation (``tracemalloc``) and the largest
relative difference of the values from the matrix run.

    python benchmarks/similarity_stream.py            # 4 layers x 200,000 x 256
    python benchmarks/similarity_stream.py --quick    # smoke run: 4 layers x 30,000 x 64

``--map-compare`` instead times the map step alone on in-memory float32 layers, all pairs of
``--layers`` layers: one :class:`~repscope.measures.similarity.moments.BlockMoments` state (what
``repscope analyze`` keeps) vs one ``PairMomentsAccumulator`` per unordered pair (the previous
layout), interleaved A B A B (best of each), and prints both states' float64 sizes, measured
and, computed only, for a 31-layer x 576 model (SmolLM2-135M) with all pairs.

    python benchmarks/similarity_stream.py --map-compare --layers 8 --rows 65536 --dim 256
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

MEASURES = ("cka_linear", "procrustes_angular", "cca_mean", "svcca", "pwcca", "shape_alpha")


def make_store(path: Path, layers: int, rows: int, dim: int, seed: int = 0):
    """Layers that drift from a shared signal (each a noisy linear map of the previous)."""
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(seed)
    names = [f"layer.{i}" for i in range(layers)]
    writer = ActivationStore.create(path, layers={name: dim for name in names}, shard_rows=16384,
                                    identity={"bench": "similarity_stream", "rows": rows})
    maps = [rng.normal(size=(dim, dim)) / np.sqrt(dim) for _ in names]
    scales = 1.0 / np.arange(1, dim + 1) ** 0.5  # a decaying spectrum
    chunk = 20000
    for c, lo in enumerate(range(0, rows, chunk)):
        b = min(chunk, rows - lo)
        h = rng.normal(size=(b, dim)) * scales  # (b, dim)
        acts = {}
        for name, M in zip(names, maps, strict=True):
            h = h @ M + 0.3 * rng.normal(size=(b, dim)) * scales + 1.0
            acts[name] = h.astype(np.float32)
        writer.append(acts, {"doc_id": np.full(b, c), "position": np.arange(b),
                             "token_id": np.zeros(b, dtype=np.int64)}, chunk=c)
    return writer.finish()


def run(store, out: Path, measures: tuple[str, ...], **kw) -> tuple[float, float, dict]:
    from repscope.analysis.db import load_results
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    cfg = AnalyzeConfig(store=store.path, out=out, max_rows=None, measures=measures,
                        pairs="adjacent", report=False, **kw)
    tracemalloc.start()
    t0 = time.perf_counter()
    res = analyze(cfg)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if res.n_failed:
        raise RuntimeError(f"{res.n_failed} results failed in {out}")
    df = load_results(res.db_path)
    return wall, peak, {(r.measure, r.layer, r.layer_b): r.value for r in df.itertuples()}


def state_floats(L: int, d: int, diagonal: bool) -> tuple[int, int]:
    """(block, per-pair) float64 counts of the pair-moments state of all pairs of L layers of
    width d: ``(L + P) d^2 + L d`` vs ``(2 d)^2`` per unordered pair (with the diagonal pairs
    ``pairs='all'`` includes when ``diagonal``)."""
    P = L * (L - 1) // 2
    return (L + P) * d * d + L * d, (P + (L if diagonal else 0)) * 4 * d * d


def map_compare(layers: int, rows: int, dim: int, batch: int = 65536) -> None:
    """Time the map step over in-memory layers: block state vs per-pair states (A B A B)."""
    import torch

    from repscope.measures.similarity.moments import BlockMoments, PairMomentsAccumulator

    rng = np.random.default_rng(0)
    names = [f"layer.{i}" for i in range(layers)]
    h = rng.normal(size=(rows, dim))
    X = {}
    for name in names:
        h = h @ (rng.normal(size=(dim, dim)) / np.sqrt(dim)) + 0.3 * rng.normal(size=(rows, dim))
        X[name] = h.astype(np.float32)  # (rows, dim)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]  # pairs="all"

    def blocks() -> int:
        state = BlockMoments.empty(dict.fromkeys(names, dim), pairs)
        for lo in range(0, rows, batch):
            state = state.update({k: v[lo:lo + batch] for k, v in X.items()})
        return state.n_floats

    def per_pair() -> int:
        states = {(a, b): PairMomentsAccumulator.empty("cka_linear", dim, dim) for a, b in pairs}
        for lo in range(0, rows, batch):
            view = {k: v[lo:lo + batch] for k, v in X.items()}
            states = {(a, b): acc.update(view[a], view[b]) for (a, b), acc in states.items()}
        return sum(acc.moments.m2.size + acc.moments.mean.size for acc in states.values())

    times: dict[str, list[float]] = {"block": [], "per-pair": []}
    sizes = {}
    for _ in range(2):
        for label, fn in (("block", blocks), ("per-pair", per_pair)):
            t0 = time.perf_counter()
            sizes[label] = fn()
            times[label].append(time.perf_counter() - t0)
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"map step: {layers} layers x {rows:,} rows x {dim} float32, all {len(pairs)} pairs "
          f"(diagonal included), batches of {batch:,} rows; best of 2 (A B A B)\n")
    print("| state layout | map wall (s) | state float64 numbers | state MiB |")
    print("|---|---:|---:|---:|")
    for label in times:
        print(f"| {label} | {min(times[label]):.2f} | {sizes[label]:,} | "
              f"{sizes[label] * 8 / 2**20:.1f} |")
    block, pair = state_floats(31, 576, diagonal=True)
    print(f"\ncomputed, 31 layers x 576 (SmolLM2-135M), pairs='all': block {block * 8 / 2**30:.2f} "
          f"GiB vs per-pair {pair * 8 / 2**30:.2f} GiB ({pair / block:.1f}x) per state")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--stream-rows", type=int, default=65_536)
    ap.add_argument("--quick", action="store_true", help="smoke run: 30,000 x 64, ranges of 8,192 rows")
    ap.add_argument("--map-compare", action="store_true",
                    help="time the map step only: block state vs per-pair states, all pairs")
    args = ap.parse_args()
    if args.map_compare:
        if args.quick:
            args.layers, args.rows, args.dim = 6, 20_000, 64
        map_compare(args.layers, args.rows, args.dim)
        return
    if args.quick:
        args.rows, args.dim, args.stream_rows = 30_000, 64, 8192
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        warm = make_store(tmp_path / "warm", 2, 2000, 8)  # pays the imports, untimed
        run(warm, tmp_path / "warm_out", MEASURES, stream_rows=500)
        store = make_store(tmp_path / "store", args.layers, args.rows, args.dim)
        print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
              f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
              f"load {os.getloadavg()[0]:.2f}")
        print(f"store: {args.layers} layers x {args.rows:,} rows x {args.dim} float32; "
              f"{args.layers - 1} adjacent pairs; ranges of ~{args.stream_rows:,} rows\n")
        ref_wall, ref_peak, ref = run(store, tmp_path / "matrix", MEASURES,
                                      stream_rows=10 * args.rows)
        rows = [("matrix tasks (layers loaded whole)", ref_wall, ref_peak, 0.0)]
        wall, peak, got = run(store, tmp_path / "shared", MEASURES, stream_rows=args.stream_rows)
        diff = max(abs(got[k] - v) / max(abs(v), 1e-300) for k, v in ref.items())
        rows.append(("one stream task, shared moments", wall, peak, diff))
        total, top, diff = 0.0, 0.0, 0.0
        for name in MEASURES:
            wall, peak, got = run(store, tmp_path / f"one_{name}", (name,),
                                  stream_rows=args.stream_rows)
            total, top = total + wall, max(top, peak)
            diff = max(diff, *(abs(v - ref[k]) / max(abs(ref[k]), 1e-300)
                               for k, v in got.items()))
        rows.append(("one pass per measure (6 runs)", total, top, diff))
        print("| run | wall (s) | driver peak traced memory (MiB) | max rel. diff vs matrix |")
        print("|---|---:|---:|---:|")
        for label, wall, peak, diff in rows:
            print(f"| {label} | {wall:.2f} | {peak:.0f} | {diff:.1e} |")
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
