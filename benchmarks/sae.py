"""TopK SAE training throughput: repscope vs SAELens and sparsify on the same arrays, in one run.

    OMP_NUM_THREADS=2 /work/venvs/E/bin/python benchmarks/sae.py   # d_in = 384, 768; 16x; k = 32
    /work/venvs/E/bin/python benchmarks/sae.py --libraries repscope,sparsify --dims 768
    /work/venvs/E/bin/python benchmarks/sae.py --quick             # smoke run (small shapes)
    python benchmarks/sae.py --architectures --dims 384 --libraries repscope --splice  # new rows

``--architectures`` adds repscope's JumpReLU and Matryoshka BatchTopK (and BatchTopK for
reference) to the TopK rows (same data, shapes and steps; their steps use the dense generic
path). ``--splice`` times the spliced-in evaluation of a TopK SAE on the bundled SmolLM2
(``model.layers.3``; clean + SAE + zero + mean forwards per batch, plus the layer statistics
pass) on ``--splice-docs`` corpus documents of at most 64 tokens.

The venv needs repscope (``pip install -e .``) and ``benchmarks/requirements-sae.txt``; torch
must be installed first and pinned (``pip install torch==2.13.0``). All trainers get the same
float32 arrays, batch size, d_sae, k and step count; rows come from a synthetic sparse
dictionary so the runs do real work. Each step, in every library: read a random batch, TopK
encode, decode, reconstruction loss plus the AuxK term over dead latents (dead = no firing in
the last 50 batches, so none in a 30-step run: AuxK is computed by nobody here), backward,
decoder-gradient tangent projection, Adam, decoder renormalisation, dead-latent counters.
The libraries alternate (A B C A B C ...) and each keeps its best of ``--repeats`` runs.
Reported: tokens/s of the median step after the first two (robust to a moment of contention;
the mean is printed too), and the fraction of the machine's measured float32 matmul
throughput reached, counting the work of a dense TopK step as ``10 * batch * d_in * d_sae``
flops (encoder forward 2, encoder weight gradient 2, decoder forward 2, decoder backward 4, in
units of ``batch * d_in * d_sae``); the load average at start and end is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def matmul_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GEMM throughput (GFLOP/s) for an (m, k) @ (k, n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def synthetic(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((4 * d, d)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    idx = rng.integers(0, 4 * d, (n, 16))
    vals = rng.exponential(1.0, (n, 16)).astype(np.float32)
    return np.einsum("nk,nkd->nd", vals, D[idx]) + 0.05 * rng.standard_normal((n, d)).astype(np.float32)


def run_repscope(X: np.ndarray, d_sae: int, k: int, batch: int, steps: int,
                 architecture: str = "topk") -> list[float]:
    from repscope.dictionaries.train import TrainConfig, train_sae

    stamps: list[float] = []
    cfg = TrainConfig(architecture=architecture, d_sae=d_sae, k=k, batch_size=batch, steps=steps,
                      checkpoint_every=0, warmup_steps=10, dead_window_tokens=batch * 50,
                      holdout_fraction=0.0, eval_every=0)
    train_sae(X, cfg, callback=lambda step, m: stamps.append(time.perf_counter()))
    return stamps


def time_splice(n_docs: int, d_sae: int = 2304, k: int = 32) -> dict:
    """Seconds of one spliced-in evaluation on SmolLM2 (model.layers.3), and the per-pass split."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repscope.data.corpus import load_corpus
    from repscope.data.models import builtin_smollm2
    from repscope.dictionaries.sae import build_sae
    from repscope.dictionaries.splice import spliced_evaluation

    path = builtin_smollm2()
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    docs = load_corpus().documents[-n_docs:]
    sae = build_sae("topk", 576, d_sae, k=k)
    t = time.perf_counter()
    ev = spliced_evaluation(model, sae, "model.layers.3", docs, tokenizer=tok, max_length=64, n_boot=200)
    total = time.perf_counter() - t
    t = time.perf_counter()
    import torch as _t

    with _t.no_grad():
        for s in range(0, len(docs), 4):
            model(**tok(docs[s:s + 4], return_tensors="pt", padding=True, truncation=True, max_length=64))
    clean = time.perf_counter() - t
    return {"docs": n_docs, "tokens": ev.n_samples, "seconds": total, "clean_forward_seconds": clean,
            "d_sae": d_sae, "k": k}


def run_saelens(X: np.ndarray, d_sae: int, k: int, batch: int, steps: int) -> list[float]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=X.shape[1], d_sae=d_sae, k=k, device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=batch * steps, train_batch_size_samples=batch,
                           lr=2e-4, lr_end=2e-4, lr_warm_up_steps=10, device="cpu", dead_feature_window=50,
                           feature_sampling_window=10**9)
    stamps: list[float] = []
    Xt = torch.from_numpy(X)
    rng = np.random.default_rng(0)

    def batches():
        while True:  # random rows, like repscope's shuffled batches
            stamps.append(time.perf_counter())
            yield Xt[np.sort(rng.choice(len(X), batch, replace=False))]

    SAETrainer(cfg, sae, batches()).fit()
    stamps.append(time.perf_counter())
    return stamps[1:]  # a stamp when step i+1 starts = when step i ended


