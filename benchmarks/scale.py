"""Exact kNN beyond one process: time vs n and vs workers, each next to the cost model.

For each data set and n, the exact neighbour table (k = 10) is computed

* on one machine: ``repscope.neighbors.knn`` (one thread, ``strategy="brute"``, the plan the
  cost model prices; ``auto`` is also timed where noted),
* on 2 workers: ``knn_distributed`` over a local Ray of two single-thread actors,

and every distributed table is checked bit for bit against the single-machine one (where that
was run). Each time is printed beside the prediction of ``estimate_knn_cost`` with a profile
calibrated on this machine before the runs (``calibrate``, plus ``calibrate_ray`` for worker
start-up, call latency and transfer on the running Ray). Data:

* ``synthetic``: a 24-dimensional curved manifold in 384 dimensions plus noise (seeded);
* ``minilm``: token-level activations of MiniLM's last block (``encoder.layer.5``, d = 384)
  captured from the bundled pydoc corpus (documents up to 512 tokens); when more rows are asked
  for than that corpus yields, WordNet noun glosses (Debian ``wordnet-base``) are appended as
  further documents.

    python benchmarks/scale.py                       # n = 50k, 100k, 200k; both data sets
    python benchmarks/scale.py --quick               # n = 6k, 12k: smoke run
    python benchmarks/scale.py --single-max 100000   # skip one-machine runs above 100k
    python benchmarks/scale.py --project             # only the 100M-row / 64-node projection

Results go to ``--out`` (JSON) and are summarised in ``benchmarks/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from repscope.neighbors import knn  # noqa: E402
from repscope.neighbors.cost import (  # noqa: E402
    CostProfile,
    calibrate,
    calibrate_ray,
    estimate_knn_cost,
)
from repscope.neighbors.distributed import run_knn_distributed  # noqa: E402

K = 10
D = 384


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((24, D))
    Z = np.tanh(rng.standard_normal((n, 24)))
    return (Z @ basis + 0.05 * rng.standard_normal((n, D))).astype(np.float32)  # (n, d)


def minilm_rows(n: int, root: Path) -> np.ndarray:
    """The first ``n`` token rows of MiniLM's last block (captured once under ``root``)."""
    from repscope.capture import ActivationStore, CaptureConfig, run_capture
    from repscope.data.corpus import load_corpus

    store_dir = root / f"minilm-{n}"
    if not (store_dir / "manifest.json").is_file():
        docs = list(load_corpus("pydoc").documents)
        need_chars = int(n * 5.5)  # ~4.5 characters per token, with margin
        if sum(map(len, docs)) < need_chars:
            docs += wordnet_documents(need_chars - sum(map(len, docs)))
        corpus = root / f"corpus-{n}.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        cfg = CaptureConfig(model="minilm", corpus=str(corpus), layers=("encoder.layer.5",),
                            pooling="none", max_length=512, batch_size=16, out=store_dir)
        run_capture(cfg, progress=False)
    store = ActivationStore.open(store_dir)
    if store.n_rows < n:
        raise SystemExit(f"the MiniLM store has {store.n_rows} rows < {n}")
    return store.read("encoder.layer.5", slice(0, n))


def wordnet_documents(chars: int) -> list[str]:
    """Documents of 20 WordNet noun glosses each, until ``chars`` characters."""
    path = Path("/usr/share/wordnet/data.noun")
    if not path.is_file():
        raise SystemExit("more MiniLM rows need WordNet glosses: apt-get install wordnet-base")
    glosses = [line.split("| ", 1)[1].strip() for line in path.read_text(errors="replace")
               .splitlines() if "| " in line and not line.startswith("  ")]
    docs, total = [], 0
    for i in range(0, len(glosses), 20):
        doc = " ".join(glosses[i:i + 20])
        docs.append(doc)
        total += len(doc)
        if total >= chars:
            break
    return docs


