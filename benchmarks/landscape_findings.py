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

A reduced configuration (fewer seeds, a coarser grid) is a documented override, printed with
the results and written to ``OUT/findings.json``; e.g. the MiniLM section with one seed on the
grid 128, 512, 2048, 8192 and no bisection::

    python benchmarks/landscape_findings.py --sections minilm --seeds 0 \
        --sweep d_min=128 growth=4 precision=1

``--tasks`` runs only some of a section's tasks (two processes can share one ``--out``: the
database is locked per access); a final run of the whole section then only reads the recorded
runs and writes the table and the figure with every task. A reduced run resumes into the full one: runs are keyed by task, kind, ``d``, seed and
projection, not by the seed set or the grid.
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


SWEEP_KEYS = {"d_min": int, "d_max": int, "growth": float, "precision": float,
              "overshoot": int}


def _sweep_override(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or key not in SWEEP_KEYS:
        raise argparse.ArgumentTypeError(
            f"--sweep expects KEY=VALUE with KEY one of {sorted(SWEEP_KEYS)}, got {text!r}")
    try:
        return key, SWEEP_KEYS[key](value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sweep {key} expects a {SWEEP_KEYS[key].__name__}, got {value!r}") from None


def configure(name: str, seeds: list[int] | None, sweep: dict[str, float],
              tasks: list[str] | None = None) -> dict:
    """The section's configuration with the command line's overrides applied."""
    spec = dict(SECTIONS[name])
    if tasks:
        spec["tasks"] = tuple(t for t in spec["tasks"] if t in tasks)
    if seeds:
        spec["seeds"] = tuple(seeds)
    spec["sweep"] = {"precision": 0.05, **spec["sweep"], **sweep}
    spec["reduced"] = bool(seeds) or bool(sweep)
    SECTIONS[name] = spec
    return spec


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
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="Run only these tasks of the chosen sections (the figure and table "
                    "then show only them).")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="Override the seeds of every chosen section (a reduced run).")
    ap.add_argument("--sweep", nargs="+", type=_sweep_override, default=[],
                    metavar="KEY=VALUE", help="Override the sweep of every chosen section: "
                    f"{', '.join(SWEEP_KEYS)} (a reduced run, e.g. d_min=128 growth=4).")
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
    summary_path = args.out / "findings.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.sections:
        spec = configure(name, args.seeds, dict(args.sweep), args.tasks)
        if not spec["tasks"]:
            continue
        config = {"tasks": list(spec["tasks"]), "seeds": list(spec["seeds"]),
                  "sweep": spec["sweep"], "params": spec["params"], "reduced": spec["reduced"]}
        print(f"## {name}: {json.dumps(config)}", flush=True)
        results = run_section(name, args.out, args.executor, args.workers)
        print(f"\n## {name}\n\n{table(results)}\n")
        for r in results:
            print(f"- {r.task} seed-mean curve (d: value): {curve(r)}")
            print(f"  full training per seed: {', '.join(f'{v:.3f}' for v in r.baseline)}; "
                  f"theta_0: {r.initial_mean:.3f}; per-seed d_int90: {r.d_int(0.9).per_seed}")
        summary[name] = {"config": config, "date": str(date.today()),
                         "results": [json.loads(r.to_json()) for r in results]}
        summary_path.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
