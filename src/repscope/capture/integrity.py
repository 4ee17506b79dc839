"""Checksums of a store's own files, and the full integrity check behind ``repscope info``.

Every file of a store is covered by a checksum the store records:

- ``manifest.json`` carries ``manifest_sha256``, the sha256 of its own canonical JSON without
  that key (:mod:`repscope.capture.format`), so an edit of any field (a shard's row count, a
  layer's width) is caught when the store is opened;
- the manifest's ``files`` maps ``documents.json`` and ``vocab.json`` to their byte size and
  sha256 (checked on first use, or all at once by :func:`verify_store`);
- each shard file's size and sha256 sit in the shard record (``shard.json``, and the manifest's
  shard list once complete).

:func:`verify_store` also checks what no checksum states: that each ``.npy`` header holds the
recorded rows, the layer's width and the storage dtype, that metadata rows point at existing
documents and vocabulary entries, and that the row total matches. Stores written before these
checksums existed (``manifest_sha256`` absent) are verified as far as they can be, and the
report names what could not be checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repscope.capture.format import STORAGE_DTYPES, check_manifest_digest
from repscope.errors import StoreError

__all__ = [
    "SIDE_FILES",
    "IntegrityReport",
    "check_side_file_sizes",
    "file_record",
    "read_side_file",
    "verify_store",
]
#: files beside the shards whose checksums the manifest records (under ``files``)
SIDE_FILES = ("documents.json", "vocab.json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": digest}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def read_side_file(store_path: Path, manifest: dict[str, Any], name: str,
                   verify: bool = True) -> list[str]:
    """The list in ``documents.json`` / ``vocab.json`` (empty if the store has none), checked
    against the manifest's checksum (``verify``) and parsed; problems raise :class:`StoreError`."""
    file = Path(store_path) / name
    recorded = (manifest.get("files") or {}).get(name)
    if not file.is_file():
        if recorded is not None:
            raise StoreError(f"Store file {str(file)!r} is missing (the manifest records it).")
        return []
    data = file.read_bytes()
    if recorded is not None and verify:
        if len(data) != recorded["bytes"] or _sha256(data) != recorded["sha256"]:
            raise StoreError(
                f"Store file {str(file)!r} is corrupt: its size or sha256 does not match the "
                f"manifest ({len(data)} bytes, recorded {recorded['bytes']}). Restore it, or "
                f"re-run the capture into a fresh directory."
            )
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"Store file {str(file)!r} is not valid JSON: {exc}.") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StoreError(f"Store file {str(file)!r} must hold a JSON list of strings.")
    return value


def check_side_file_sizes(store_path: Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`StoreError` if a recorded side file is missing or has another size."""
    for name, rec in (manifest.get("files") or {}).items():
        file = Path(store_path) / name
        if not file.is_file():
            raise StoreError(f"Store file {str(file)!r} is missing (the manifest records it).")
        size = file.stat().st_size
        if size != rec["bytes"]:
            raise StoreError(
                f"Store file {str(file)!r} is truncated or corrupt: it has {size} bytes, the "
                f"manifest records {rec['bytes']}. Re-run the capture into a fresh directory."
            )


@dataclass
class IntegrityReport:
    """What :func:`verify_store` checked, and what it could not check (older stores)."""

    files: int = 0
    "Files whose checksum matched."
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def verify_store(store: Any, progress: Any = None) -> IntegrityReport:
    """Check every file of ``store`` (an :class:`~repscope.capture.ActivationStore`): the
    manifest's checksum, documents and vocabulary, every shard file's sha256 and ``.npy``
    header, the metadata's references and the row total. Raises :class:`StoreError` at the
    first problem; returns what was (and was not) checked."""
    report = IntegrityReport()
    manifest = store.manifest
    path = Path(store.path)
    if check_manifest_digest(path / "manifest.json", manifest):
        report.checked.append("manifest checksum")
        report.files += 1
    else:
        report.unchecked.append(
            f"the manifest's own checksum (written by repscope "
            f"{manifest.get('repscope_version', '?')}, before manifests carried one)")
    recorded = manifest.get("files") or {}
    side = {}
    for name in SIDE_FILES:
        side[name] = read_side_file(path, manifest, name)
        if name in recorded:
            report.files += 1
        elif (path / name).is_file():
            report.unchecked.append(f"{name} checksum (not recorded by this older store; "
                                    f"the file parses)")
    report.checked.append("documents and vocabulary")
    meta_dtype = np.dtype([(k, v) for k, v in manifest["meta_columns"].items()])
    storage = STORAGE_DTYPES[manifest["dtype"]]
    dims = {e["file"]: int(e["dim"]) for e in manifest["layers"]}
    n_docs, n_vocab = len(side["documents.json"]), len(side["vocab.json"])
    for shard in store.shards:
        for fname in shard.files:
            store._verify_file(shard, fname)
            report.files += 1
            _, _, dtype, shape = store._layout(shard, fname)
            want = ((shard.rows,), meta_dtype) if fname == "meta.npy" else (
                (shard.rows, dims[fname]), storage)
            if tuple(shape) != want[0] or dtype != want[1]:
                file = path / "shards" / f"{shard.index:06d}" / fname
                raise StoreError(
                    f"Shard file {str(file)!r} holds shape {tuple(shape)} and dtype {dtype}; the "
                    f"manifest records shape {want[0]} and dtype {want[1]}.")
            if progress is not None:
                progress(shard.files[fname]["bytes"])
        _check_references(store, shard, n_docs, n_vocab)
    report.checked.append("shard checksums, headers and metadata references")
    if manifest.get("status") == "complete" and "n_rows" in manifest:
        if int(manifest["n_rows"]) != store.n_rows:
            raise StoreError(f"Store {str(path)!r} records n_rows={manifest['n_rows']} but its "
                             f"shards hold {store.n_rows} rows.")
        report.checked.append("row total")
    return report


def _check_references(store: Any, shard: Any, n_docs: int, n_vocab: int) -> None:
    """Metadata rows must point at existing documents and vocabulary entries."""
    meta = store._rows_of(shard, "meta.npy", slice(0, shard.rows))
    names = meta.dtype.names or ()
    file = Path(store.path) / "shards" / f"{shard.index:06d}" / "meta.npy"
    for column, n in (("doc_id", n_docs), ("token_id", n_vocab)):
        if column in names and n and meta.size:
            lo, hi = int(meta[column].min()), int(meta[column].max())
            if lo < 0 or hi >= n:
                raise StoreError(f"Shard file {str(file)!r} refers to {column} {hi if hi >= n else lo}"
                                 f", outside the store's {n} entries.")