def run_sparsify(X: np.ndarray, d_sae: int, k: int, batch: int, steps: int) -> list[float]:
    """EleutherAI sparsify's SparseCoder (fused encoder, sparse decoder) in the step its Trainer
    runs (fvu + auxk loss, parallel-gradient removal, unit-norm decoder), with Adam: the Trainer
    itself hooks a Hugging Face model and cannot read arrays."""
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(X.shape[1], SparseCoderConfig(num_latents=d_sae, k=k), device="cpu")
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4)
    Xt = torch.from_numpy(X)
    rng = np.random.default_rng(0)
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    stamps = []
    for _ in range(steps):
        x = Xt[np.sort(rng.choice(len(X), batch, replace=False))]
        out = sae(x, dead_mask=since_fired > batch * 50)
        (out.fvu + out.auxk_loss / 32).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()
        since_fired += batch
        since_fired[out.latent_indices.flatten()] = 0
        stamps.append(time.perf_counter())
    return stamps


def steady_tokens_per_s(stamps: list[float], batch: int, warmup: int = 2) -> tuple[float, float]:
    """(median-step, mean) tokens/s over the steps after the first ``warmup``: the median step
    time is robust to another process taking the cores for a moment; the mean is the older
    figure (total rows / total time)."""
    dt = np.diff(np.asarray(stamps))[warmup:]
    if len(dt) < 1:
        return float("nan"), float("nan")
    return batch / float(np.median(dt)), batch / float(dt.mean())


RUNNERS = {"repscope": run_repscope, "sae-lens": run_saelens, "sparsify": run_sparsify}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, few steps")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 30; quick 6)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternate the libraries this many times and keep each one's best run")
    ap.add_argument("--libraries", default=",".join(RUNNERS),
                    help="comma-separated subset of " + ", ".join(RUNNERS))
    ap.add_argument("--dims", default=None, help="comma-separated d_in values (default 384,768)")
    ap.add_argument("--json", default=None, help="write results to this file")
    ap.add_argument("--architectures", action="store_true",
                    help="add repscope's batchtopk, jumprelu and matryoshka rows")
    ap.add_argument("--splice", action="store_true", help="time the spliced-in evaluation on SmolLM2")
    ap.add_argument("--splice-docs", type=int, default=16)
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")] if args.dims else ([64] if args.quick else [384, 768])
    steps = args.steps or (6 if args.quick else 30)
    batch = args.batch or (256 if args.quick else 1024)
    k, expansion = (8, 4) if args.quick else (32, 16)
    names = [n.strip() for n in args.libraries.split(",") if n.strip()]
    if args.architectures:
        for arch in ("batchtopk", "jumprelu", "matryoshka"):
            RUNNERS[f"repscope-{arch}"] = (lambda a: lambda *x: run_repscope(*x, architecture=a))(arch)
            names.append(f"repscope-{arch}")
    unknown = sorted(set(names) - set(RUNNERS))
    if unknown:
        ap.error(f"unknown libraries {unknown}; choose from {sorted(RUNNERS)}")
    torch.manual_seed(0)
    load_start = os.getloadavg()
    peak = matmul_gflops(2048, 2048, 2048)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; float32 GEMM 2048^3: {peak:.1f} "
          f"GFLOP/s; load average {load_start[0]:.2f}")
    rows = []
    for d in dims:
        d_sae = expansion * d
        X = synthetic(max(batch * (steps + 2), 8192), d)
        shape_peak = matmul_gflops(batch, d, d_sae)
        flops = 10 * batch * d * d_sae
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):  # A B C A B C: contention hits all alike
            for name in names:
                try:
                    tps = steady_tokens_per_s(RUNNERS[name](X, d_sae, k, batch, steps), batch)
                except ImportError as exc:
                    print(f"{name}: not installed ({exc})")
                    continue
                best[name] = max(best.get(name, (0.0, 0.0)), tps)
        for name, (tps, mean_tps) in best.items():
            frac = tps / batch * flops / 1e9 / peak
            rows.append({"library": name, "d_in": d, "d_sae": d_sae, "k": k, "batch": batch,
                         "steps": steps, "repeats": args.repeats, "tokens_per_s": tps,
                         "tokens_per_s_mean": mean_tps, "fraction_of_gemm_peak": frac,
                         "gemm_peak_gflops": peak, "gemm_shape_gflops": shape_peak,
                         "threads": torch.get_num_threads()})
            print(f"{name:9s} d_in={d:4d} d_sae={d_sae:6d} k={k}: {tps:9.0f} tokens/s (median step; "
                  f"mean {mean_tps:.0f}), {100 * frac:5.1f}% of GEMM peak")
    if args.splice:
        sp = time_splice(args.splice_docs)
        print(f"spliced-in evaluation, SmolLM2 model.layers.3, {sp['docs']} docs / {sp['tokens']} "
              f"predicted tokens: {sp['seconds']:.1f} s (one clean forward pass over the same "
              f"documents: {sp['clean_forward_seconds']:.1f} s)")
        rows.append({"library": "repscope-splice", **sp})
    load_end = os.getloadavg()
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (1 min)")
    for row in rows:
        row["load_average"] = [load_start[0], load_end[0]]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
