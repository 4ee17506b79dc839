"""Checkpoints of one model as sources of a sweep: discover them in training order, load them.

A training run leaves its weights in one of three layouts, all read from local disk:

- a directory of **state-dict files**: ``step_100.pt``, ``model-2000.bin``,
  ``ckpt_300.safetensors`` (files torch or safetensors can read);
- a directory of **Hugging Face model directories**, e.g. ``checkpoint-500/`` as written by the
  ``transformers`` Trainer (``config.json`` plus ``model.safetensors`` /
  ``pytorch_model.bin``, possibly sharded with an ``*.index.json``);
- a **local Hugging Face cache entry** with several revisions (``models--org--name/`` with
  ``refs/step1000`` -> ``snapshots/<commit>/``), as for Pythia's intermediate checkpoints
  downloaded beforehand: every ref is one checkpoint, named after the ref.

:func:`discover_checkpoints` returns them ordered by training step (the number after
``step``/``checkpoint``/``epoch``, else the last number in the name; natural sort for the rest);
:func:`load_checkpoint` loads one into a model instance strictly, with an error that lists the
missing, unexpected and mis-shaped keys; :func:`capture_checkpoints` captures every checkpoint
of a run into its own ActivationStore, so metrics over training are one plan over those stores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from repscope._names import natural_key
from repscope.capture.run import run_capture
from repscope.data.models import load_model

__all__ = ["Checkpoint", "CheckpointKind", "capture_checkpoints", "checkpoint_digest",
           "discover_checkpoints", "load_checkpoint", "load_state_dict"]

log = logging.getLogger(__name__)

CheckpointKind = Literal["state_dict", "safetensors", "hf_dir"]
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# files a training run keeps next to its weights that are not model weights
NON_MODEL_FILES = re.compile(
    r"^(optimizer|scheduler|scaler|rng_state.*|training_args|trainer_state)\.(pt|pth|bin|json)$")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
_STEP = re.compile(r"(?:step|checkpoint|ckpt|iter|epoch)[-_=]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a model."""

    name: str
    "Short unique name used in results (file stem, directory or revision name)."
    step: int | None
    "Training step parsed from the name, or None when the name has no number."
    path: str
    "File (state_dict, safetensors) or directory (hf_dir) holding the weights."
    kind: CheckpointKind = "state_dict"
    "How the weights are stored."

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for a saved plan)."""
        return {"name": self.name, "step": self.step, "path": self.path, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(str(d["name"]), None if d.get("step") is None else int(d["step"]),
                   str(d["path"]), d.get("kind", "state_dict"))


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint name: ``step_1000`` -> 1000, ``checkpoint-500`` -> 500.

    A number right after ``step``, ``checkpoint``, ``ckpt``, ``iter`` or ``epoch`` wins (the
    last such), else the last number in the name; None if there is none.
    """
    tagged = _STEP.findall(name)
    if tagged:
        return int(tagged[-1])
    numbers = _NUMBER.findall(name)
    return int(numbers[-1]) if numbers else None


def _order(ckpts: list[Checkpoint]) -> list[Checkpoint]:
    """By step, then naturally by name; checkpoints without a step come last."""
    return sorted(ckpts, key=lambda c: (c.step is None, c.step or 0, natural_key(c.name)))


def _is_hf_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in HF_WEIGHT_FILES)


def _file_checkpoint(path: Path) -> Checkpoint | None:
    if NON_MODEL_FILES.match(path.name) or ".index." in path.name:
        return None
    if path.suffix == ".safetensors":
        return Checkpoint(path.stem, parse_step(path.stem), str(path), "safetensors")
    if path.suffix in STATE_DICT_SUFFIXES:
        return Checkpoint(path.stem, parse_step(path.stem), str(path), "state_dict")
    return None


def _hf_cache_revisions(repo: Path) -> list[Checkpoint]:
    """Every ref of a local Hugging Face cache entry (``refs/<name>`` -> ``snapshots/<sha>``)."""
    out = []
    for ref in sorted(p for p in (repo / "refs").rglob("*") if p.is_file()):
        name = ref.relative_to(repo / "refs").as_posix()
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if _is_hf_dir(snapshot):
            out.append(Checkpoint(name, parse_step(name), str(snapshot), "hf_dir"))
        else:
            log.warning("revision %r of %s has no weights in %s; skipped", name, repo, snapshot)
    return out


