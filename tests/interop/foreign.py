"""Run inside the test-only venv (.venv-interop, scripts/ensure_interop.sh) by
tests/test_sae_interop.py: the REAL SAELens and sparsify load or write SAE directories and save
their codes and reconstructions of given inputs as .npy files.

    python foreign.py JOB.json

JOB.json: {"x": "X.npy", "tasks": [task, ...]}, each task one of
    {"do": "load", "lib": "saelens" | "sparsify", "dir": D, "out": PREFIX}
        load directory D with the library, write PREFIX.codes.npy, PREFIX.recon.npy
    {"do": "make", "lib": ..., "arch": ..., "d_sae": m, "k": k, "options": {...}, "seed": s,
     "dir": D, "out": PREFIX}
        build an SAE with random weights, save it to D with the library's own writer, then load
        it back with the library's loader and write its outputs as above.
Prints one JSON line with the library versions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random values in every float parameter (non-unit decoder norms, non-zero biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.dtype.is_floating_point:
                continue
            values = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name == "threshold":
                values = values.abs() * 0.5
            elif "b_enc" in name or name.endswith("bias"):
                values = 0.1 * values
            p.copy_(values.to(p.dtype))


def _saelens_make(task: dict, d_in: int) -> None:
    import sae_lens

    arch = task["arch"]
    names = {"standard": ("StandardSAE", "StandardSAEConfig"), "topk": ("TopKSAE", "TopKSAEConfig"),
             "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig")}[arch]
    cls, cfg_cls = getattr(sae_lens, names[0]), getattr(sae_lens, names[1])
    kw = dict(task.get("options", {}))
    if arch == "topk":
        kw["k"] = task["k"]
    sae = cls(cfg_cls(d_in=d_in, d_sae=task["d_sae"], **kw))
    _randomise(sae, task["seed"])
    sae.save_model(task["dir"])


def _saelens_outputs(task: dict, X: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from sae_lens import SAE

    sae = SAE.load_from_disk(task["dir"])
    with torch.no_grad():
        z = sae.encode(X.to(sae.dtype))
        return z.double().numpy(), sae.decode(z).double().numpy()


def _sparsify_make(task: dict, d_in: int) -> None:
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=task["d_sae"], k=task["k"]), device="cpu")
    _randomise(sae, task["seed"])
    sae.save_to_disk(task["dir"])


def _sparsify_outputs(task: dict, X: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from sparsify import SparseCoder

    sae = SparseCoder.load_from_disk(task["dir"], device="cpu")
    with torch.no_grad():
        enc = sae.encode(X.to(sae.dtype))
        z = torch.zeros(X.shape[0], sae.num_latents, dtype=torch.float64)
        z.scatter_(1, enc.top_indices, enc.top_acts.double())
        return z.numpy(), sae.decode(enc.top_acts, enc.top_indices).double().numpy()


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    X = torch.from_numpy(np.load(job["x"]))  # (n, d_in)
    makers = {"saelens": _saelens_make, "sparsify": _sparsify_make}
    outputs = {"saelens": _saelens_outputs, "sparsify": _sparsify_outputs}
    for task in job["tasks"]:
        if task["do"] == "make":
            makers[task["lib"]](task, X.shape[1])
        z, recon = outputs[task["lib"]](task, X)
        np.save(task["out"] + ".codes.npy", z)
        np.save(task["out"] + ".recon.npy", recon)
    import importlib.metadata as md

    print(json.dumps({"sae-lens": md.version("sae-lens"), "eai-sparsify": md.version("eai-sparsify"),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
