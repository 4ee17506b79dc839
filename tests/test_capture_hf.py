"""End-to-end capture of the bundled MiniLM: exact hidden states, pooling, errors, kill + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from repscope.capture import (
    ActivationStore,
    CaptureConfig,
    LayerNotFoundError,
    StoreError,
    capture,
    run_capture,
)
from repscope.capture.hf import default_layers, tokenize
from repscope.capture.run import CaptureStats, select_documents
from repscope.cli import app
from repscope.data.corpus import load_corpus
from repscope.data.models import load_model

LAYERS = ["embeddings"] + [f"encoder.layer.{i}" for i in range(6)]


@pytest.fixture(scope="module")
def minilm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same as the subprocess below (OMP_NUM_THREADS=1); fast on 2 cores
    try:
        yield load_model("minilm")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six pydoc snippets of different lengths (so batches are padded), one per line."""
    docs = select_documents(load_corpus("pydoc").documents, 6, seed=0)
    lines = [" ".join(d.split())[:n] for d, n in zip(docs, [40, 300, 90, 500, 60, 200], strict=True)]
    path = tmp_path_factory.mktemp("corpus") / "snippets.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def docs(corpus_file: Path) -> list[str]:
    return load_corpus(corpus_file).documents


@pytest.fixture(scope="module")
def small(corpus_file: Path):
    """A small CaptureConfig over the snippets corpus; keyword arguments override fields."""

    def make(out: Path, **kw) -> CaptureConfig:
        base = dict(out=out, corpus=str(corpus_file), max_docs=6, batch_size=4, max_length=48,
                    shard_rows=40)
        return CaptureConfig(**{**base, **kw})

    return make


def reference_rows(minilm, docs: list[str], batch_size: int, max_length: int):
    """Token-level rows computed with transformers' output_hidden_states, no hooks."""
    model, tok = minilm[0], minilm[1]
    rows: dict[str, list] = {name: [] for name in LAYERS}
    ids = []
    for lo in range(0, len(docs), batch_size):
        enc = tokenize(tok, docs[lo:lo + batch_size], max_length)
        keep = enc["attention_mask"].bool()
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states
        for i, name in enumerate(LAYERS):
            rows[name].append(hs[i][keep].numpy())
        ids.append(enc["input_ids"][keep].numpy())
    return {k: np.concatenate(v) for k, v in rows.items()}, np.concatenate(ids)


def test_hooks_equal_output_hidden_states(minilm, docs: list[str]) -> None:
    model, tok = minilm[0], minilm[1]
    assert default_layers(model) == LAYERS
    enc = tokenize(tok, docs[:3], 48)
    assert (enc["attention_mask"] == 0).any()  # padding present
    with torch.inference_mode():
        hs = model(**enc, output_hidden_states=True).hidden_states
    for stop in (False, True):
        with capture(model, ["embeddings", "encoder.layer.*"], stop_after_last=stop) as acts:
            model(**enc)
        assert list(acts) == LAYERS
        for i, name in enumerate(LAYERS):
            assert torch.equal(acts[name], hs[i]), name


