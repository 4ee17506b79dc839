"""Capture throughput: all 7 MiniLM layers into an ActivationStore vs the bare forward pass.

Both sides run in one process on the same tokenised batches with the same thread count:

- ``bare``: tokenise + ``model(**batch)`` under ``torch.inference_mode()``;
- ``capture``: tokenise + forward with hooks on ``embeddings`` and ``encoder.layer.0-5``
  (stopping after the last block), token-level rows (every real token), conversion to the
  storage dtype, and ``StoreWriter.append`` / ``finish`` into a fresh store (shards written
  and fsynced in the background writer thread, sha256 of every file).

The two are interleaved ``--repeats`` times and the fastest run of each is kept (the least
disturbed by other processes). Overhead = capture time / bare time - 1.

    python benchmarks/capture.py --quick          # 64 documents, smoke run
    python benchmarks/capture.py --threads 1      # 256 documents, 2 repeats

Memory (``--memory``): peak resident memory of ``run_capture`` over 5,000 documents, token
rows (``pooling="none"``) against one mean-pooled row per document, each in a fresh process
sampling its RSS every 5 ms (and tracemalloc's peak of Python/numpy allocations). Documents
are 100-word windows of the pydoc corpus (every one reaches ``max_length=128`` tokens).
``--src DIR`` runs the children on another source tree (e.g. an earlier commit's ``src``).

    python benchmarks/capture.py --memory                    # 5,000 documents, both poolings
    python benchmarks/capture.py --memory --docs 500         # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def bare_pass(model, tokenizer, docs, args) -> tuple[float, float, int]:
    """Tokenise + forward, whole pass: (wall s, process CPU s, tokens)."""
    import torch

    from repscope.capture.hf import tokenize

    t0, c0, tokens = time.perf_counter(), time.process_time(), 0
    with torch.inference_mode():
        for lo in range(0, len(docs), args.batch_size):
            enc = tokenize(tokenizer, docs[lo:lo + args.batch_size], args.max_length)
            model(**enc)
            tokens += int(enc["attention_mask"].sum())
    return time.perf_counter() - t0, time.process_time() - c0, tokens


def capture_pass(model, tokenizer, docs, layers, dims, args, root: Path,
                 paired: bool) -> dict[str, float]:
    """Capture into a fresh store. With ``paired``, each batch's bare forward is timed right
    before its capture, so both sides see the same machine load."""
    import torch

    from repscope.capture.hf import iter_chunks, tokenize
    from repscope.capture.store import ActivationStore

    path = Path(tempfile.mkdtemp(dir=root)) / "store"
    bare = cap = 0.0
    tokens = 0
    c0 = time.process_time()
    writer = ActivationStore.create(path, layers=dims, dtype=args.dtype,
                                    shard_rows=args.shard_rows, identity={"benchmark": "capture"})
    with writer:
        chunks = iter_chunks(model, tokenizer, docs, layers=layers, pooling="none",
                             dtype=args.dtype, batch_size=args.batch_size,
                             max_length=args.max_length)
        for lo in range(0, len(docs), args.batch_size):
            if paired:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    model(**tokenize(tokenizer, docs[lo:lo + args.batch_size], args.max_length))
                bare += time.perf_counter() - t0
            t0 = time.perf_counter()
            chunk = next(chunks)
            writer.append(chunk.acts, chunk.meta, chunk=chunk.index)
            cap += time.perf_counter() - t0
            tokens += chunk.n_tokens
        t0 = time.perf_counter()
        store = writer.finish()
        cap += time.perf_counter() - t0
    out = {"bare_s": bare, "capture_s": cap, "tokens": tokens, "bytes": store.nbytes(),
           "cpu_s": time.process_time() - c0}
    shutil.rmtree(path.parent)
    return out


def memory_corpus(path: Path, n_docs: int, words_per_doc: int = 100, stride: int = 13) -> Path:
    """``n_docs`` overlapping 100-word windows of the pydoc corpus, one JSON object per line."""
    from repscope.data.corpus import load_corpus

    words = " ".join(load_corpus("pydoc").documents).split()
    with open(path, "w") as f:
        for i in range(n_docs):
            lo = (i * stride) % max(len(words) - words_per_doc, 1)
            f.write(json.dumps({"text": " ".join(words[lo:lo + words_per_doc])}) + "\n")
    return path


def memory_child(args) -> int:
    """One capture in this process; prints a JSON line with its memory figures."""
    import threading
    import tracemalloc

    import torch

    from repscope.capture import CaptureConfig, run_capture
    from repscope.data.models import load_model

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    torch.set_num_threads(args.threads)
    loaded = load_model("minilm")
    root = Path(args.out)
    corpus = memory_corpus(root / "corpus.jsonl", args.docs)
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            stop.wait(0.005)

    base = rss_mib()
    thread = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    thread.start()
    t0 = time.perf_counter()
    store = run_capture(CaptureConfig(corpus=str(corpus), out=root / "store",
                                      pooling=args.memory_child, batch_size=args.batch_size,
                                      max_length=args.max_length, dtype=args.dtype),
                        progress=False, loaded=loaded)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps({"pooling": args.memory_child, "rows": store.n_rows,
                      "store_mib": store.nbytes() / 2**20, "baseline_mib": base,
                      "peak_mib": peak[0], "increase_mib": peak[0] - base,
                      "tracemalloc_peak_mib": traced, "seconds": seconds}))
    return 0


def memory(args) -> int:
    """Token-level vs mean-pooled capture, each in a fresh process; a Markdown table."""
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    results = {}
    for pooling in ("none", "mean"):
        with tempfile.TemporaryDirectory(prefix="repscope-bench-mem-") as tmp:
            cmd = [sys.executable, __file__, "--memory-child", pooling, "--out", tmp,
                   "--docs", str(args.docs), "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--dtype", args.dtype]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[pooling] = json.loads(out.stdout.strip().splitlines()[-1])
    tok, mean = results["none"], results["mean"]
    print(json.dumps({"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                      "machine": cpu_model(), "cores": os.cpu_count(),
                      "load_average": os.getloadavg()[0], "src": args.src or "this checkout",
                      "documents": args.docs, **{f"{k}_{p}": v for p, r in results.items()
                                                  for k, v in r.items() if k != "pooling"}},
                     indent=2))
    print("\n| capture | rows | store | baseline RSS | peak RSS | peak - baseline | "
          "tracemalloc peak | s |\n|---|---|---|---|---|---|---|---|")
    for name, r in (("token rows", tok), ("mean-pooled", mean)):
        print(f"| {name} | {r['rows']:,} | {r['store_mib']:,.0f} MiB | {r['baseline_mib']:,.0f} "
              f"MiB | {r['peak_mib']:,.0f} MiB | {r['increase_mib']:,.0f} MiB | "
              f"{r['tracemalloc_peak_mib']:,.0f} MiB | {r['seconds']:,.0f} |")
    print(f"\npooled / token-level: peak {mean['peak_mib'] / tok['peak_mib']:.2f}x, "
          f"increase {mean['increase_mib'] / tok['increase_mib']:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 documents, 1 repeat (smoke run)")
    ap.add_argument("--docs", type=int, default=256, help="documents of the pydoc corpus")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch.set_num_threads (recorded)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--shard-rows", type=int, default=8192)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--memory", action="store_true",
                    help="peak memory: token-level vs mean-pooled capture (5,000 documents)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None,
                    help="with --memory: run the captures on this source tree (PYTHONPATH)")
    args = ap.parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    if args.memory:
        if args.docs == 256:
            args.docs = 5000
        return memory(args)
    if args.quick:
        args.docs, args.repeats = 64, 1

    import torch

    from repscope.capture.hf import default_layers
    from repscope.capture.run import select_documents
    from repscope.data.corpus import load_corpus
    from repscope.data.models import load_model

    torch.set_num_threads(args.threads)
    model, tokenizer, model_id, _ = load_model("minilm")
    docs = select_documents(load_corpus("pydoc").documents, args.docs, seed=0)
    layers = default_layers(model)
    dims = {name: model.config.hidden_size for name in layers}
    root = Path(tempfile.mkdtemp(prefix="repscope-bench-capture-"))
    try:
        bare_pass(model, tokenizer, docs[:args.batch_size], args)  # warm-up
        paired = [capture_pass(model, tokenizer, docs, layers, dims, args, root, paired=True)
                  for _ in range(args.repeats)]
        cpu_bare = min(bare_pass(model, tokenizer, docs, args)[1] for _ in range(args.repeats))
        cpu_cap = min(capture_pass(model, tokenizer, docs, layers, dims, args, root,
                                   paired=False)["cpu_s"] for _ in range(args.repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tokens, nbytes = int(paired[0]["tokens"]), int(paired[0]["bytes"])
    bare = sum(p["bare_s"] for p in paired)
    store = sum(p["capture_s"] for p in paired)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0], "torch": torch.__version__, "model": model_id,
        "layers": len(layers), "documents": len(docs), "tokens": tokens,
        "batch_size": args.batch_size, "max_length": args.max_length, "dtype": args.dtype,
        "shard_rows": args.shard_rows, "repeats": args.repeats, "store_bytes": nbytes,
        "paired_bare_s": bare, "paired_capture_s": store,
        "bare_tokens_per_s": args.repeats * tokens / bare,
        "capture_tokens_per_s": args.repeats * tokens / store,
        "overhead_wall": store / bare - 1,
        "cpu_bare_s": cpu_bare, "cpu_capture_s": cpu_cap, "overhead_cpu": cpu_cap / cpu_bare - 1,
    }
    print(json.dumps(result, indent=2))
    print(f"\n| side | tokens/s (wall, paired) | CPU s (best of {args.repeats}) |\n|---|---|---|\n"
          f"| bare forward | {result['bare_tokens_per_s']:,.0f} | {cpu_bare:.2f} |\n"
          f"| capture 7 layers -> store | {result['capture_tokens_per_s']:,.0f} | {cpu_cap:.2f} |\n"
          f"\noverhead: wall {100 * result['overhead_wall']:+.1f} %, CPU "
          f"{100 * result['overhead_cpu']:+.1f} % ({tokens:,} tokens per pass, "
          f"{nbytes / 2**20:,.0f} MiB written per pass, {args.threads} threads)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