def _discover_dir(root: Path) -> list[Checkpoint]:
    if (root / "snapshots").is_dir() and (root / "refs").is_dir():
        return _hf_cache_revisions(root)
    subdirs = [p for p in root.iterdir() if _is_hf_dir(p)]
    if subdirs:
        return [Checkpoint(p.name, parse_step(p.name), str(p), "hf_dir") for p in subdirs]
    if _is_hf_dir(root):  # one model directory: it is the checkpoint, not its weight files
        return [Checkpoint(root.name, parse_step(root.name), str(root), "hf_dir")]
    return [c for p in root.iterdir() if p.is_file() and (c := _file_checkpoint(p)) is not None]


def _one(path: Path) -> Checkpoint:
    if _is_hf_dir(path):
        return Checkpoint(path.name, parse_step(path.name), str(path), "hf_dir")
    if path.is_file() and (ckpt := _file_checkpoint(path)) is not None:
        return ckpt
    raise ValueError(
        f"discover_checkpoints: {str(path)!r} is neither a weights file "
        f"({', '.join(('.safetensors',) + STATE_DICT_SUFFIXES)}) nor a model directory "
        f"(with one of {', '.join(HF_WEIGHT_FILES)})."
    )


def discover_checkpoints(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str] | Checkpoint],
) -> list[Checkpoint]:
    """The checkpoints of one model, in training order.

    ``source`` is a directory (of state-dict files, of Hugging Face model directories, or a
    local Hugging Face cache entry with one ref per revision; see the module docstring), or an
    explicit list of files / model directories / :class:`Checkpoint` objects, which keeps its
    order. Raises ``FileNotFoundError`` for a missing path and ``ValueError`` when nothing is
    found or two checkpoints share a name.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.exists():
            raise FileNotFoundError(f"discover_checkpoints: no such file or directory: {str(root)!r}")
        if root.is_dir():
            ckpts = _order(_discover_dir(root))
            if not ckpts:
                raise ValueError(
                    f"discover_checkpoints found no checkpoints in {str(root)!r}: expected weight "
                    f"files (*.safetensors, {', '.join('*' + s for s in STATE_DICT_SUFFIXES)}), "
                    f"model directories (with {' or '.join(HF_WEIGHT_FILES[::2])}) or a Hugging "
                    f"Face cache entry (refs/ and snapshots/)."
                )
        else:
            ckpts = [_one(root)]
    else:
        ckpts = []
        for item in source:
            if isinstance(item, Checkpoint):
                ckpts.append(item)
                continue
            path = Path(item)
            if not path.exists():
                raise FileNotFoundError(f"discover_checkpoints: no such file or directory: {str(path)!r}")
            ckpts.append(_one(path))
        if not ckpts:
            raise ValueError("discover_checkpoints got an empty list of checkpoints.")
    names = [c.name for c in ckpts]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(
            f"discover_checkpoints found several checkpoints named {dups}; checkpoint names must "
            f"be unique (they label the results). Pass Checkpoint(name=..., ...) objects to rename."
        )
    return ckpts


# --------------------------------------------------------------------------- loading


def _read_weights_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    """A training script's checkpoint often nests the weights: ``{"model": sd, "step": ...}``."""
    import torch

    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for name in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(name)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise ValueError(
        f"load_checkpoint: {str(path)!r} holds no state dict (a mapping of names to tensors, "
        f"possibly under 'state_dict', 'model_state_dict', 'model' or 'module'); got "
        f"{type(obj).__name__}."
    )


def _read_hf_dir(path: Path) -> dict[str, Any]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (path / single).is_file():
            return _read_weights_file(path / single)
        if (path / index_name).is_file():
            index = json.loads((path / index_name).read_text())
            state: dict[str, Any] = {}
            for shard in sorted(set(index["weight_map"].values())):
                state.update(_read_weights_file(path / shard))
            return state
    raise ValueError(f"load_checkpoint: {str(path)!r} has none of {', '.join(HF_WEIGHT_FILES)}.")


