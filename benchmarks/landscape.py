"""Cost of one training step in a random subspace vs one full training step.

For Li et al.'s MNIST-size MLP (784-200-200-10, D = 199,210) and LeNet-5 (D = 44,426) on
Fashion-MNIST-shaped batches, and for the bundled MiniLM with a classification head (D = 22.6 M,
SAID) on chatterbot-corpus sentences, one step = forward, loss, backward and an Adam update:
of all D parameters ("full"), or of the d subspace coordinates through each projection.
"fastfood (Li et al. layout)" is the same transform in the layout of Li et al.'s code: one block
of 2^ceil(log2 D) and butterfly passes; "fastfood" is repscope's default (stacked blocks of
2^ceil(log2 d), 32 x 32 GEMM passes). Dense is skipped where D x d exceeds its limit.

Reported: the median step time over ``--repeats`` steps after two warm-up steps, its ratio to
the full step, and the projection's memory. Run with ``OMP_NUM_THREADS`` set to the threads
you want (default 1)::

    OMP_NUM_THREADS=1 python benchmarks/landscape.py --models mlp cnn minilm
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from datetime import date
from typing import Any

import torch
from torch import nn

from repscope.landscape.models import MLP, LeNet
from repscope.landscape.projections import MAX_DENSE, FastfoodProjection
from repscope.landscape.subspace import Subspace


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def setups(models: list[str], batch: int) -> list[dict[str, Any]]:
    out = []
    if "mlp" in models:
        torch.manual_seed(0)
        out.append(dict(name="MLP 784-200-200-10", model=MLP(784, 10), batch=_images(batch),
                        d=(1000,), said=False, exclude=()))
    if "cnn" in models:
        torch.manual_seed(0)
        out.append(dict(name="LeNet-5", model=LeNet(28, 10), batch=_images(batch),
                        d=(1000,), said=False, exclude=()))
    if "minilm" in models:
        from repscope.landscape.tasks import ready_task

        task = ready_task("chatterbot-minilm", per_class=60)
        for n in (16, 32):
            ids, mask, y = (t[:n] for t in task.train)
            out.append(dict(name=f"MiniLM + head, {n} sentences", model=task.model(0),
                            batch=(ids, mask, y), d=(1000, 10000), said=True,
                            exclude=task.exclude))
    return out


class _Stepper:
    """One variant's training step (forward, loss, backward, Adam), timed one at a time so the
    variants of a model are measured interleaved, under the same machine load."""

    def __init__(self, fwd: nn.Module, params: list[torch.Tensor], batch: tuple):
        self.fwd, self.batch = fwd, batch
        self.opt = torch.optim.Adam(params, lr=1e-4)
        self.times: list[float] = []

    def step(self, record: bool) -> None:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.fwd(*self.batch[:-1]), self.batch[-1])
        loss.backward()
        self.opt.step()
        if record:
            self.times.append(time.perf_counter() - t0)


def _nnz(model: nn.Module, exclude: tuple[str, ...], d: int) -> float:
    """Expected non-zeros of the sparse projection: d sqrt(D_t) summed over tensors."""
    from repscope.landscape.subspace import select_parameters

    return d * sum(math.sqrt(p.numel()) for _, p in select_parameters(model, (), exclude))


def _memory(sub: Subspace) -> float:
    return sum(b.numel() * b.element_size() for b in sub.projection.buffers()) / 2**20


def run(setup: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    model, batch = setup["model"], setup["batch"]
    model.train()
    D = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder.pooler"))
    variants: list[tuple[str, Any, Any]] = [("full training", "-", None)]
    rows = []
    for d in setup["d"]:
        for proj in ("dense", "sparse", "fastfood", "fastfood (Li et al. layout)"):
            kind = proj.split()[0]
            if kind == "dense" and D * d > MAX_DENSE:
                rows.append(dict(model=setup["name"], D=D, projection=proj, d=d,
                                 seconds=math.nan, ratio=math.nan, memory=D * d * 4 / 2**20))
                continue
            if proj.endswith("layout)") and d != setup["d"][0]:
                continue  # the slow reference layout once per model
            sub = Subspace(model, d, projection=kind, said=setup["said"],
                           exclude=setup["exclude"], seed=0) if kind != "sparse" or _nnz(
                               model, setup["exclude"], d) < 5e7 else None
            if sub is None:
                rows.append(dict(model=setup["name"], D=D, projection=proj, d=d,
                                 seconds=math.nan, ratio=math.nan,
                                 memory=_nnz(model, setup["exclude"], d) * 16 / 2**20))
                continue
            if proj.endswith("layout)"):  # one block of 2^ceil(log2 D), butterfly passes
                sub.projection = FastfoodProjection(
                    sub.D, d - sub.n_scales, seed=0, block=1 << math.ceil(math.log2(sub.D)),
                    radix=1)
            variants.append((proj, d, sub))
    steppers = [_Stepper(model, list(model.parameters()), batch) if sub is None
                else _Stepper(sub, list(sub.parameters()), batch) for _, _, sub in variants]
    for i in range(repeats + 2):  # two warm-up rounds, then interleaved timed rounds
        for stepper in steppers:
            stepper.step(record=i >= 2)
    full = statistics.median(steppers[0].times)
    for (proj, d, sub), stepper in zip(variants, steppers, strict=True):
        t = statistics.median(stepper.times)
        rows.append(dict(model=setup["name"], D=D, projection=proj, d=d, seconds=t,
                         ratio=t / full, memory=0.0 if sub is None else _memory(sub)))
        print(f"  {setup['name']}: {proj} d={d}: {t * 1e3:.1f} ms ({t / full:.2f}x)",
              flush=True)
    order = {"full training": 0}
    return sorted(rows, key=lambda r: (str(r["d"]) != "-", str(r["d"]),
                                       order.get(r["projection"], 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn", "minilm"],
                    choices=["mlp", "cnn", "minilm"])
    ap.add_argument("--batch", type=int, default=128, help="Images per step (MLP, LeNet).")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="Smoke run: the MLP, 2 repeats.")
    args = ap.parse_args()
    if args.quick:
        args.models, args.repeats, args.batch = ["mlp"], 2, 32
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# landscape step cost, {date.today()}, {cpu}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}\n", flush=True)
    rows = []
    for setup in setups(args.models, args.batch):
        rows += run(setup, args.repeats)
    print("\n| model | D | projection | d | step (ms) | vs full step | projection memory (MiB) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        step = "n/a" if math.isnan(r["seconds"]) else f"{r['seconds'] * 1e3:,.1f}"
        ratio = ("n/a (too large)" if math.isnan(r["ratio"]) else f"{r['ratio']:.2f}x")
        print(f"| {r['model']} | {r['D']:,} | {r['projection']} | {r['d']} | {step} | {ratio} | "
              f"{r['memory']:,.1f} |")


if __name__ == "__main__":
    main()
