"""The on-disk format of an ActivationStore, shared by its reader (:mod:`~.store`) and its
writer (:mod:`~.writer`): format name and version, storage dtypes, shard directory names,
:class:`StoreError` and the manifest check. See :mod:`repscope.capture.store` for the layout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from repscope._version import __version__

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "STORAGE_DTYPES", "StoreError", "read_manifest"]

FORMAT_NAME = "repscope.activation_store"
FORMAT_VERSION = 1
#: storage dtype name -> numpy dtype of the bytes on disk
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # the upper 16 bits of a float32
}
_SHARD_RE = re.compile(r"^\d{6}$")  # complete shard directories: shards/000000, ...


class StoreError(Exception):
    """An ActivationStore is missing, incomplete, corrupt, of a newer format, or different."""


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and check ``manifest.json`` (format name and version)."""
    file = Path(path) / "manifest.json"
    if not Path(path).is_dir():
        raise StoreError(f"Store {str(path)!r} does not exist (no such directory).")
    if not file.is_file():
        raise StoreError(f"{str(path)!r} is not an ActivationStore: it has no manifest.json.")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"Manifest {str(file)!r} is not valid JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"Manifest {str(file)!r} does not describe a {FORMAT_NAME}.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"Store {str(path)!r} has format version {version!r}, newer than the version "
            f"{FORMAT_VERSION} this repscope {__version__} reads. Upgrade repscope to open it."
        )
    return manifest