def project(profile: CostProfile) -> list[dict]:
    """The model's projection to 100M rows on a 64-node cluster (assumptions in scale.md)."""
    node = profile.scaled(32, efficiency=0.8, transfer_s=1 / 1.25e9, read_s=1 / 0.5e9,
                          call_s=2e-3, start_s=60.0)
    out = []
    for n, d in ((100_000_000, 384), (100_000_000, 576)):
        for workers in (1, 64):
            c = estimate_knn_cost(n, d, K, workers, profile=node, query_rows=16384,
                                  memory_budget=2**30, remote=workers > 1)
            out.append({"n": n, "d": d, "workers": workers, "seconds": c.seconds,
                        "parts": c.parts, "memory_per_worker": c.memory_per_worker,
                        "memory_driver": c.memory_driver, "bytes_moved": c.bytes_moved,
                        "bytes_read": c.bytes_read, "summary": c.summary()})
            print(c.summary(), {k: round(v) for k, v in c.parts.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ns", default="50000,100000,200000")
    ap.add_argument("--data", default="synthetic,minilm")
    ap.add_argument("--single-max", type=int, default=100_000,
                    help="largest n also run on one machine (above: model only)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--project", action="store_true", help="only print the projection")
    ap.add_argument("--cache", default="/tmp/repscope-scale-bench")
    ap.add_argument("--out", default="benchmarks/scale.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns = [6000, 12000] if args.quick else [int(v) for v in args.ns.split(",")]
    root = Path(args.cache)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    profile = calibrate(threads=1)
    print(f"calibrated in {time.perf_counter() - t:.1f} s: {profile}")
    if args.project:
        project(profile)
        return
    from repscope._ray import connect

    session = connect(num_cpus=2, bind="loopback", logging_level="ERROR", log_to_driver=False,
                      start_attempts=3)
    try:
        profile = calibrate_ray(profile, workers=2)
        print(f"Ray: start {profile.start_s:.1f} s, call {profile.call_s * 1e3:.2f} ms, "
              f"transfer {1 / profile.transfer_s / 1e9:.2f} GB/s")
        rows: list[dict] = []
        result = {"machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "profile": profile.__dict__, "rows": rows, "projection": project(profile)}
        for data in args.data.split(","):
            X_all = synthetic(max(ns)) if data == "synthetic" else minilm_rows(max(ns), root)
            for n in ns:
                X = np.ascontiguousarray(X_all[:n])
                rows += run_one(data, X, profile, single=n <= args.single_max)
                # after every size: a long run stopped half way keeps what it measured
                Path(args.out).write_text(json.dumps(result, indent=2, default=float))
        print(f"wrote {args.out}")
    finally:
        session.close()


def run_one(data: str, X: np.ndarray, profile: CostProfile, single: bool) -> list[dict]:
    n, d = X.shape
    out = []
    table = None
    if single:
        t = time.perf_counter()
        table = knn(X, K, strategy="brute")
        seconds = time.perf_counter() - t
        pred = estimate_knn_cost(n, d, K, 1, profile=profile)
        out.append(row(data, n, 1, "knn (1 thread, brute)", seconds, pred, True))
    run = run_knn_distributed(X, K, workers=2, executor="ray")
    pred = estimate_knn_cost(n, d, K, 2, profile=profile, remote=True)
    same = None
    if table is not None:
        same = bool(np.array_equal(run.neighbors.indices, table.indices)
                    and np.array_equal(run.neighbors.distances, table.distances))
    r = row(data, n, 2, "knn_distributed (Ray, 2 x 1 thread)", run.seconds["total"], pred, same)
    r.update({"phases": run.seconds, "bytes_moved": run.bytes_moved,
              "bytes_moved_predicted": pred.bytes_moved,
              "float64_fraction": run.neighbors.float64_fraction})
    out.append(r)
    return out


def row(data: str, n: int, workers: int, what: str, seconds: float, pred, same) -> dict:
    r = {"data": data, "n": n, "workers": workers, "what": what, "seconds": seconds,
         "predicted": pred.seconds, "ratio": seconds / pred.seconds,
         "memory_predicted": pred.memory_per_worker, "same_table": same}
    print(f"{data:9s} n={n:>7,} W={workers} {what:38s} {seconds:9.1f} s   model {pred.seconds:9.1f} s"
          f"   x{seconds / pred.seconds:.2f}   same={same}", flush=True)
    return r


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, load average at start "
            f"{load[0]:.1f}")


if __name__ == "__main__":
    main()
