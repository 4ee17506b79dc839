"""Rows equal the model run on each document alone: architectures x padding side x batch size;
truncation recorded, windows covering every token once, token selection, eval mode, limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from capture_support import ARCHS, alone, documents, tiny_model, word_tokenizer
from repscope.capture import CaptureConfig, StopForward, capture, run_capture
from repscope.capture.batches import iter_batch_chunks, right_pad
from repscope.capture.hf import default_layers, final_norm, iter_chunks, layer_modules
from repscope.capture.run import CaptureStats
from repscope.capture.tokens import TokenSelection

ATOL = 2e-5


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return documents()


@pytest.fixture(scope="module")
def nets(docs: list[str]) -> dict[str, tuple]:
    out = {}
    for arch in ARCHS:
        tok = word_tokenizer(arch, docs)
        out[arch] = (tiny_model(arch, len(tok)), tok)
    return out


def _concat(chunks) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    chunks = list(chunks)
    acts = {k: np.concatenate([c.acts[k] for c in chunks]) for k in chunks[0].acts}
    meta = {k: np.concatenate([c.meta[k] for c in chunks]) for k in chunks[0].meta}
    return acts, meta


def _alone_all(model, layers, sequences: list[list[int]]) -> list[dict[str, torch.Tensor]]:
    modules = layer_modules(model, layers)
    return [alone(model, modules, ids) for ids in sequences]


def _check_against_alone(model, layers, acts, meta, sequences: list[list[int]],
                         refs: list[dict[str, torch.Tensor]] | None = None) -> None:
    """Every document's rows equal its unpadded forward alone; positions are 0..L-1."""
    refs = refs or _alone_all(model, layers, sequences)
    for d, (ids, ref) in enumerate(zip(sequences, refs, strict=True)):
        rows = meta["doc_id"] == d
        np.testing.assert_array_equal(meta["position"][rows], np.arange(len(ids)))
        np.testing.assert_array_equal(meta["token_id"][rows], ids)
        for name in layers:
            np.testing.assert_allclose(acts[name][rows], ref[name].numpy(), rtol=0, atol=ATOL,
                                       err_msg=f"{name} of document {d}")


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_equal_each_document_alone(nets, docs: list[str], arch: str) -> None:
    """The matrix: padding side (left, right) x batch size (1, 3, 8), tokenizer and batch paths."""
    model, tok = nets[arch]
    layers = default_layers(model) + (["final_norm"] if arch != "bert" else [])
    sequences = [tok(d)["input_ids"] for d in docs]
    assert min(map(len, sequences)) < max(map(len, sequences)) <= 64  # padding, no truncation
    refs = _alone_all(model, layers, sequences)
    for side in ("left", "right"):
        tok.padding_side = side  # the tokenizer's own setting must not matter
        for batch_size in (1, 3, 8):
            acts, meta = _concat(iter_chunks(model, tok, docs, layers=layers,
                                             batch_size=batch_size, max_length=64))
            _check_against_alone(model, layers, acts, meta, sequences, refs)
            # ready-made batches, padded on this side, through the batch path
            batches = [tok(docs[lo:lo + batch_size], padding=True, return_tensors="pt")
                       for lo in range(0, len(docs), batch_size)]
            if side == "left" and batch_size > 1:
                assert any((b["attention_mask"][:, 0] == 0).any() for b in batches)
            acts, meta = _concat(iter_batch_chunks(model, batches, layers=layers))
            _check_against_alone(model, layers, acts, meta, sequences, refs)
    tok.padding_side = "right"


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_pooled_rows_do_not_depend_on_padding_or_batch(nets, docs: list[str], arch: str) -> None:
    model, tok = nets[arch]
    layers = default_layers(model)[-1:]
    modules = layer_modules(model, layers)
    refs = [alone(model, modules, tok(d)["input_ids"])[layers[0]] for d in docs]  # (L, d) each
    for pooling, reduce in (("mean", lambda r: r.mean(0)), ("first", lambda r: r[0]),
                            ("last", lambda r: r[-1])):
        want = torch.stack([reduce(r) for r in refs]).numpy()
        for side, batch_size in (("left", 3), ("right", 8)):
            tok.padding_side = side
            acts, meta = _concat(iter_chunks(model, tok, docs, layers=layers, pooling=pooling,
                                             batch_size=batch_size, max_length=64))
            np.testing.assert_array_equal(meta["doc_id"], np.arange(len(docs)))
            np.testing.assert_allclose(acts[layers[0]], want, rtol=0, atol=ATOL)
            batches = [tok(docs[lo:lo + batch_size], padding=True, return_tensors="pt")
                       for lo in range(0, len(docs), batch_size)]
            acts, _ = _concat(iter_batch_chunks(model, batches, layers=layers, pooling=pooling))
            np.testing.assert_allclose(acts[layers[0]], want, rtol=0, atol=ATOL)
    tok.padding_side = "right"


