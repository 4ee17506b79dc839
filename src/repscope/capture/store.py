"""ActivationStore: a crash-safe, append-only, memory-mappable directory of activations.

Layout (``FORMAT_VERSION`` 1)::

    store/
      manifest.json         identity, provenance, layers, dims, dtype; the shard list once
                            complete; checksums of itself and of documents.json / vocab.json
      documents.json        the input documents (row metadata refers to them by doc_id)
      vocab.json            token id -> token string (token-level stores)
      shards/000000/        one directory per shard of ``shard_rows`` rows (the last may be shorter)
        <layer>.npy         (rows, d) array in the storage dtype (bfloat16 stored as uint16 bits)
        meta.npy            structured array, one record per row (doc_id, position, token_id, ...)
        shard.json          rows, byte size + sha256 of every file, the writer's resume point

Crash safety: a shard is written into ``shards/.tmp-NNNNNN/``, every file fsynced, then the
directory is renamed to ``shards/NNNNNN`` and ``shards/`` fsynced. A shard directory under its
final name is therefore complete; anything else is debris that the next writer deletes. The
manifest is replaced atomically (temporary file, fsync, rename). A capture killed at any point
(``kill -9`` included) and started again continues after the last complete shard and ends with
exactly the same arrays and metadata as an uninterrupted run, provided the writer is fed the
same chunks (see :class:`repscope.capture.writer.StoreWriter`).

Reading never loads a whole store: ``read`` touches only the shards holding the rows asked for
(contiguous rows with positioned reads, scattered rows through a transient memory map), and
``iter_batches`` streams a layer with memory bounded by one batch. ``open`` checks the
manifest (format, version, its own checksum) and every file's size; each file's sha256 is
checked the first time it is read (``verify="lazy"``, the default), all at once (``"full"``,
:meth:`ActivationStore.verify`, see :mod:`repscope.capture.integrity`), or never (``"size"``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope.capture.format import (
    _SHARD_RE,
    FORMAT_VERSION,
    STORAGE_DTYPES,
    StoreError,
    read_manifest,
)
from repscope.capture.integrity import (
    IntegrityReport,
    check_side_file_sizes,
    read_side_file,
    verify_store,
)
from repscope.capture.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "STORAGE_DTYPES",
    "ActivationStore",
    "ShardInfo",
    "StoreError",
    "read_manifest",
]


Verify = Literal["lazy", "full", "size"]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Upcast stored values to float32 (bfloat16 bits shifted into the high half)."""
    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


@dataclass(frozen=True)
class ShardInfo:
    """One complete shard: its index, first row, row count and files."""

    index: int
    start: int
    rows: int
    files: dict[str, dict[str, Any]]  # file name -> {"bytes": int, "sha256": str}


# --------------------------------------------------------------------------- reading


