"""ActivationStores on object storage (``s3://``, ``gs://``, ``az://`` ... through fsspec).

Object stores have no rename and no directories, so the local crash-safety protocol (write a
temporary shard directory, rename it) does not carry over. Instead a store lives in a bucket
as objects under a prefix and is published in this order:

1. every shard's data files (``shards/NNNNNN/<layer>.npy``, ``meta.npy``), then that shard's
   ``shard.json`` (sizes and sha256 of the data files): a shard counts as uploaded once its
   ``shard.json`` is there and equals the local one;
2. the other top-level files (``documents.json``, ``vocab.json``);
3. ``manifest.json`` last: it is the commit. A prefix without it is an unfinished upload that
   no reader opens.

One object ``PUT`` is atomic (a multipart upload killed half way leaves no object), so an
upload killed at any point leaves complete objects only; running it again (:func:`push_store`,
or the same ``repscope capture`` command) skips the shards already there and sends the rest.

Reading (:func:`pull_store`, called by :meth:`ActivationStore.open` for a URL) streams each
object into a local cache directory in blocks (memory bounded by fsspec's block size, never a
whole shard), checks its size and sha256 against ``shard.json`` and then opens the cached copy
like any local store; a second open of an unchanged store compares the manifest and downloads
nothing. Capturing to a URL (:meth:`ActivationStore.create`) writes the store in the cache
directory with the usual local protocol (so a killed capture resumes there) and uploads it
when it finishes.

Endpoints and credentials come from the object store's own configuration (for S3 the usual
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` variables or
``~/.aws``), or ``storage_options``. The cache directory is ``$REPSCOPE_CACHE_DIR/stores`` (by
default ``~/.cache/repscope/stores``), one sub-directory per URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from repscope._io import atomic_write_bytes
from repscope.capture.format import _SHARD_RE, StoreError

__all__ = ["cache_dir_for", "is_url", "pull_store", "push_store", "store_url"]

log = logging.getLogger(__name__)

_URL_RE = re.compile(r"^([a-z][a-z0-9+.\-]*):/+(.+)$")
_LOCAL_PROTOCOLS = ("file", "local")
_PULLED = ".pulled"  # cache marker: sha256 of the manifest whose files were all verified
_BLOCK = 1 << 22


def store_url(path: Any) -> str | None:
    """``path`` as an object-store URL (``"s3://bucket/prefix"``), or None for a local path.
    Accepts the form a ``pathlib.Path`` leaves of a URL (``s3:/bucket/prefix``)."""
    m = _URL_RE.match(str(path))
    if m is None or m.group(1) in _LOCAL_PROTOCOLS:
        return None
    from fsspec.registry import known_implementations, registry

    if m.group(1) not in known_implementations and m.group(1) not in registry:
        return None
    return f"{m.group(1)}://{m.group(2).rstrip('/')}"


def is_url(path: Any) -> bool:
    """Whether ``path`` names a store on object storage rather than a local directory."""
    return store_url(path) is not None


def cache_dir_for(url: str) -> Path:
    """The local directory that caches (and stages the capture of) the store at ``url``."""
    root = Path(os.environ.get("REPSCOPE_CACHE_DIR") or Path.home() / ".cache" / "repscope")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[1])[-48:]
    return root / "stores" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def _read(fs: Any, path: str) -> bytes | None:
    try:
        with fs.open(path, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError:
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def push_store(local: str | Path, url: str, *, storage_options: dict[str, Any] | None = None) -> int:
    """Upload the complete local store ``local`` to ``url`` (module docstring: shards, then
    documents, then the manifest); resumable. Returns the number of objects sent."""
    local = Path(local)
    url = store_url(url) or url
    manifest = local / "manifest.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("status") != "complete":
        raise StoreError(f"Store {str(local)!r} is not complete: only a finished capture is uploaded.")
    fs, root = _fs(url, storage_options)
    fs.invalidate_cache()
    sent = 0
    for shard in sorted(p for p in (local / "shards").iterdir() if _SHARD_RE.match(p.name)):
        record = (shard / "shard.json").read_bytes()
        dest = f"{root}/shards/{shard.name}"
        if _read(fs, f"{dest}/shard.json") == record:
            continue  # uploaded by an earlier run
        for fname in sorted(json.loads(record)["files"]):
            fs.put_file(str(shard / fname), f"{dest}/{fname}")
            sent += 1
        fs.put_file(str(shard / "shard.json"), f"{dest}/shard.json")  # the shard's commit
        sent += 1
    for file in sorted(local.iterdir()):
        if file.is_file() and file.name != "manifest.json" and not file.name.startswith("."):
            fs.put_file(str(file), f"{root}/{file.name}")
            sent += 1
    fs.put_file(str(manifest), f"{root}/manifest.json")  # the store's commit
    log.info("uploaded store %s to %s (%d objects)", local, url, sent + 1)
    return sent + 1


def pull_store(url: str, local: str | Path | None = None, *,
               storage_options: dict[str, Any] | None = None) -> Path:
    """Bring the store at ``url`` into ``local`` (default :func:`cache_dir_for`), streaming
    every object that is missing or differs, checking sizes and sha256; returns the directory.
    Raises :class:`StoreError` when ``url`` holds no committed store or an object is corrupt."""
    url = store_url(url) or url
    local = Path(local) if local is not None else cache_dir_for(url)
    fs, root = _fs(url, storage_options)
    fs.invalidate_cache()
    manifest = _read(fs, f"{root}/manifest.json")
    if manifest is None:
        raise StoreError(
            f"{url!r} is not an ActivationStore: it has no manifest.json (nothing was uploaded "
            f"there, or the upload has not finished: run the same capture again to resume it).")
    digest = hashlib.sha256(manifest).hexdigest()
    marker = local / _PULLED
    if marker.is_file() and marker.read_text() == digest and (local / "manifest.json").is_file():
        return local  # this manifest's files were all fetched and verified before
    local.mkdir(parents=True, exist_ok=True)
    for dest in sorted(fs.ls(f"{root}/shards", detail=False) if fs.exists(f"{root}/shards") else []):
        name = dest.rstrip("/").rsplit("/", 1)[-1]
        if not _SHARD_RE.match(name):
            continue
        record = _read(fs, f"{dest}/shard.json")
        if record is None:
            continue  # a shard of an unfinished upload: not listed by a committed manifest
        shard = local / "shards" / name
        shard.mkdir(parents=True, exist_ok=True)
        for fname, spec in json.loads(record)["files"].items():
            _fetch(fs, f"{dest}/{fname}", shard / fname, spec, url)
        atomic_write_bytes(shard / "shard.json", record)
    for path in fs.ls(root, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name not in ("manifest.json", "shards") and fs.isfile(path):
            atomic_write_bytes(local / name, _read(fs, path) or b"")
    atomic_write_bytes(local / "manifest.json", manifest)
    atomic_write_bytes(marker, digest.encode())
    log.info("store %s is in %s", url, local)
    return local


def _fetch(fs: Any, src: str, dest: Path, spec: dict[str, Any], url: str) -> None:
    """Stream ``src`` to ``dest`` unless a verified copy is there; check size and sha256."""
    if dest.is_file() and dest.stat().st_size == spec["bytes"] and _sha256(dest) == spec["sha256"]:
        return
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with fs.open(src, "rb", block_size=_BLOCK) as fin, open(part, "wb") as fout:
            while chunk := fin.read(_BLOCK):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if part.stat().st_size != spec["bytes"] or h.hexdigest() != spec["sha256"]:
            raise StoreError(
                f"Object {src!r} of store {url!r} is corrupt: its size or sha256 differs from "
                f"its shard.json. Upload the store again.")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
