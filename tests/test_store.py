"""ActivationStore without a model: round trips, dtypes, resume at every shard, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from repscope.capture import ActivationStore, StoreError
from repscope.capture.hf import to_storage
from repscope.capture.store import FORMAT_VERSION

LAYERS = {"emb": 5, "block/0": 3}  # a '/' in a name must not break file names
IDENTITY = {"model": "synthetic", "seed": 0}


def make_chunks(seed: int = 0, n_chunks: int = 9) -> list[tuple[dict, dict]]:
    """Chunks of random sizes (0 included) with distinct values per row."""
    rng = np.random.default_rng(seed)
    chunks, doc = [], 0
    for size in rng.integers(0, 23, size=n_chunks):
        acts = {k: rng.standard_normal((size, d)).astype(np.float32) for k, d in LAYERS.items()}
        meta = {"doc_id": np.full(size, doc, dtype=np.int64),
                "position": np.arange(size, dtype=np.int32),
                "token_id": rng.integers(0, 7, size).astype(np.int32)}
        chunks.append((acts, meta))
        doc += 1
    return chunks


def write(path: Path, chunks: list, *, dtype: str = "float32", shard_rows: int = 10,
          stop_after_shards: int | None = None, identity: dict = IDENTITY) -> ActivationStore | None:
    """Write ``chunks`` (resuming if ``path`` holds a partial store); optionally 'crash' after
    ``stop_after_shards`` complete shards by closing without finishing."""
    writer = ActivationStore.create(path, layers=LAYERS, dtype=dtype, shard_rows=shard_rows,
                                    identity=identity, info={"pooling": "none"},
                                    documents=[f"doc {i}" for i in range(len(chunks))],
                                    vocab=[f"t{i}" for i in range(7)])
    with writer:
        start = writer.resume_point[0]
        for i, (acts, meta) in enumerate(chunks[start:], start=start):
            if dtype != "float32":
                acts = {k: to_storage(torch.from_numpy(v), dtype) for k, v in acts.items()}
            writer.append(acts, meta, chunk=i)
            if stop_after_shards is not None and writer.n_shards >= stop_after_shards:
                return None
        return writer.finish()


@pytest.fixture(scope="module")
def chunks() -> list:
    return make_chunks()


@pytest.fixture(scope="module")
def expected(chunks: list) -> dict[str, np.ndarray]:
    out = {k: np.concatenate([c[0][k] for c in chunks]) for k in LAYERS}
    out["doc_id"] = np.concatenate([c[1]["doc_id"] for c in chunks])
    out["token_id"] = np.concatenate([c[1]["token_id"] for c in chunks])
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, chunks: list) -> ActivationStore:
    s = write(tmp_path_factory.mktemp("store") / "s", chunks)
    assert s is not None
    return s


def test_round_trip_and_description(store: ActivationStore, expected: dict) -> None:
    n = len(expected["doc_id"])
    assert store.layers == ["emb", "block/0"]
    assert store.n_rows == n and store.dim("emb") == 5 and store.dim("block/0") == 3
    assert [s.rows for s in store.shards] == [10] * (n // 10) + ([n % 10] if n % 10 else [])
    m = store.manifest
    assert m["format_version"] == FORMAT_VERSION and m["status"] == "complete"
    assert m["identity"]["model"] == "synthetic" and m["pooling"] == "none"
    assert m["completed"] and m["created"] and m["n_rows"] == n
    for layer in LAYERS:
        X = store.read(layer)
        assert X.dtype == np.float32 and not isinstance(X, np.memmap)
        np.testing.assert_array_equal(X, expected[layer])
    with pytest.raises(KeyError, match=r"has no layer 'emd'.*Close matches: \['emb'\]"):
        store.read("emd")


def test_row_subsets_slices_masks_and_batches(store: ActivationStore, expected: dict) -> None:
    n, ref = store.n_rows, expected["emb"]
    rng = np.random.default_rng(3)
    idx = rng.integers(0, n, size=40)  # unsorted, repeats, across shards
    np.testing.assert_array_equal(store.read("emb", rows=idx), ref[idx])
    np.testing.assert_array_equal(store.read("emb", rows=[-1, 0]), ref[[-1, 0]])
    np.testing.assert_array_equal(store.read("emb", rows=slice(7, 33)), ref[7:33])
    np.testing.assert_array_equal(store.read("emb", rows=slice(None, None, 3)), ref[::3])
    mask = rng.random(n) < 0.3
    np.testing.assert_array_equal(store.read("emb", rows=mask), ref[mask])
    assert store.read("emb", rows=np.array([], dtype=int)).shape == (0, 5)
    batches = list(store.iter_batches("emb", batch_size=7))
    assert max(len(b) for b in batches) == 7
    np.testing.assert_array_equal(np.concatenate(batches), ref)
    sub = np.concatenate(list(store.iter_batches("emb", batch_size=4, rows=idx)))
    np.testing.assert_array_equal(sub, ref[idx])
    with pytest.raises(IndexError, match=f"Row index {n} is out of range for store with n_rows={n}"):
        store.read("emb", rows=[0, n])
    with pytest.raises(ValueError, match="'rows' parameter of ActivationStore.read must be a slice"):
        store.read("emb", rows=np.array([0.5]))
    with pytest.raises(ValueError, match="boolean mask of length n_rows"):
        store.read("emb", rows=mask[:-1])
    with pytest.raises(ValueError, match="'batch_size' parameter of ActivationStore.iter_batches"):
        next(store.iter_batches("emb", batch_size=0))


def test_metadata_and_contexts(store: ActivationStore, expected: dict) -> None:
    meta = store.metadata()
    assert list(meta.columns) == ["doc_id", "position", "token_id", "token"]
    np.testing.assert_array_equal(meta["doc_id"], expected["doc_id"])
    assert list(meta["token"][:3]) == [f"t{t}" for t in expected["token_id"][:3]]
    part = store.metadata(rows=[5, 2])
    assert list(part.index) == [5, 2]
    ctx = store.contexts([0], window=2)[0]
    assert ctx.startswith("[[t") and ctx.count(" ") <= 2
    assert store.documents[0] == "doc 0"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(tmp_path: Path, chunks: list, expected: dict, dtype: str) -> None:
    s = write(tmp_path / dtype, chunks, dtype=dtype)
    assert s is not None and s.dtype == dtype
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    ref = torch.from_numpy(expected["emb"]).to(torch_dtype).float().numpy()
    np.testing.assert_array_equal(s.read("emb"), ref)  # exact upcast of the stored values
    assert s.nbytes() < write(tmp_path / "f32", chunks).nbytes()  # type: ignore[union-attr]


def store_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes()
            for p in sorted((path / "shards").rglob("*.npy"))}


def test_resume_after_every_shard_is_byte_identical(tmp_path: Path, chunks: list,
                                                    store: ActivationStore) -> None:
    reference = store_bytes(store.path)
    n_shards = len(store.shards)
    for k in range(n_shards):
        path = tmp_path / f"crash{k}"
        assert write(path, chunks, stop_after_shards=k) is None  # "killed" after k shards
        (path / "shards" / ".tmp-000099").mkdir()  # debris of a half-written shard
        with pytest.raises(StoreError, match="is incomplete: its capture stopped after"):
            ActivationStore.open(path)
        partial = ActivationStore.open(path, allow_incomplete=True)
        assert partial.n_rows <= store.n_rows
        resumed = write(path, chunks)
        assert resumed is not None and store_bytes(path) == reference, f"after {k} shards"
        assert not (path / "shards" / ".tmp-000099").exists()
    assert write(store.path, chunks) is not None  # a complete store: nothing to do


def test_refuses_a_different_store_or_foreign_directory(tmp_path: Path, chunks: list) -> None:
    path = tmp_path / "s"
    write(path, chunks[:2])
    with pytest.raises(StoreError, match=r"holds a different ActivationStore \(model: stored "
                                         r"\"synthetic\", requested \"other\"\)"):
        write(path, chunks, identity={"model": "other", "seed": 0})
    with pytest.raises(StoreError, match="holds a different ActivationStore.*shard_rows"):
        write(path, chunks, shard_rows=11)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"is not empty and holds no ActivationStore \(found \['notes.txt'\]\)"):
        write(foreign, chunks)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="exists and is not a directory"):
        write(tmp_path / "file", chunks)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    first = ActivationStore.create(tmp_path / "s", layers=LAYERS, identity=IDENTITY)
    try:
        with pytest.raises(StoreError, match="is being written by another process"):
            ActivationStore.create(tmp_path / "s", layers=LAYERS, identity=IDENTITY)
    finally:
        first.close()
    ActivationStore.create(tmp_path / "s", layers=LAYERS, identity=IDENTITY).close()


def test_append_checks(tmp_path: Path, chunks: list) -> None:
    acts, meta = chunks[1]
    with ActivationStore.create(tmp_path / "s", layers=LAYERS, identity=IDENTITY) as w:
        with pytest.raises(ValueError, match="expected chunk 0; got 1"):
            w.append(acts, meta, chunk=1)
        with pytest.raises(ValueError, match=r"got layers \['emb'\]; expected"):
            w.append({"emb": acts["emb"]}, meta, chunk=0)
    with ActivationStore.create(tmp_path / "t", layers=LAYERS, identity=IDENTITY) as w:
        with pytest.raises(ValueError, match=r"layer 'emb' has shape \(\d+, 3\); expected"):
            w.append({"emb": acts["block/0"], "block/0": acts["block/0"]}, meta, chunk=0)
    with pytest.raises(ValueError, match="'dtype' parameter of ActivationStore.create must be one of"):
        ActivationStore.create(tmp_path / "u", layers=LAYERS, dtype="int8")
    with pytest.raises(ValueError, match="'shard_rows' parameter of ActivationStore.create"):
        ActivationStore.create(tmp_path / "u", layers=LAYERS, shard_rows=0)


@pytest.fixture
def copy(tmp_path: Path, store: ActivationStore) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(store.path, dst)
    return dst


def test_truncated_shard_is_detected(copy: Path) -> None:
    victim = copy / "shards" / "000001" / "emb.npy"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(StoreError, match=r"Shard file '.*000001/emb\.npy' is truncated or corrupt: "
                                         r"it has \d+ bytes, the store recorded \d+"):
        ActivationStore.open(copy)


def test_tampered_shard_is_detected(copy: Path) -> None:
    victim = copy / "shards" / "000002" / "block_0.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    store = ActivationStore.open(copy)  # sizes are fine; the sha256 is checked on first read
    store.read("block/0", rows=[0])  # shard 0 is intact
    pattern = r"Shard file '.*000002/block_0\.npy' is corrupt: its sha256"
    with pytest.raises(StoreError, match=pattern):
        store.read("block/0")
    with pytest.raises(StoreError, match=pattern):
        ActivationStore.open(copy, verify="full")
    ActivationStore.open(copy, verify="size").read("emb")  # other layers stay readable


def test_missing_and_extra_files(copy: Path) -> None:
    (copy / "shards" / "000000" / "meta.npy").unlink()
    with pytest.raises(StoreError, match=r"Shard file '.*000000/meta\.npy' is missing"):
        ActivationStore.open(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(StoreError, match="is not an ActivationStore: it has no manifest.json"):
        ActivationStore.open(copy)
    with pytest.raises(StoreError, match="does not exist"):
        ActivationStore.open(copy / "nowhere")


def test_newer_format_version_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=rf"has format version {FORMAT_VERSION + 1}, newer than the "
                                         rf"version {FORMAT_VERSION} this repscope"):
        ActivationStore.open(copy)
    with pytest.raises(ValueError, match="'verify' parameter of ActivationStore.open"):
        ActivationStore.open(copy, verify="never")  # type: ignore[arg-type]


def test_a_failing_write_is_reported_and_the_store_stays_resumable(
        tmp_path: Path, chunks: list, store: ActivationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import repscope.capture.writer as writer_module

    real = writer_module._write_npy
    calls = []

    def flaky(path: Path, arr: np.ndarray) -> dict:
        calls.append(path)
        if len(calls) == 7:  # fails inside the third shard
            raise OSError(28, "No space left on device")
        return real(path, arr)

    monkeypatch.setattr(writer_module, "_write_npy", flaky)
    with pytest.raises(StoreError, match=r"Writing store '.*' failed: .*No space left on device"):
        write(tmp_path / "s", chunks)
    monkeypatch.undo()
    partial = ActivationStore.open(tmp_path / "s", allow_incomplete=True)
    assert len(partial.shards) == 2
    assert write(tmp_path / "s", chunks) is not None
    assert store_bytes(tmp_path / "s") == store_bytes(store.path)