def load_state_dict(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's tensors by name, on the CPU (safe loading: ``weights_only=True``)."""
    path = Path(ckpt.path)
    if not path.exists():
        raise FileNotFoundError(f"load_checkpoint: checkpoint {ckpt.name!r} is missing: {ckpt.path!r}")
    return _read_hf_dir(path) if ckpt.kind == "hf_dir" else _read_weights_file(path)


def _align_prefix(state: dict[str, Any], expected: set[str], model: Any) -> dict[str, Any]:
    """Drop a DDP ``module.`` prefix or a task head's base-model prefix (``bert.``) if that
    makes the names match the model's; otherwise return ``state`` unchanged."""
    if set(state) <= expected:
        return state
    prefixes = ["module."]
    base = getattr(model, "base_model_prefix", "")
    if base:
        prefixes.append(base + ".")
    for prefix in prefixes:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if stripped and len(set(stripped) & expected) > len(set(state) & expected):
            return stripped
    return state


def _tied_aliases(model: Any) -> dict[str, str]:
    """Names that share storage with an earlier name in the state dict (tied weights)."""
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    aliases = {}
    for name, t in model.state_dict(keep_vars=True).items():
        ident = (t.data_ptr(), tuple(t.shape))
        if t.numel() and ident in seen:
            aliases[name] = seen[ident]
        else:
            seen.setdefault(ident, name)
    return aliases


def load_checkpoint(model: Any, ckpt: Checkpoint | str | os.PathLike[str]) -> Any:
    """Load ``ckpt``'s weights into ``model`` (a ``torch.nn.Module``) in place and return it.

    Loading is strict: every parameter and persistent buffer of the model must be in the
    checkpoint with the same shape, and the checkpoint may hold nothing else, except that a
    DDP ``module.`` prefix or the model's ``base_model_prefix`` is stripped when that is what
    makes the names match, and a tied weight may be stored once. A mismatch raises
    ``ValueError`` listing the missing, unexpected and mis-shaped names.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = discover_checkpoints([ckpt])[0]
    target = model.state_dict()
    state = _align_prefix(load_state_dict(ckpt), set(target), model)
    aliases = _tied_aliases(model)
    for alias, source in aliases.items():  # a tied weight saved under one of its names
        if alias not in state and source in state:
            state[alias] = state[source]
        elif source not in state and alias in state:
            state[source] = state[alias]
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                    for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        def few(names: list[str]) -> str:
            shown = ", ".join(repr(n) for n in names[:5])
            return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")

        parts = [f"{len(missing)} missing key(s) ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected key(s) ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} shape mismatch(es) ({few(shapes)})" if shapes else ""]
        raise ValueError(
            f"load_checkpoint: checkpoint {ckpt.name!r} ({ckpt.path}) does not match the model "
            f"{type(model).__name__}: " + "; ".join(p for p in parts if p) + "."
        )
    model.load_state_dict(state, strict=True)
    return model


def checkpoint_digest(ckpt: Checkpoint) -> str:
    """sha256 over the checkpoint's weight files (relative names and bytes, sorted by name)."""
    path = Path(ckpt.path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not NON_MODEL_FILES.match(p.name)
                   and p.suffix in (".safetensors", ".json") + STATE_DICT_SUFFIXES) \
        if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def capture_checkpoints(
    cfg: Any,
    checkpoints: Iterable[Checkpoint],
    out: str | os.PathLike[str],
    *,
    progress: bool = False,
) -> list[tuple[Checkpoint, Any]]:
    """Capture ``cfg`` (a :class:`repscope.capture.CaptureConfig` naming the base model) once per
    checkpoint into ``out/<checkpoint name>``; return ``[(checkpoint, ActivationStore), ...]``.

    The base model and tokenizer are loaded once; each checkpoint's weights are loaded into it
    with :func:`load_checkpoint`, and its store records the model as
    ``"<model id>@<checkpoint name>"`` with the checkpoint's own weights hash. Every capture
    resumes like a single one: rerunning after a crash skips complete stores.
    """
    model, tokenizer, model_id, _ = load_model(cfg.model, device=cfg.device)
    stores = []
    for ckpt in checkpoints:
        load_checkpoint(model, ckpt)
        model.eval()
        loaded = (model, tokenizer, f"{model_id}@{ckpt.name}", checkpoint_digest(ckpt))
        store = run_capture(replace(cfg, out=Path(out) / ckpt.name), progress=progress,
                            loaded=loaded)
        stores.append((ckpt, store))
    return stores
