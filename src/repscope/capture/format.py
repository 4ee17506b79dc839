"""The on-disk format of an ActivationStore, shared by its reader (:mod:`~.store`) and its
writer (:mod:`~.writer`): format name and version, storage dtypes, shard directory names,
:class:`StoreError`, the manifest check and the manifest's own checksum (``manifest_sha256``:
the sha256 of its canonical JSON without that key, so an edit of any field, such as a shard's
row count, is refused on open). See :mod:`repscope.capture.store` for the layout."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from repscope._version import __version__
from repscope.errors import StoreError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_DIGEST",
    "STORAGE_DTYPES",
    "StoreError",
    "check_manifest_digest",
    "manifest_digest",
    "read_manifest",
    "write_manifest",
]

FORMAT_NAME = "repscope.activation_store"
FORMAT_VERSION = 1
#: storage dtype name -> numpy dtype of the bytes on disk
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),  # the upper 16 bits of a float32
}
_SHARD_RE = re.compile(r"^\d{6}$")  # complete shard directories: shards/000000, ...


MANIFEST_DIGEST = "manifest_sha256"


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and check ``manifest.json`` (format name and version)."""
    file = Path(path) / "manifest.json"
    if not Path(path).is_dir():
        raise StoreError(f"Store {str(path)!r} does not exist (no such directory).")
    if not file.is_file():
        raise StoreError(f"{str(path)!r} is not an ActivationStore: it has no manifest.json.")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"Manifest {str(file)!r} is not valid JSON: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise StoreError(f"Manifest {str(file)!r} does not describe a {FORMAT_NAME}.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"Store {str(path)!r} has format version {version!r}, newer than the version "
            f"{FORMAT_VERSION} this repscope {__version__} reads. Upgrade repscope to open it."
        )
    check_manifest_digest(file, manifest)
    missing = [k for k in ("status", "layers", "dtype", "meta_columns", "shard_rows")
               if k not in manifest]
    if missing:
        raise StoreError(f"Manifest {str(file)!r} lacks the key(s) {missing}: it is damaged.")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
    text = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``path/manifest.json`` atomically with its checksum; return what was written."""
    from repscope._io import atomic_write_text

    stamped = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}))
    stamped[MANIFEST_DIGEST] = manifest_digest(stamped)
    atomic_write_text(Path(path) / "manifest.json", json.dumps(stamped, indent=2))
    return stamped


def check_manifest_digest(file: Path, manifest: dict[str, Any]) -> bool:
    """True when the manifest's checksum matches, False when it records none (a store written
    before checksums); a mismatch raises :class:`StoreError`."""
    recorded = manifest.get(MANIFEST_DIGEST)
    if recorded is None:
        return False
    if recorded != manifest_digest(manifest):
        raise StoreError(
            f"Manifest {str(file)!r} was modified after it was written: its content does not "
            f"match its recorded checksum {str(recorded)[:16]}.... Restore it, or re-run the "
            f"capture into a fresh directory."
        )
    return True