class ActivationStore:
    """Read side of a store directory; create one with :meth:`create` (a :class:`StoreWriter`).

    Example::

        store = ActivationStore.open("repscope-out/store")
        X = store.read("encoder.layer.3")              # (n_rows, d) float32
        for batch in store.iter_batches("encoder.layer.3", batch_size=4096):
            ...                                          # (<=4096, d) float32
        meta = store.metadata()                          # doc_id, position, token_id, token
    """

    def __init__(self, path: Path, manifest: dict[str, Any], shards: list[ShardInfo],
                 verify: Verify) -> None:
        self.path = path
        self._manifest = manifest
        self._shards = shards
        self._verify = verify
        self._verified: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self._layouts: dict[tuple[int, str], tuple[Path, int, np.dtype[Any], tuple[int, ...]]] = {}
        self._offsets = np.cumsum([0] + [s.rows for s in shards])  # (n_shards + 1,)
        self._files = {entry["name"]: entry["file"] for entry in manifest["layers"]}
        self._dims = {entry["name"]: int(entry["dim"]) for entry in manifest["layers"]}
        self._documents: list[str] | None = None
        self._vocab: list[str] | None = None

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, verify: Verify = "lazy",
             allow_incomplete: bool = False) -> ActivationStore:
        """Open a store, checking its manifest and the presence and size of every shard file.

        Args:
            verify: ``"lazy"`` checks each file's sha256 the first time it is read, ``"full"``
                checks all of them now, ``"size"`` checks sizes only (fast sparse access to
                very large stores).
            allow_incomplete: open a store whose capture has not finished (its complete
                shards only); otherwise that raises :class:`StoreError`.
        """
        if verify not in ("lazy", "full", "size"):
            raise ValueError(
                f"The 'verify' parameter of ActivationStore.open must be one of "
                f"{{'lazy', 'full', 'size'}}. Got {verify!r} instead."
            )
        path = Path(path)
        manifest = read_manifest(path)
        if manifest["status"] != "complete" and not allow_incomplete:
            n = len(_list_shard_dirs(path))
            raise StoreError(
                f"Store {str(path)!r} is incomplete: its capture stopped after {n} complete "
                f"shard(s). Run the same capture again to resume it, or open it with "
                f"allow_incomplete=True."
            )
        shards = _load_shards(path, manifest)
        check_side_file_sizes(path, manifest)
        store = cls(path, manifest, shards, verify)
        if verify == "full":
            store.verify()
        return store

    @staticmethod
    def create(path: str | Path, *, layers: Mapping[str, int], dtype: str = "float32",
               shard_rows: int = 8192, meta_columns: Mapping[str, str] | None = None,
               identity: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
               documents: Sequence[str] | None = None, vocab: Sequence[str] | None = None,
               ) -> StoreWriter:
        """Create a store, or resume writing the store of the same identity at ``path``.

        See :class:`StoreWriter` for the arguments and the resume protocol; its
        :meth:`~StoreWriter.finish` returns the finished store opened with :meth:`open`.
        """
        return StoreWriter(Path(path), layers=layers, dtype=dtype, shard_rows=shard_rows,
                           meta_columns=meta_columns, identity=identity, info=info,
                           documents=documents, vocab=vocab, opener=ActivationStore.open)

    # -- description -----------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (a copy)."""
        return json.loads(json.dumps(self._manifest))

    @property
    def layers(self) -> list[str]:
        """Layer names in capture order."""
        return [entry["name"] for entry in self._manifest["layers"]]

    @property
    def n_rows(self) -> int:
        """Rows per layer (every layer has the same rows)."""
        return int(self._offsets[-1])

    @property
    def dtype(self) -> str:
        """Storage dtype: ``float32``, ``float16`` or ``bfloat16`` (reads return float32)."""
        return str(self._manifest["dtype"])

    @property
    def pooling(self) -> str | None:
        return self._manifest.get("pooling")

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self._shards)

    @property
    def complete(self) -> bool:
        return self._manifest["status"] == "complete"

    def dim(self, layer: str) -> int:
        """Number of features of ``layer``."""
        return self._dims[self._check_layer(layer)]

    def nbytes(self) -> int:
        """Bytes on disk of all shard files."""
        return sum(f["bytes"] for s in self._shards for f in s.files.values())

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, layers={len(self.layers)}, "
                f"n_rows={self.n_rows}, dtype={self.dtype!r})")

    def _check_layer(self, layer: str) -> str:
        if layer not in self._dims:
            import difflib

            close = difflib.get_close_matches(layer, self.layers, n=3, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            raise KeyError(f"Store {str(self.path)!r} has no layer {layer!r}.{hint} "
                           f"Its layers: {self.layers}.")
        return layer

    # -- verification ----------------------------------------------------------------

    def verify(self, progress: Any = None) -> IntegrityReport:
        """Check every file against the store's checksums and structure; raise
        :class:`StoreError` at the first problem (see :mod:`repscope.capture.integrity`).

        ``progress``, if given, is called with the number of bytes checked after each shard
        file. Returns what was checked, and what a store written before some checksums
        existed could not have checked.
        """
        return verify_store(self, progress)

    def _verify_file(self, shard: ShardInfo, fname: str) -> None:
        key = (shard.index, fname)
        if key in self._verified:
            return
        file = self.path / "shards" / f"{shard.index:06d}" / fname
        digest = _sha256_file(file)
        if digest != shard.files[fname]["sha256"]:
            raise StoreError(
                f"Shard file {str(file)!r} is corrupt: its sha256 {digest[:16]}... does not match "
                f"the recorded {shard.files[fname]['sha256'][:16]}.... The file was modified "
                f"after the capture; re-run the capture into a fresh directory."
            )
        with self._lock:
            self._verified.add(key)

    def _layout(self, shard: ShardInfo, fname: str) -> tuple[Path, int, np.dtype[Any], tuple[int, ...]]:
        """(file, data offset, dtype, shape) of a shard file, checked once (and its sha256
        unless ``verify="size"``)."""
        key = (shard.index, fname)
        layout = self._layouts.get(key)
        if layout is None:
            if self._verify != "size":
                self._verify_file(shard, fname)
            file = self.path / "shards" / f"{shard.index:06d}" / fname
            try:
                with open(file, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    offset = f.tell()
            except (ValueError, OSError) as exc:
                raise StoreError(f"Shard file {str(file)!r} cannot be read: {exc}.") from None
            if fortran or shape[:1] != (shard.rows,):
                raise StoreError(
                    f"Shard file {str(file)!r} holds shape {shape}; the manifest records "
                    f"{shard.rows} rows."
                )
            layout = (file, offset, dtype, shape)
            with self._lock:
                self._layouts[key] = layout
        return layout

    def _rows_of(self, shard: ShardInfo, fname: str, sel: slice | np.ndarray) -> np.ndarray:
        """Rows ``sel`` (a slice, or sorted local indices) of one shard file, as a new array.

        Contiguous rows are read with one positioned read; scattered rows through a transient
        memory map, so resident memory stays bounded by the rows returned.
        """
        file, offset, dtype, shape = self._layout(shard, fname)
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        if isinstance(sel, slice):
            count = (sel.stop - sel.start) * row_items
            out = np.fromfile(file, dtype=dtype, count=count,
                              offset=offset + sel.start * row_items * dtype.itemsize)
            return out.reshape((sel.stop - sel.start, *shape[1:]))
        mm = np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)
        try:
            return np.array(mm[sel])
        finally:
            del mm

    # -- reading ---------------------------------------------------------------------

    def _row_index(self, rows: Any, fn: str) -> np.ndarray | slice:
        n = self.n_rows
        if rows is None:
            return slice(0, n)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            return slice(start, stop) if step == 1 else np.arange(start, stop, step)
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(
                    f"The 'rows' parameter of {fn} must be a boolean mask of length "
                    f"n_rows={n}. Got shape {idx.shape} instead."
                )
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
            raise ValueError(
                f"The 'rows' parameter of {fn} must be a slice, a 1-D integer index array or a "
                f"boolean mask. Got an array of dtype {idx.dtype} and shape {idx.shape} instead."
            )
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(np.asarray(rows)[(idx < 0) | (idx >= n)][0])
            raise IndexError(f"Row index {bad} is out of range for store with n_rows={n}.")
        return idx

    def _gather(self, fname: str, index: np.ndarray | slice, convert: bool) -> np.ndarray:
        """Rows ``index`` of file ``fname`` across shards, read shard by shard."""
        offsets = self._offsets
        if isinstance(index, slice):
            parts = []
            first = int(np.searchsorted(offsets, index.start, side="right")) - 1
            for s in range(max(first, 0), len(self._shards)):
                lo = max(index.start, offsets[s])
                hi = min(index.stop, offsets[s + 1])
                if lo >= index.stop:
                    break
                if hi > lo:
                    parts.append(self._rows_of(self._shards[s], fname,
                                               slice(lo - offsets[s], hi - offsets[s])))
            return self._concat(parts, fname, convert)
        order = np.argsort(index, kind="stable")
        sorted_idx = index[order]
        shard_of = np.searchsorted(offsets, sorted_idx, side="right") - 1  # (m,)
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        parts = []
        for chunk, sh in zip(np.split(sorted_idx, bounds), np.split(shard_of, bounds), strict=True):
            if chunk.size:
                s = int(sh[0])
                parts.append(self._rows_of(self._shards[s], fname, chunk - offsets[s]))
        out = self._concat(parts, fname, convert)
        result = np.empty_like(out)
        result[order] = out
        return result

    def _concat(self, parts: list[np.ndarray], fname: str, convert: bool) -> np.ndarray:
        if not parts:
            if fname == "meta.npy":
                return np.empty(0, dtype=self._meta_dtype())
            d = next(self._dims[n] for n, f in self._files.items() if f == fname)
            return np.empty((0, d), dtype=np.float32 if convert else STORAGE_DTYPES[self.dtype])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return _to_float32(out, self.dtype) if convert else out

    def _meta_dtype(self) -> np.dtype[Any]:
        return np.dtype([(k, v) for k, v in self._manifest["meta_columns"].items()])

    def read(self, layer: str, rows: Any = None) -> np.ndarray:
        """Rows of ``layer`` as a float32 array ``(m, d)`` (float16/bfloat16 are upcast).

        ``rows``: ``None`` (all), a slice, an integer index array (any order, repeats allowed;
        the result follows it) or a boolean mask. Only the shards holding those rows are read.
        """
        fname = self._files[self._check_layer(layer)]
        return self._gather(fname, self._row_index(rows, "ActivationStore.read"), convert=True)

    def iter_batches(self, layer: str, batch_size: int = 65536,
                     rows: Any = None) -> Iterator[np.ndarray]:
        """Stream ``layer`` as float32 batches of at most ``batch_size`` rows, in row order
        (or in the order of ``rows``); memory stays bounded by one batch."""
        from repscope._validate import check_int

        check_int(batch_size, "batch_size", "ActivationStore.iter_batches", low=1)
        fname = self._files[self._check_layer(layer)]
        index = self._row_index(rows, "ActivationStore.iter_batches")
        if isinstance(index, slice):
            for lo in range(index.start, index.stop, batch_size):
                yield self._gather(fname, slice(lo, min(lo + batch_size, index.stop)), True)
        else:
            for lo in range(0, index.size, batch_size):
                yield self._gather(fname, index[lo:lo + batch_size], True)

    # -- metadata --------------------------------------------------------------------

    @property
    def documents(self) -> list[str]:
        """The input documents (``doc_id`` indexes this list); empty if none were stored."""
        if self._documents is None:
            self._documents = read_side_file(self.path, self._manifest, "documents.json",
                                             verify=self._verify != "size")
        return self._documents

    @property
    def vocab(self) -> list[str]:
        """Token strings by token id; empty if the store has no token-level rows."""
        if self._vocab is None:
            self._vocab = read_side_file(self.path, self._manifest, "vocab.json",
                                         verify=self._verify != "size")
        return self._vocab

    def metadata(self, rows: Any = None) -> Any:
        """A pandas DataFrame, one row per stored row (index = row number).

        Token-level stores: ``doc_id``, ``position`` (in the sequence the model saw),
        ``token_id``, ``token`` and, since the token-selection release, ``doc_position`` (in
        the document's tokenisation), ``char_start``/``char_end`` (the token's characters in
        ``documents[doc_id]``, -1 for special tokens), ``window`` and ``special``. Pooled
        stores: ``doc_id``, ``text`` (the document) and, in new stores, ``n_tokens``,
        ``n_kept``, ``n_pooled``, ``truncated``.
        """
        import pandas as pd

        index = self._row_index(rows, "ActivationStore.metadata")
        meta = self._gather("meta.npy", index, convert=False)
        row_ids = np.arange(index.start, index.stop) if isinstance(index, slice) else index
        df = pd.DataFrame({name: meta[name] for name in meta.dtype.names or ()}, index=row_ids)
        if "token_id" in df and self.vocab:
            vocab = np.asarray(self.vocab, dtype=object)
            df["token"] = vocab[df["token_id"].to_numpy()]
        elif "doc_id" in df and "token_id" not in df and self.documents:
            docs = np.asarray(self.documents, dtype=object)
            df["text"] = docs[df["doc_id"].to_numpy()]
        return df

    def document_tokens(self) -> Any:
        """A pandas DataFrame, one row per document (index = ``doc_id``): ``n_tokens`` (its full
        tokenisation), ``n_kept`` (tokens the model saw), ``n_windows``, ``n_selected`` (rows
        after the token selection) and ``truncated``. Stores written before this record existed
        give the documents' index only."""
        import pandas as pd

        table = self._manifest.get("document_tokens")
        if not table:
            return pd.DataFrame(index=pd.RangeIndex(len(self.documents), name="doc_id"))
        df = pd.DataFrame({k: np.asarray(v, dtype=np.int64) for k, v in table.items()})
        df.index.name = "doc_id"
        df["truncated"] = df["n_kept"] < df["n_tokens"]
        return df

    def text_around(self, rows: Any, chars: int = 40,
                    mark: tuple[str, str] = ("[[", "]]")) -> list[str]:
        """Each token row shown in its document's text: ``chars`` characters either side and
        the token's own characters between ``mark`` (from the ``char_start``/``char_end``
        metadata). Rows without a span (special tokens, older stores) fall back to
        :meth:`contexts`."""
        index = self._row_index(rows, "ActivationStore.text_around")
        idx = np.arange(index.start, index.stop) if isinstance(index, slice) else index
        meta = self._gather("meta.npy", idx, convert=False)
        if "char_start" not in (meta.dtype.names or ()):
            return self.contexts(idx, mark=mark)
        out = []
        for r, rec in zip(idx, meta, strict=True):
            lo, hi = int(rec["char_start"]), int(rec["char_end"])
            if lo < 0 or not self.documents:
                out.append(self.contexts([int(r)], mark=mark)[0])
                continue
            text = self.documents[int(rec["doc_id"])]
            left, right = max(lo - chars, 0), min(hi + chars, len(text))
            out.append(("..." if left else "") + text[left:lo] + mark[0] + text[lo:hi] + mark[1]
                       + text[hi:right] + ("..." if right < len(text) else ""))
        return out

    def contexts(self, rows: Any, window: int = 8, mark: tuple[str, str] = ("[[", "]]")) -> list[str]:
        """Text around each row: its document's tokens within ``window`` positions, the row's
        own token between ``mark``; the document text for pooled stores."""
        index = self._row_index(rows, "ActivationStore.contexts")
        idx = np.arange(index.start, index.stop) if isinstance(index, slice) else index
        meta = self._gather("meta.npy", idx, convert=False)
        if "token_id" not in (meta.dtype.names or ()):
            return [self.documents[int(d)] for d in meta["doc_id"]]
        out = []
        for r, rec in zip(idx, meta, strict=True):
            lo, hi = max(int(r) - window, 0), min(int(r) + window + 1, self.n_rows)
            around = self._gather("meta.npy", slice(lo, hi), convert=False)
            keep = around["doc_id"] == rec["doc_id"]
            toks = [self.vocab[t] if t < len(self.vocab) else str(t) for t in around["token_id"]]
            pieces = [f"{mark[0]}{tok}{mark[1]}" if lo + j == r else tok
                      for j, tok in enumerate(toks) if keep[j]]
            out.append(" ".join(pieces))
        return out


def _list_shard_dirs(path: Path) -> list[int]:
    shard_root = path / "shards"
    if not shard_root.is_dir():
        return []
    return sorted(int(p.name) for p in shard_root.iterdir() if p.is_dir() and _SHARD_RE.match(p.name))


def _load_shards(path: Path, manifest: dict[str, Any]) -> list[ShardInfo]:
    """Shard records (from the manifest once complete, else from each shard.json), checking
    that they are contiguous and that every file exists with its recorded size."""
    present = _list_shard_dirs(path)
    if manifest["status"] == "complete":
        records = manifest["shards"]
        if len(present) != len(records) or present != list(range(len(records))):
            raise StoreError(
                f"Store {str(path)!r} should hold shards 0..{len(records) - 1} but its shards/ "
                f"directory holds {len(present)} shard(s): the store was modified after capture."
            )
    else:
        records = []
        for i in present:
            if i != len(records):
                break  # a gap: later shards are unusable (a writer will remove them)
            rec_file = path / "shards" / f"{i:06d}" / "shard.json"
            try:
                records.append(json.loads(rec_file.read_text()))
            except (OSError, json.JSONDecodeError) as exc:
                raise StoreError(f"Shard record {str(rec_file)!r} is unreadable: {exc}.") from None
    shards, start = [], 0
    expected = {entry["file"] for entry in manifest["layers"]} | {"meta.npy"}
    for i, rec in enumerate(records):
        files = rec["files"]
        if set(files) != expected:
            raise StoreError(
                f"Shard {i} of store {str(path)!r} records files {sorted(files)}; expected "
                f"{sorted(expected)}."
            )
        for fname, info in files.items():
            file = path / "shards" / f"{i:06d}" / fname
            if not file.is_file():
                raise StoreError(f"Shard file {str(file)!r} is missing.")
            size = file.stat().st_size
            if size != info["bytes"]:
                raise StoreError(
                    f"Shard file {str(file)!r} is truncated or corrupt: it has {size} bytes, the "
                    f"store recorded {info['bytes']}. Re-run the capture into a fresh directory."
                )
        shards.append(ShardInfo(index=i, start=start, rows=int(rec["rows"]), files=files))
        start += int(rec["rows"])
    return shards
