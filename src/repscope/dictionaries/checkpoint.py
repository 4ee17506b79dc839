"""The resumable training state of an SAE: one ``state.safetensors`` file, no pickle.

Tensors (model weights and buffers, Adam moments, dead-latent counters, the torch RNG state)
are stored by name; everything else (step, history, the training config, Adam's param groups)
is JSON in the safetensors header metadata under ``repscope_state``. The file is written
atomically, so a kill leaves the previous checkpoint intact. Reading it never executes code:
unlike ``torch.load(..., weights_only=False)`` on a pickle, a state file written by someone else
can hold only tensors and JSON. A ``state.pt`` from an older repscope is read with
``torch.load(weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from repscope._io import atomic_write_bytes

__all__ = ["LEGACY_STATE_FILE", "STATE_FILE", "load_state", "save_state"]

STATE_FILE = "state.safetensors"
LEGACY_STATE_FILE = "state.pt"
_META_KEY = "repscope_state"


def save_state(out: Path, model: dict[str, torch.Tensor], optimizer: dict[str, Any],
               since_fired: torch.Tensor, info: dict[str, Any]) -> None:
    """Write ``out/state.safetensors``; ``info`` (step, history, train config) must be JSON-able."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.items()}
    for idx, entry in optimizer["state"].items():
        for key, value in entry.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["since_fired"] = since_fired.detach().cpu().contiguous()
    tensors["rng"] = torch.get_rng_state()
    meta = {**info, "param_groups": optimizer["param_groups"]}
    atomic_write_bytes(out / STATE_FILE, save(tensors, metadata={_META_KEY: json.dumps(meta)}))


def load_state(out: Path, device: torch.device | str) -> dict[str, Any]:
    """Read the state written by :func:`save_state` (or a legacy ``state.pt``) as
    ``{"model", "optimizer", "since_fired", "rng", **info}``; a one-line ``ValueError`` for an
    unreadable file."""
    path = out / STATE_FILE
    if not path.is_file():
        return _load_legacy(out / LEGACY_STATE_FILE, device)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception as exc:  # noqa: BLE001 - safetensors / JSON errors alike
        raise ValueError(f"Cannot resume from {str(path)!r}: the training state is unreadable "
                         f"({type(exc).__name__}); delete it or use --no-resume.") from None
    model = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v.to(device)
    groups = meta.pop("param_groups")
    for g in groups:
        g["betas"] = tuple(g["betas"])
    return {"model": model, "optimizer": {"state": opt_state, "param_groups": groups},
            "since_fired": tensors["since_fired"].to(device), "rng": tensors["rng"], **meta}


def _load_legacy(path: Path, device: torch.device | str) -> dict[str, Any]:
    try:  # tensors and plain containers only: never arbitrary pickled objects
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"Cannot resume from {str(path)!r}: not a readable repscope training state "
                         f"({type(exc).__name__}); delete it or use --no-resume.") from None


def has_state(out: Path) -> bool:
    """Whether ``out`` holds a training state to resume from."""
    return (out / STATE_FILE).is_file() or (out / LEGACY_STATE_FILE).is_file()
