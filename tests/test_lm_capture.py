"""Predictions and attention outputs captured on the bundled causal LM (SmolLM2-135M), and the
per-prompt geometry of that store (slow: SmolLM2 loads once per module, ~40 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repscope.capture import CaptureConfig, run_capture

DOCS = ["def f(x): return x + 1", "The quick brown fox jumps over the lazy dog near the river bank.",
        "import os", "A list is a mutable sequence type; tuples are immutable sequences of objects."]


@pytest.fixture(scope="module")
def smollm2():
    from repscope.data.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n")
    return path


def _capture(smollm2, corpus, out, **kw):
    cfg = CaptureConfig(model="smollm2", corpus=str(corpus), layers=("model.layers.3", "model.layers.20"),
                        out=out, max_length=32, predictions="next_token", **kw)
    return run_capture(cfg, progress=False, loaded=smollm2)


def _plain_logprobs(model, enc):
    """``-cross_entropy`` of a plain transformers forward pass, per sequence (on the float32
    logits upcast to float64: float32 cross-entropy itself rounds by up to ~3e-5 nats over a
    49,152-token vocabulary)."""
    with torch.no_grad():
        logits = model(**enc).logits.double()
    out = []
    for i in range(logits.shape[0]):
        n = int(enc["attention_mask"][i].sum())
        out.append(-F.cross_entropy(logits[i, : n - 1], enc["input_ids"][i, 1:n], reduction="none"))
    return out


@pytest.mark.slow
def test_captured_log_likelihoods_equal_a_plain_forward(smollm2, corpus, tmp_path):
    model, tok = smollm2[0], smollm2[1]
    # batch size 1: each document alone, as a plain forward pass sees it
    store = _capture(smollm2, corpus, tmp_path / "b1", batch_size=1)
    meta = store.metadata()
    assert {"next_logprob", "entropy"} <= set(meta)
    assert store.manifest["predictions"]["kind"] == "next_token"
    assert store.manifest["identity"]["predictions"] == "next_token"
    for d, doc in enumerate(DOCS):
        rows = meta[meta.doc_id == d]
        want = _plain_logprobs(model, tok(doc, return_tensors="pt"))[0].numpy()
        got = rows["next_logprob"].to_numpy()
        assert np.isnan(got[-1]) and np.isfinite(got[:-1]).all()  # the last token has no next token
        np.testing.assert_allclose(got[:-1], want, rtol=0, atol=1e-5)
        assert (rows["entropy"] > 0).all()
    # batch size 4: the same forward as a right-padded plain batch
    store4 = _capture(smollm2, corpus, tmp_path / "b4", batch_size=4)
    meta4 = store4.metadata()
    enc = tok(DOCS, return_tensors="pt", padding=True, padding_side="right")
    for d, want in enumerate(_plain_logprobs(model, enc)):
        got = meta4[meta4.doc_id == d]["next_logprob"].to_numpy()
        np.testing.assert_allclose(got[:-1], want.numpy(), rtol=0, atol=1e-5)
    # padding changes the float32 summation order only: batched vs alone within 1e-4 nats
    np.testing.assert_allclose(meta4["next_logprob"], meta["next_logprob"], rtol=0, atol=1e-4)
    # the activations are the same with and without predictions (the pass now runs to the logits)
    plain = run_capture(CaptureConfig(model="smollm2", corpus=str(corpus), out=tmp_path / "np",
                                      layers=("model.layers.3", "model.layers.20"), max_length=32,
                                      batch_size=4), progress=False, loaded=smollm2)
    assert "next_logprob" not in plain.metadata() and "predictions" not in plain.manifest["identity"]
    for layer in plain.layers:
        np.testing.assert_array_equal(store4.read(layer), plain.read(layer))


@pytest.mark.slow
def test_attention_outputs_and_per_prompt_rows_on_smollm2(smollm2, corpus, tmp_path):
    from repscope.analysis.prompt_geometry import prompt_geometry

    store = _capture(smollm2, corpus, tmp_path / "att", batch_size=4, attention=True)
    assert store.layers == ["model.layers.3", "model.layers.3.self_attn", "model.layers.20",
                            "model.layers.20.self_attn"]
    assert store.dim("model.layers.3.self_attn") == 576
    with pytest.raises(ValueError, match="'attention' parameter of CaptureConfig must be False when no"):
        run_capture(CaptureConfig(model="smollm2", corpus=str(corpus), layers=("model.embed_tokens",),
                                  out=tmp_path / "emb", attention=True), progress=False, loaded=smollm2)
    meta = store.metadata()
    g = prompt_geometry(store, layers=["model.layers.3", "model.layers.20"], min_tokens=8, n_boot=50)
    t = g.rows
    lengths = meta.groupby("doc_id").size()
    assert set(t["doc_id"]) == set(range(len(DOCS))) and len(t) == 2 * len(DOCS)
    for d, n in lengths.items():
        row = t[(t.doc_id == d) & (t.layer == "model.layers.3")].iloc[0]
        assert row["n_tokens"] == n
        want = -meta[meta.doc_id == d]["next_logprob"].dropna().mean()
        assert row["mean_loss"] == pytest.approx(want)
        assert np.isnan(row["id"]) == (n < 8)
    assert t[t.layer == "model.layers.3"]["overlap_next"].notna().sum() == (lengths >= 8).sum()


def test_predictions_refused_where_there_is_no_distribution(corpus, tmp_path):
    with pytest.raises(ValueError, match="'predictions' parameter of CaptureConfig"):
        run_capture(CaptureConfig(corpus=str(corpus), pooling="mean", predictions="next_token",
                                  out=tmp_path / "x"), progress=False)
    with pytest.raises(ValueError, match="'predictions' parameter of CaptureConfig"):
        run_capture(CaptureConfig(corpus=str(corpus), predictions="loss", out=tmp_path / "y"), progress=False)
