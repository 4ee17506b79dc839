"""Replicate the qualitative findings of Li et al. (ICLR 2018) and Aghajanyan et al. (ACL 2021)
on offline data, with ``repscope.landscape``; the results go into ``docs/landscape.md``.

Sections (each resumable: every training run is recorded in ``OUT/results.duckdb``, a rerun
skips it):

- ``digits``: MLP vs LeNet on scikit-learn's digits (3 seeds, Fastfood);
- ``fashion``: Li et al.'s MNIST architectures (784-200-200-10 MLP, LeNet-5) on a Fashion-MNIST
  subsample (5,000 train / 2,000 test, 20 epochs; 3 seeds, Fastfood, bisection to 10 %);
- ``minilm``: SAID fine-tuning of pretrained vs randomly initialised MiniLM on chatterbot-corpus
  topic classification (2 seeds, Fastfood + SAID, grid x4 up to d = 8,192, one bisection
  step: d_int90 within a factor 2).

Each section writes ``docs/landscape_<section>.png`` and prints a markdown table. Sizes fit a
shared 2-core machine (hours for everything; the MiniLM section is the longest)::

    python benchmarks/landscape_findings.py --sections digits fashion minilm --out landscape-out
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = {
    "digits": dict(tasks=("digits-mlp", "digits-cnn"), params={}, seeds=(0, 1, 2),
                   sweep=dict(d_min=4, growth=2.0)),
    "fashion": dict(tasks=("fashion-mlp", "fashion-cnn"), params={}, seeds=(0, 1, 2),
                    sweep=dict(d_min=16, growth=2.0, precision=0.1)),
    "minilm": dict(tasks=("chatterbot-minilm", "chatterbot-minilm-random"), params={},
                   seeds=(0, 1), sweep=dict(growth=4.0, d_max=8192, precision=0.5,
                                            overshoot=0)),
}


def run_section(name: str, out: Path, executor: str, workers: int | None) -> list:
    from repscope.landscape import intrinsic_dimension_sweep, write_landscape_figure

    spec = SECTIONS[name]
    results = []
    for task in spec["tasks"]:
        t0 = time.perf_counter()
        res = intrinsic_dimension_sweep(
            task, task_params=spec["params"], seeds=spec["seeds"], fractions=(0.9,),
            projection="fastfood", db=out / "results.duckdb", executor=executor,
            workers=workers, on_stage=lambda text: print(f"  {text}", flush=True),
            **{"precision": 0.05, **spec["sweep"]})
        print(f"{task}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        results.append(res)
    target = out if out.name == "quick" else ROOT / "docs"
    write_landscape_figure(results, target / f"landscape_{name}.png")
    return results


def table(results: list) -> str:
    lines = ["| task | D | full training (mean, range) | d_int90 | range over seeds | "
             "d_int90 / D | runs | run minutes (wall) |", "|---|---:|---|---:|---|---:|---:|---:|"]
    for r in results:
        e = r.d_int(0.9)
        value = f"> {e.max_dim:,}" if e.censored else f"**{e.value:,.0f}**"
        lo, hi = e.ci if e.ci is not None else (math.nan, math.nan)
        rng = "-" if e.ci is None else (f"{lo:,.0f} to {hi:,.0f}" if math.isfinite(hi)
                                        else f"{lo:,.0f} to > {e.max_dim:,}")
        rel = "" if e.censored else f"{e.value / r.n_params:.2e}"
        lines.append(f"| {r.task} | {r.n_params:,} | {r.baseline_mean:.3f} "
                     f"({min(r.baseline):.3f} to {max(r.baseline):.3f}) | {value} | {rng} | "
                     f"{rel} | {len(r.dims) * len(r.seeds) + 2 * len(r.seeds)} | "
                     f"{r.seconds / 60:.0f} |")
    return "\n".join(lines)


def curve(r) -> str:
    means = r.values.mean(axis=1)
    return ", ".join(f"{int(d)}: {m:.3f}" for d, m in zip(r.dims, means, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--out", type=Path, default=ROOT / "landscape-out")
    ap.add_argument("--executor", default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="Smoke run: the digits section with 1 seed, 2 epochs, d <= 64.")
    args = ap.parse_args()
    if args.quick:
        args.sections = ["digits"]
        SECTIONS["digits"] = dict(tasks=("digits-mlp", "digits-cnn"),
                                  params={"training": {"epochs": 2}}, seeds=(0,),
                                  sweep=dict(d_min=16, d_max=64, growth=2.0))
        args.out = args.out / "quick"
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"# landscape findings, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s) per run\n", flush=True)
    summary = {}
    for name in args.sections:
        results = run_section(name, args.out, args.executor, args.workers)
        print(f"\n## {name}\n\n{table(results)}\n")
        for r in results:
            print(f"- {r.task} seed-mean curve (d: value): {curve(r)}")
            print(f"  full training per seed: {', '.join(f'{v:.3f}' for v in r.baseline)}; "
                  f"theta_0: {r.initial_mean:.3f}; per-seed d_int90: {r.d_int(0.9).per_seed}")
        summary[name] = [json.loads(r.to_json()) for r in results]
    (args.out / "findings.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