def test_right_pad_moves_left_padded_rows() -> None:
    batch = {"input_ids": torch.tensor([[0, 0, 5, 6], [7, 8, 9, 1]]),
             "attention_mask": torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
             "token_type_ids": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]), "flag": 3}
    out = right_pad(batch)
    assert out["input_ids"].tolist() == [[5, 6, 0, 0], [7, 8, 9, 1]]
    assert out["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["token_type_ids"].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]] and out["flag"] == 3
    with pytest.raises(ValueError, match="Sequence 0 of a batch has padding between real tokens"):
        right_pad({"input_ids": torch.ones(1, 3, dtype=torch.long),
                   "attention_mask": torch.tensor([[1, 0, 1]])})


# -- long documents ---------------------------------------------------------------------------


def _small(tmp_path: Path, corpus: Path, **kw) -> CaptureConfig:
    return CaptureConfig(**{"out": tmp_path / "store", "corpus": str(corpus), "batch_size": 3,
                            "max_length": 12, "shard_rows": 50, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, docs: list[str]) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(docs) + "\n")
    return path


def test_truncation_is_recorded_and_warned(nets, docs, corpus: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    model, tok = nets["bert"]
    stats: list[CaptureStats] = []
    with caplog.at_level("WARNING"):
        store = run_capture(_small(tmp_path, corpus), progress=False, stats=stats,
                            loaded=(model, tok, "tiny-bert", "0" * 64))
    full = [len(tok(d)["input_ids"]) for d in docs]
    cut = [n > 12 for n in full]
    table = store.document_tokens()
    np.testing.assert_array_equal(table["n_tokens"], full)
    np.testing.assert_array_equal(table["n_kept"], np.minimum(full, 12))
    np.testing.assert_array_equal(table["truncated"], cut)
    summary = store.manifest["tokens"]
    assert summary["n_truncated"] == sum(cut) == stats[0].truncated > 0
    assert summary["tokens_cut"] == sum(n - 12 for n in full if n > 12) == stats[0].tokens_cut
    assert summary["long_documents"] == "truncate" and summary["padding"] == "right"
    assert f"{sum(cut)} of {len(docs)} documents exceed max_length and were truncated" in \
        caplog.text and stats[0].warning() in caplog.text
    # the rows of a cut document are those of the tokenizer's own truncation, run alone
    meta = store.metadata()
    sequences = [tok(d, truncation=True, max_length=12)["input_ids"] for d in docs]
    _check_against_alone(model, store.layers, {n: store.read(n) for n in store.layers},
                         {k: meta[k].to_numpy() for k in meta}, sequences)
    assert meta.groupby("doc_id")["token"].last().eq("[SEP]").all()  # the separator after the cut


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_windows_store_every_token_once_with_its_text(nets, docs, corpus: Path, tmp_path: Path,
                                                      arch: str) -> None:
    model, tok = nets[arch]
    cfg = _small(tmp_path, corpus, long_documents="window", overlap=4)
    store = run_capture(cfg, progress=False, loaded=(model, tok, f"tiny-{arch}", "0" * 64))
    meta = store.metadata()
    table = store.document_tokens()
    assert not table["truncated"].any() and (table["n_windows"] > 2).any()
    frame = 2 if arch == "bert" else 0
    room = 12 - frame
    for d, doc in enumerate(docs):
        full = tok(doc)["input_ids"]
        rows = meta[meta["doc_id"] == d]
        assert rows["doc_position"].tolist() == list(range(len(full)))  # each token once, in order
        assert rows["token_id"].tolist() == full
        for r in rows.itertuples():
            if r.special:
                assert (r.char_start, r.char_end) == (-1, -1)
            else:
                assert doc[r.char_start:r.char_end] == r.token
        # each row comes from the window the rule names and equals that window run alone
        n_content = len(full) - frame
        starts = list(range(0, max(n_content - room, 0) + 1, room - 4)) or [0]
        if starts[-1] + room < n_content:
            starts.append(starts[-1] + room - 4)
        x = store.read(store.layers[-1], rows=rows.index.to_numpy())
        modules = layer_modules(model, store.layers[-1:])
        for w, s in enumerate(starts):
            content = list(range(s, min(s + room, n_content)))
            ids = full[:frame // 2] + [full[frame // 2 + c] for c in content] + full[len(full) - frame // 2:]
            ref = alone(model, modules, ids)[store.layers[-1]].numpy()
            mine = (rows["window"] == w).to_numpy()
            pos = rows["position"].to_numpy()[mine]
            np.testing.assert_allclose(x[mine], ref[pos], rtol=0, atol=ATOL)
            shared_prev = [c for c in content if w > 0 and c < starts[w - 1] + room]
            if w > 0:  # tokens shared with the previous window: which window keeps them
                kept_here = [c for c in shared_prev
                             if rows[(rows["doc_position"] == frame // 2 + c)]["window"].item() == w]
                expect = 0 if arch == "gpt2" else len(shared_prev) // 2
                assert len(kept_here) == expect, (d, w, kept_here)
    assert store.manifest["tokens"]["n_windowed"] == int((table["n_windows"] > 1).sum())
    assert store.manifest["tokens"]["window_rule"].startswith(
        "earlier window" if arch == "gpt2" else "first half")
    # text_around shows a token in its text
    i = int(np.flatnonzero(~meta["special"].to_numpy())[5])
    shown = store.text_around([i], chars=10)[0]
    assert f"[[{meta['token'].iloc[i]}]]" in shown


def test_pooling_over_windows_and_selection_matches_token_rows(nets, corpus: Path,
                                                               tmp_path: Path) -> None:
    model, tok = nets["bert"]
    loaded = (model, tok, "tiny-bert", "0" * 64)
    base = dict(long_documents="window", overlap=3, exclude_special_tokens=True,
                exclude_positions=(1, 3))  # 3: kept by the later window only under BERT's rule
    tokens = run_capture(_small(tmp_path / "t", corpus, **base), progress=False, loaded=loaded)
    meta = tokens.metadata()
    assert not meta["special"].any() and not meta["position"].isin([1, 3]).any()
    name = tokens.layers[-1]
    x = tokens.read(name)
    for pooling in ("mean", "first", "last"):
        pooled = run_capture(_small(tmp_path / pooling, corpus, pooling=pooling, **base),
                             progress=False, loaded=loaded)
        y = pooled.read(name)
        groups = meta.groupby("doc_id").indices
        want = np.stack([x[groups[d]].astype(np.float64).mean(0) if pooling == "mean"
                         else x[groups[d][0 if pooling == "first" else -1]]
                         for d in range(pooled.n_rows)])
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(pooled.document_tokens()["n_selected"],
                                      [len(groups[d]) for d in range(pooled.n_rows)])
    assert tokens.manifest["token_selection"] == {
        "exclude_positions": [1, 3], "exclude_special_tokens": True, "exclude_padding": True}


# -- checks before the first batch ------------------------------------------------------------


def test_max_length_beyond_the_position_table_fails_before_any_work(nets, corpus: Path,
                                                                    tmp_path: Path) -> None:
    for arch in ARCHS:
        model, tok = nets[arch]
        cls = type(model).__name__
        with pytest.raises(ValueError, match=rf"^The 'max_length' parameter of CaptureConfig must "
                                             rf"be at most 64, the position limit of {cls}\. "
                                             rf"Got 65 instead\.$"):
            run_capture(_small(tmp_path, corpus, max_length=65), progress=False,
                        loaded=(model, tok, "m", "0" * 64))
        assert not (tmp_path / "store").exists()
    with pytest.raises(ValueError, match="'overlap' parameter of CaptureConfig must be an int in "
                                         r"\[0, max_length - special tokens=10\)"):
        run_capture(_small(tmp_path, corpus, long_documents="window", overlap=10),
                    progress=False, loaded=(nets["bert"][0], nets["bert"][1], "m", "0" * 64))
    with pytest.raises(ValueError, match=r"'exclude_positions' parameter of CaptureConfig must be "
                                         r"a tuple of ints >= 0\. Got \(-1,\) instead"):
        run_capture(_small(tmp_path, corpus, exclude_positions=(-1,)), progress=False)


def test_training_mode_is_switched_off_and_restored(docs: list[str], corpus: Path,
                                                    tmp_path: Path) -> None:
    tok = word_tokenizer("bert", docs)
    model = tiny_model("bert", len(tok), dropout=0.5).train()
    layers = default_layers(model)
    ref = _concat(iter_chunks(model.eval(), tok, docs, layers=layers, max_length=64))[0]
    model.train()
    model.encoder.layer[0].eval()  # mixed flags come back exactly
    flags = [m.training for m in model.modules()]
    again = _concat(iter_chunks(model, tok, docs, layers=layers, max_length=64))[0]
    assert [m.training for m in model.modules()] == flags
    store = run_capture(_small(tmp_path, corpus, max_length=64, batch_size=32), progress=False,
                        loaded=(model, tok, "m", "0" * 64))
    assert [m.training for m in model.modules()] == flags
    ids = torch.tensor([tok(docs[0])["input_ids"]])
    with capture(model, layers) as acts:
        model(input_ids=ids)
    assert [m.training for m in model.modules()] == flags
    for name in layers:
        np.testing.assert_array_equal(again[name], ref[name])
        np.testing.assert_array_equal(store.read(name), ref[name])
        np.testing.assert_allclose(acts[name][0].numpy(), ref[name][:ids.shape[1]], rtol=0,
                                   atol=ATOL)
    with capture(model, layers, eval_mode=False) as a, capture(model, layers, eval_mode=False) as b:
        model(input_ids=ids)
        first = a[layers[-1]].clone()
        model(input_ids=ids)
    assert not torch.equal(first, b[layers[-1]])  # dropout on: the user asked for it


def test_stop_forward_is_not_swallowed_by_except_exception(nets) -> None:
    assert not issubclass(StopForward, Exception)
    model, tok = nets["gpt2"]
    after = []

    class Careless(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids):
            try:
                self.inner(input_ids=input_ids)
            except Exception:  # a user's guard must not eat the early stop
                pass
            after.append(1)

    wrapper = Careless()
    with capture(wrapper, ["inner.transformer.h.0"], stop_after_last=True) as acts:
        wrapper(torch.tensor([[5, 6, 7]]))
    assert after == [] and acts["inner.transformer.h.0"].shape == (1, 3, 32)


def test_final_norm_is_the_last_hidden_state(nets) -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    for arch, module in (("gpt2", "transformer.ln_f"), ("llama", "model.norm")):
        model, _ = nets[arch]
        assert final_norm(model) == module
        last_block = default_layers(model)[-1]
        with torch.inference_mode():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        with capture(model, [module, last_block]) as acts:
            model(input_ids=ids)
        torch.testing.assert_close(acts[module], hs[-1], rtol=0, atol=1e-6)
        assert (acts[last_block] - hs[-1]).abs().max() > 0.1  # pre-norm: the block is not it
    with pytest.raises(ValueError, match="BertModel has no final norm after its blocks"):
        final_norm(nets["bert"][0])


def test_python_module_with_batches_into_a_store(nets, docs, tmp_path: Path) -> None:
    model, tok = nets["llama"]
    batches = [dict(tok(docs[lo:lo + 4], padding=True, padding_side="left", return_tensors="pt"))
               for lo in (0, 4, 8)]
    cfg = CaptureConfig(out=tmp_path / "b", shard_rows=40, exclude_positions=(0,))
    store = run_capture(cfg, progress=False, model=model, batches=batches, tokenizer=tok)
    meta = store.metadata()
    assert store.manifest["data"]["id"] == "batches" and store.manifest["model"]["id"] == \
        "python:LlamaForCausalLM"
    assert sorted(meta["doc_id"].unique()) == list(range(len(docs)))
    assert meta["position"].min() == 1 and meta["token"].iloc[0] != "<s>"
    sequences = [tok(d)["input_ids"] for d in docs]
    name = store.layers[-1]
    ref = alone(model, layer_modules(model, [name]), sequences[5])[name].numpy()
    np.testing.assert_allclose(store.read(name, rows=(meta["doc_id"] == 5).to_numpy()), ref[1:],
                               rtol=0, atol=ATOL)
    again = run_capture(cfg, progress=False, model=model, batches=batches, tokenizer=tok)
    assert again.n_rows == store.n_rows  # same identity: complete, not recomputed
    sel = TokenSelection(exclude_special_tokens=True)
    assert sel.keep(np.arange(3), np.array([True, False, False])).tolist() == [False, True, True]


def test_windows_keep_every_token_once_for_any_frame_and_overlap() -> None:
    from repscope.capture.tokens import Tokenization, segments

    for p, s in ((0, 0), (1, 0), (1, 1), (2, 1)):
        for c in (0, 1, 5, 17, 40):
            n = p + c + s
            tok = Tokenization(np.arange(n), np.zeros(n, bool), np.full((n, 2), -1),
                               np.zeros(n, np.int64), p, s)
            for max_length in (p + s + 2, p + s + 7):
                room = max_length - p - s
                for overlap in range(room):
                    for causal in (True, False):
                        segs = segments(tok, 0, max_length=max_length, mode="window",
                                        overlap=overlap, causal=causal)
                        kept = np.concatenate([sg.index[sg.keep] for sg in segs])
                        assert kept.tolist() == list(range(n)), (p, s, c, max_length, overlap)
                        assert all(sg.index.shape[0] <= max_length for sg in segs)
                        for a, b in zip(segs, segs[1:], strict=False):  # consecutive overlap
                            shared = np.intersect1d(a.index[p:a.index.shape[0] - s],
                                                    b.index[p:b.index.shape[0] - s])
                            assert shared.shape[0] == overlap
                trunc = segments(tok, 0, max_length=max_length, mode="truncate", overlap=0,
                                 causal=True)
                assert len(trunc) == 1 and trunc[0].keep.all()
                assert trunc[0].index.tolist() == list(range(p + min(c, room))) + \
                    list(range(p + c, n))


def test_stores_without_the_new_metadata_still_read(tmp_path: Path) -> None:
    from repscope.capture import ActivationStore

    writer = ActivationStore.create(tmp_path / "old", layers={"a": 3}, shard_rows=4,
                                    documents=["first doc", "second"], vocab=["x", "y", "z"])
    meta = {"doc_id": np.array([0, 0, 1]), "position": np.array([0, 1, 0]),
            "token_id": np.array([0, 2, 1])}
    writer.append({"a": np.ones((3, 3), np.float32)}, meta, chunk=0)
    store = writer.finish()
    assert list(store.metadata().columns) == ["doc_id", "position", "token_id", "token"]
    assert store.document_tokens().index.tolist() == [0, 1]
    assert store.text_around([1]) == store.contexts([1]) == ["x [[z]]"]
    assert "tokens" not in store.manifest and store.read("a").shape == (3, 3)


def test_cli_summary_warns_about_truncation(nets, docs, corpus: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from repscope.cli import app

    model, tok = nets["bert"]
    monkeypatch.setattr("repscope.data.models.load_model",
                        lambda *a, **k: (model, tok, "tiny-bert", "0" * 64))
    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["capture", "--corpus", str(corpus), "--max-length", "12",
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    cut = sum(len(tok(d)["input_ids"]) > 12 for d in docs)
    assert f"warning: {cut} of {len(docs)} documents exceed max_length and were truncated" in text
    info = CliRunner().invoke(app, ["info", str(out), "--no-verify"])
    text = " ".join(info.output.split())
    assert f"truncate at max_length 12: {cut} truncated" in text and "special tokens kept" in text
    result = CliRunner().invoke(app, ["capture", "--corpus", str(corpus), "--max-length", "999",
                                      "--out", str(tmp_path / "t"), "--no-progress"])
    assert result.exit_code == 2 and "must be at most 64, the position limit of BertModel" in \
        result.output and "Traceback" not in result.output
