"""StoreWriter: append rows to an ActivationStore, crash-safe and resumable.

See :mod:`repscope.capture.store` for the directory layout and the crash-safety protocol.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import logging
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repscope._io import atomic_write_text, fsync_dir
from repscope._version import __version__
from repscope.capture.format import (
    _SHARD_RE,
    FORMAT_NAME,
    FORMAT_VERSION,
    STORAGE_DTYPES,
    StoreError,
    read_manifest,
    write_manifest,
)
from repscope.capture.integrity import file_record
from repscope.capture.recovery import remove_dead_writer_debris

__all__ = ["StoreWriter"]

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _layer_filename(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "layer"
    fname, i = f"{base}.npy", 1
    while fname in taken or fname == "meta.npy":
        fname, i = f"{base}-{i}.npy", i + 1
    taken.add(fname)
    return fname


class StoreWriter:
    """Append rows to a store; resumes a partial store of the same identity.

    Rows arrive in numbered *chunks* (e.g. one per model batch), ``chunk = 0, 1, 2, ...``;
    the writer cuts them into shards of exactly ``shard_rows`` rows and writes each shard in a
    background thread (temporary directory, fsync, rename). Every shard records the resume
    point: the chunk holding the next unwritten row and how many of its rows are stored.

    Resuming: opening a writer on a partial store of the same identity keeps its complete
    shards and sets :attr:`resume_point` ``= (chunk, skip)``. The caller restarts its chunk
    stream at ``chunk``; the writer drops chunks before it and the first ``skip`` rows of it.
    If the chunks are reproduced exactly (same inputs, same batches), the finished store is
    byte-identical to an uninterrupted one.

    Args:
        layers: layer name -> number of features, in capture order.
        dtype: storage dtype, ``float32``, ``float16`` or ``bfloat16``.
        shard_rows: rows per shard file.
        meta_columns: per-row metadata column -> numpy dtype string
            (default ``doc_id: int64, position: int32, token_id: int32``).
        identity: what must match to resume (model, data, capture settings); a store at
            ``path`` with a different identity raises :class:`StoreError`.
        info: extra provenance for the manifest (model, data, pooling, config, ...).
        documents, vocab: saved beside the shards for :meth:`ActivationStore.metadata`.
        opener: opens the finished store for :meth:`finish` to return
            (:meth:`ActivationStore.create` passes :meth:`ActivationStore.open`, so the writer
            does not import the reader that creates it).
    """

    def __init__(self, path: Path, *, layers: Mapping[str, int], dtype: str = "float32",
                 shard_rows: int = 8192, meta_columns: Mapping[str, str] | None = None,
                 identity: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                 documents: Sequence[str] | None = None, vocab: Sequence[str] | None = None,
                 opener: Callable[..., Any]) -> None:
        from repscope._validate import check_choice, check_int

        check_choice(dtype, "dtype", "ActivationStore.create", STORAGE_DTYPES)
        check_int(shard_rows, "shard_rows", "ActivationStore.create", low=1)
        if not layers:
            raise ValueError("ActivationStore.create needs at least one layer; got none.")
        self.path = path
        self._opener = opener
        self.shard_rows = shard_rows
        self.dtype = dtype
        self._storage = STORAGE_DTYPES[dtype]
        self.layers = {str(k): int(v) for k, v in layers.items()}
        meta_columns = dict(meta_columns or {"doc_id": "int64", "position": "int32",
                                             "token_id": "int32"})
        self._meta_dtype = np.dtype([(k, v) for k, v in meta_columns.items()])
        taken: set[str] = set()
        layer_entries = [{"name": n, "dim": d, "file": _layer_filename(n, taken)}
                         for n, d in self.layers.items()]
        self._files = {e["name"]: e["file"] for e in layer_entries}
        full_identity = {
            "layers": [[n, d] for n, d in self.layers.items()], "dtype": dtype,
            "shard_rows": shard_rows, "meta_columns": meta_columns, **dict(identity or {}),
        }
        full_identity = json.loads(json.dumps(full_identity))  # tuples -> lists, as on disk
        self._lock_fd = self._acquire_lock()
        try:
            self._manifest = self._open_or_init(full_identity, layer_entries, meta_columns,
                                                dict(info or {}), documents, vocab)
            self._shards = self._recover()
        except BaseException:
            if not self._had_lock and not (self.path / "manifest.json").exists():
                (self.path / ".lock").unlink(missing_ok=True)  # leave no mark where we refused
            self._release_lock()
            raise
        self.n_rows = sum(int(s["rows"]) for s in self._shards)
        last = self._shards[-1]["resume"] if self._shards else {"chunk": 0, "skip": 0}
        self.resume_point: tuple[int, int] = (int(last["chunk"]), int(last["skip"]))
        self._next_chunk = self.resume_point[0]
        self._pending: list[tuple[int, int, dict[str, np.ndarray], np.ndarray]] = []
        self._pending_rows = 0
        self._last_chunk = self.resume_point[0] - 1
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- setup -----------------------------------------------------------------------

    def _acquire_lock(self) -> int:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"Output path {str(self.path)!r} exists and is not a directory.")
        self.path.mkdir(parents=True, exist_ok=True)
        self._had_lock = (self.path / ".lock").is_file()  # a writer was here before
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"Store {str(self.path)!r} is being written by another process."
            ) from None
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open_or_init(self, identity: dict[str, Any], layer_entries: list[dict[str, Any]],
                      meta_columns: dict[str, str], info: dict[str, Any],
                      documents: Sequence[str] | None, vocab: Sequence[str] | None) -> dict[str, Any]:
        remove_dead_writer_debris(self.path, self._had_lock)  # we hold the lock: none is alive
        if (self.path / "manifest.json").is_file():
            manifest = read_manifest(self.path)
            if manifest.get("identity") != identity:
                raise StoreError(_identity_mismatch(self.path, manifest.get("identity") or {},
                                                    identity))
            return manifest
        others = [p.name for p in self.path.iterdir() if p.name != ".lock"]
        if others:
            raise StoreError(
                f"Output directory {str(self.path)!r} is not empty and holds no ActivationStore "
                f"(found {sorted(others)[:5]}); refusing to write into it. Choose another "
                f"directory."
            )
        files = {}
        for name, items in (("documents.json", documents), ("vocab.json", vocab)):
            if items is not None:
                atomic_write_text(self.path / name, json.dumps(list(items)))
                files[name] = file_record(self.path / name)
        manifest = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "repscope_version": __version__, "status": "in_progress",
            "created": _now(), "completed": None,
            "layers": layer_entries, "dtype": self.dtype, "shard_rows": self.shard_rows,
            "meta_columns": meta_columns, **info, "identity": identity, "files": files,
        }
        (self.path / "shards").mkdir(exist_ok=True)
        fsync_dir(self.path)
        return write_manifest(self.path, manifest)

    def _recover(self) -> list[dict[str, Any]]:
        """Keep the contiguous complete shards; delete temporary and orphaned shard dirs."""
        root = self.path / "shards"
        root.mkdir(exist_ok=True)
        if self._manifest["status"] == "complete":
            return list(self._manifest["shards"])
        kept: list[dict[str, Any]] = []
        for p in sorted(root.iterdir()):
            ok = p.is_dir() and _SHARD_RE.match(p.name) and int(p.name) == len(kept)
            if ok:
                try:
                    rec = json.loads((p / "shard.json").read_text())
                    ok = all((p / f).is_file() and (p / f).stat().st_size == v["bytes"]
                             for f, v in rec["files"].items())
                except (OSError, json.JSONDecodeError, KeyError):
                    ok = False
            if ok:
                kept.append(rec)
            else:
                log.info("removing incomplete shard debris %s", p)
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if kept:
            log.info("resuming %s after %d complete shard(s)", self.path, len(kept))
        return kept

    # -- appending -------------------------------------------------------------------

    @property
    def n_shards(self) -> int:
        """Complete shards so far (including those found when resuming)."""
        return len(self._shards)

    @property
    def complete(self) -> bool:
        """True if the store at ``path`` is already complete (nothing left to write)."""
        return self._manifest["status"] == "complete"

    def append(self, acts: Mapping[str, np.ndarray], meta: Mapping[str, np.ndarray], *,
               chunk: int) -> None:
        """Add the rows of chunk number ``chunk`` (consecutive from :attr:`resume_point`).

        ``acts``: layer -> ``(m, d)`` array in the storage dtype (or float32, converted here;
        bfloat16 as uint16 bits); ``meta``: column -> ``(m,)`` array.
        """
        self._raise_if_failed()
        if self.complete:
            raise StoreError(f"Store {str(self.path)!r} is complete; it accepts no more rows.")
        if chunk != self._next_chunk:
            if chunk < self.resume_point[0]:
                return  # stored before the interruption
            raise ValueError(f"StoreWriter.append expected chunk {self._next_chunk}; got {chunk}.")
        self._next_chunk = chunk + 1
        if set(acts) != set(self.layers):
            raise ValueError(f"StoreWriter.append got layers {sorted(acts)}; expected "
                             f"{sorted(self.layers)}.")
        m = {int(np.shape(a)[0]) for a in acts.values()} | {int(np.shape(v)[0]) for v in meta.values()}
        if len(m) != 1:
            raise ValueError(f"StoreWriter.append got layers/metadata with different row counts {sorted(m)}.")
        rows = m.pop()
        records = np.empty(rows, dtype=self._meta_dtype)
        for name in self._meta_dtype.names or ():
            records[name] = meta[name]
        arrays = {}
        for name, a in acts.items():
            a = np.asarray(a)
            if a.ndim != 2 or a.shape[1] != self.layers[name]:
                raise ValueError(f"StoreWriter.append: layer {name!r} has shape {a.shape}; "
                                 f"expected (rows, {self.layers[name]}).")
            if a.dtype != self._storage:
                if self.dtype == "bfloat16":
                    raise TypeError("StoreWriter.append: bfloat16 rows must arrive as uint16 bits "
                                    "(tensor.to(torch.bfloat16).view(torch.int16)).")
                a = a.astype(self._storage)
            arrays[name] = a
        start = self.resume_point[1] if chunk == self.resume_point[0] else 0
        if start >= rows:
            start = rows  # everything of this chunk is stored already
        self._pending.append((chunk, start, arrays, records))
        self._pending_rows += rows - start
        self._last_chunk = chunk
        while self._pending_rows >= self.shard_rows:
            self._emit(self.shard_rows)

    def _emit(self, rows: int) -> None:
        """Cut the first ``rows`` pending rows into a shard and queue it for writing."""
        out = {name: np.empty((rows, d), dtype=self._storage) for name, d in self.layers.items()}
        meta = np.empty(rows, dtype=self._meta_dtype)
        filled = 0
        while filled < rows:
            chunk, start, arrays, records = self._pending[0]
            take = min(rows - filled, records.shape[0] - start)
            for name in self.layers:
                out[name][filled:filled + take] = arrays[name][start:start + take]
            meta[filled:filled + take] = records[start:start + take]
            filled += take
            if start + take == records.shape[0]:
                self._pending.pop(0)
            else:
                self._pending[0] = (chunk, start + take, arrays, records)
        self._pending_rows -= rows
        if self._pending:
            resume = {"chunk": self._pending[0][0], "skip": self._pending[0][1]}
        else:
            resume = {"chunk": self._last_chunk + 1, "skip": 0}
        index = len(self._shards)
        record = {"index": index, "rows": rows, "resume": resume}
        self._shards.append(record)
        self.n_rows += rows
        self._start_thread()
        self._queue.put((index, out, meta, record))
        self._raise_if_failed()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="repscope-store-writer",
                                            daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write_shard(*item)
                except BaseException as exc:  # surfaced in the caller's thread
                    self._error = exc

    def _write_shard(self, index: int, arrays: dict[str, np.ndarray], meta: np.ndarray,
                     record: dict[str, Any]) -> None:
        root = self.path / "shards"
        tmp = root / f".tmp-{index:06d}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {}
        for name, arr in arrays.items():
            files[self._files[name]] = _write_npy(tmp / self._files[name], arr)
        files["meta.npy"] = _write_npy(tmp / "meta.npy", meta)
        record["files"] = files
        with open(tmp / "shard.json", "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, root / f"{index:06d}")
        fsync_dir(root)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StoreError(f"Writing store {str(self.path)!r} failed: {self._error}") from self._error

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- finishing -------------------------------------------------------------------

    def finish(self, extra: Mapping[str, Any] | None = None) -> Any:
        """Write the remaining rows as a last shard, complete the manifest, return the store
        (an :class:`~repscope.capture.store.ActivationStore`, opened with ``verify="size"``)."""
        if not self.complete:
            if self._pending_rows:
                self._emit(self._pending_rows)
            self._drain()
            self._raise_if_failed()
            manifest = dict(self._manifest)
            manifest.update(extra or {})
            manifest.update({
                "status": "complete", "completed": _now(), "n_rows": self.n_rows,
                "shards": self._shards,
            })
            self._manifest = write_manifest(self.path, manifest)
        self.close()
        return self._opener(self.path, verify="size")

    def close(self) -> None:
        """Wait for queued shards and release the store lock (no manifest update)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(BaseException):
                self._drain()
            self._release_lock()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _write_npy(path: Path, arr: np.ndarray) -> dict[str, Any]:
    """Write ``arr`` as a ``.npy`` file, fsync it, return its size and sha256."""
    arr = np.ascontiguousarray(arr)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
    head = header.getvalue()
    body = arr.reshape(-1).view(np.uint8)  # the raw bytes, no copy
    digest = hashlib.sha256(head)
    digest.update(body)
    with open(path, "wb") as f:
        f.write(head)
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(head) + body.nbytes, "sha256": digest.hexdigest()}


def _identity_mismatch(path: Path, old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            a, b = json.dumps(old.get(key)), json.dumps(new.get(key))
            a = a if len(a) <= 60 else a[:57] + "..."
            b = b if len(b) <= 60 else b[:57] + "..."
            diffs.append(f"{key}: stored {a}, requested {b}")
    return (f"Output directory {str(path)!r} holds a different ActivationStore ("
            + "; ".join(diffs) + "). Choose another output directory or delete that one.")
