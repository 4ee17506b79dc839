"""Save and load SAEs in the layout other tools read: ``cfg.json`` next to ``sae.safetensors``.

``cfg.json`` holds ``architecture``, ``d_in``, ``d_sae``, ``dtype``, the architecture's
hyper-parameters, and whatever the trainer adds (``hook_name`` = layer, ``train`` config,
``repscope_version``). Both files are written atomically.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from repscope._io import atomic_write_bytes, atomic_write_text
from repscope._version import __version__
from repscope.dictionaries.sae import ARCHITECTURES, SparseAutoencoder, build_sae

__all__ = ["CFG_FILE", "WEIGHTS_FILE", "load_sae", "read_cfg", "save_sae"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def sae_cfg(sae: SparseAutoencoder, **extra: Any) -> dict[str, Any]:
    """The JSON description of ``sae`` (architecture, shapes, hyper-parameters, extras)."""
    return {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": str(sae.W_dec.dtype).replace("torch.", ""),
        **sae.hyperparams(),
        "repscope_version": __version__,
        **extra,
    }


def save_sae(sae: SparseAutoencoder, path: str | Path, **extra: Any) -> Path:
    """Write ``cfg.json`` and ``sae.safetensors`` into directory ``path``; return it."""
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    atomic_write_bytes(path / WEIGHTS_FILE, save(tensors, metadata={"format": "pt"}))
    atomic_write_text(path / CFG_FILE, json.dumps(sae_cfg(sae, **extra), indent=2, sort_keys=True))
    return path


def read_cfg(path: str | Path) -> dict[str, Any]:
    """Read ``cfg.json`` of a saved SAE directory."""
    path = Path(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a saved SAE: expected {CFG_FILE} and {WEIGHTS_FILE} inside it."
        )
    return json.loads((path / CFG_FILE).read_text())


def _init_keywords(architecture: str) -> set[str]:
    from repscope._validate import check_choice

    check_choice(architecture, "architecture", "load_sae", ARCHITECTURES)
    keys: set[str] = set()
    for klass in ARCHITECTURES[architecture].__mro__:
        if "__init__" in vars(klass) and issubclass(klass, SparseAutoencoder):
            keys |= set(inspect.signature(klass.__init__).parameters)
    return keys - {"self", "d_in", "d_sae", "kw", "dtype"}


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Rebuild the SAE saved in directory ``path`` (see :func:`save_sae`)."""
    from safetensors.torch import load_file

    cfg = read_cfg(path)
    hyper = {k: cfg[k] for k in _init_keywords(cfg["architecture"]) if k in cfg}
    sae = build_sae(cfg["architecture"], cfg["d_in"], cfg["d_sae"],
                    dtype=getattr(torch, cfg.get("dtype", "float32")), **hyper)
    sae.load_state_dict(load_file(str(Path(path) / WEIGHTS_FILE)))
    return sae.to(device).eval()