def test_store_equals_hidden_states_and_metadata(minilm, small, docs: list[str], tmp_path: Path) -> None:
    stats: list[CaptureStats] = []
    store = run_capture(small(tmp_path / "s"), progress=False, loaded=minilm, stats=stats)
    ref, ids = reference_rows(minilm, docs, 4, 48)
    assert store.layers == LAYERS and store.n_rows == len(ids) == stats[0].tokens
    assert len(store.shards) == -(-len(ids) // 40)
    for name in LAYERS:
        np.testing.assert_array_equal(store.read(name), ref[name])  # bit for bit
    meta = store.metadata()
    np.testing.assert_array_equal(meta["token_id"], ids)
    assert meta["token"].iloc[0] == "[CLS]" and (meta["position"] == 0).sum() == len(docs)
    assert store.documents == docs
    m = store.manifest
    assert m["model"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(m["model"]["weights_sha256"]) == 64 and m["data"]["id"] == "file:snippets.txt"
    # the same capture again: complete, nothing recomputed
    stats.clear()
    again = run_capture(small(tmp_path / "s"), progress=False, loaded=minilm, stats=stats)
    assert stats[0].tokens == 0 and again.n_rows == store.n_rows


def test_pooled_rows_respect_the_attention_mask(minilm, small, docs: list[str], tmp_path: Path) -> None:
    model, tok = minilm[0], minilm[1]
    mean = run_capture(small(tmp_path / "mean", pooling="mean", max_docs=4, dtype="float32"),
                       progress=False, loaded=minilm)
    first = run_capture(small(tmp_path / "first", pooling="first", max_docs=4),
                        progress=False, loaded=minilm)
    assert mean.n_rows == 4 and list(mean.metadata().columns) == ["doc_id", "text"]
    chosen = mean.documents  # a seeded subset of 4 of the 6 documents
    assert len(chosen) == 4 and set(chosen) <= set(docs) and first.documents == chosen
    lengths = [len(tok(d, truncation=True, max_length=48)["input_ids"]) for d in chosen]
    assert min(lengths) < max(lengths)  # the batch is padded
    for j, doc in enumerate(chosen):
        enc = tokenize(tok, [doc], 48)  # alone: no padding at all
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states
        for i, name in enumerate(LAYERS):
            np.testing.assert_allclose(mean.read(name, rows=[j])[0], hs[i][0].mean(0).numpy(),
                                       rtol=0, atol=2e-5)
            np.testing.assert_allclose(first.read(name, rows=[j])[0], hs[i][0, 0].numpy(),
                                       rtol=0, atol=2e-5)


def test_capture_errors(minilm, small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="Corpus '.*empty.txt' is empty: it holds no non-empty document"):
        run_capture(small(tmp_path / "a", corpus=str(empty)), progress=False, loaded=minilm)
    with pytest.raises(LayerNotFoundError,
                       match=r"matches layer 'encoder.layers.\*'.*Close matches: \['encoder.layer"):
        run_capture(small(tmp_path / "b", layers=("encoder.layers.*",)), progress=False,
                    loaded=minilm)
    with pytest.raises(ValueError, match=r"'batch_size' parameter of CaptureConfig must be an int "
                                         r"in \[1, inf\). Got 0 instead."):
        run_capture(small(tmp_path / "c", batch_size=0), progress=False, loaded=minilm)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        run_capture(small(tmp_path / "d", model=str(tmp_path / "no-model")), progress=False)
    # an output directory holding a different store
    run_capture(small(tmp_path / "e", pooling="mean", max_docs=2), progress=False, loaded=minilm)
    with pytest.raises(StoreError, match=r"holds a different ActivationStore \(pooling: stored "
                                         r"\"mean\", requested \"first\"\)"):
        run_capture(small(tmp_path / "e", pooling="first", max_docs=2), progress=False,
                    loaded=minilm)


def test_forward_that_raises(minilm, small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = minilm[0]
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the layer-size probe passes, the first real batch fails
            raise RuntimeError("CUDA out of memory (simulated)")
        return type(model.encoder.layer[2]).forward(model.encoder.layer[2], *args, **kwargs)

    def hooks() -> list[int]:  # transformers adds hooks of its own: compare before/after
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]

    before = hooks()
    monkeypatch.setattr(model.encoder.layer[2], "forward", broken)
    with pytest.raises(RuntimeError, match=r"forward pass of BertModel failed on batch 0 "
                                           r"\(documents 0..3\): RuntimeError: CUDA out of memory"):
        run_capture(small(tmp_path / "s"), progress=False, loaded=minilm)
    monkeypatch.undo()
    assert hooks() == before
    with pytest.raises(StoreError, match="is incomplete"):
        ActivationStore.open(tmp_path / "s")
    assert run_capture(small(tmp_path / "s"), progress=False, loaded=minilm).n_rows > 0


def _store_content(store: ActivationStore) -> tuple[dict[str, bytes], bytes]:
    arrays = {name: store.read(name).tobytes() for name in store.layers}
    return arrays, store.metadata().to_json().encode()


@pytest.mark.slow
def test_kill_and_resume_gives_an_identical_store(minilm, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "killed"
    args = ["capture", "--out", str(out), "--max-docs", "24", "--batch-size", "2",
            "--max-length", "24", "--shard-rows", "30", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    code = f"from repscope.cli import main; main({args!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    shards = out / "shards"
    deadline = time.monotonic() + 120
    try:  # kill while a shard is written after a complete one, at the latest after 3 shards
        while time.monotonic() < deadline and proc.poll() is None:
            names = [p.name for p in shards.iterdir()] if shards.is_dir() else []
            done = [n for n in names if not n.startswith(".")]
            if (done and len(done) < len(names)) or len(done) >= 3:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="is incomplete"):
        ActivationStore.open(out)
    # rerun the same command in-process (with the already loaded model): it resumes
    monkeypatch.setattr("repscope.data.models.load_model", lambda *a, **k: minilm)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # no wrapping by rich
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "encoder.layer.5" in text and "resumed after" in text
    resumed = ActivationStore.open(out, verify="full")
    reference = run_capture(
        CaptureConfig(out=tmp_path / "ref", max_docs=24, batch_size=2, max_length=24,
                      shard_rows=30), progress=False, loaded=minilm)
    assert resumed.n_rows == reference.n_rows
    assert [s.rows for s in resumed.shards] == [s.rows for s in reference.shards]
    assert _store_content(resumed) == _store_content(reference)
    for a, b in zip(resumed.shards, reference.shards, strict=True):  # byte-equal shard files
        assert {f: v["sha256"] for f, v in a.files.items()} == \
               {f: v["sha256"] for f, v in b.files.items()}
    # repscope info describes and verifies it
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "complete" in info.output and "integrity: OK" in info.output


def test_minilm_left_padding_rows_equal_each_document_alone(minilm, docs: list[str]) -> None:
    """A cell of the padding x batch matrix on the real model: a left-padding tokenizer, batches
    of 3 (left padding moved BERT rows by up to 3.6 before)."""
    from repscope.capture.hf import iter_chunks

    model, tok = minilm[0], minilm[1]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        chunks = list(iter_chunks(model, tok, docs, layers=LAYERS, batch_size=3, max_length=48))
    finally:
        tok.padding_side = side
    meta = {k: np.concatenate([c.meta[k] for c in chunks]) for k in chunks[0].meta}
    for d, doc in enumerate(docs):
        enc = tokenize(tok, [doc], 48)  # alone: no padding at all
        rows = meta["doc_id"] == d
        np.testing.assert_array_equal(meta["position"][rows], np.arange(enc["input_ids"].shape[1]))
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states
        for i, name in enumerate(LAYERS):
            got = np.concatenate([c.acts[name] for c in chunks])[rows]
            np.testing.assert_allclose(got, hs[i][0].numpy(), rtol=0, atol=2e-5)
