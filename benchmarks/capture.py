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
    args = ap.parse_args(argv)
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
