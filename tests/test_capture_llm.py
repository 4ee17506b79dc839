"""The bundled causal LM end to end (slow: SmolLM2-135M, converted from its GGUF file once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from capture_support import alone
from repscope.capture import ActivationStore
from repscope.capture.hf import default_layers, iter_chunks, layer_modules

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from repscope.data.models import load_model

    return load_model("smollm2")


def test_smollm2_rows_equal_each_document_alone(smollm2) -> None:
    """One cell of the padding x batch matrix on the real model: left padding, batch 3."""
    model, tok = smollm2[0], smollm2[1]
    assert type(model).__name__ == "LlamaForCausalLM"
    layers = ["model.layers.0", "model.layers.29", "final_norm"]
    assert default_layers(model)[:2] == ["model.embed_tokens", "model.layers.0"]
    docs = ["def f(x): return x", "The quick brown fox jumps over the lazy dog near the river.",
            "import os", "A list is a mutable sequence type."]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        chunks = list(iter_chunks(model, tok, docs, layers=layers, batch_size=3, max_length=32))
    finally:
        tok.padding_side = side
    meta = {k: np.concatenate([c.meta[k] for c in chunks]) for k in chunks[0].meta}
    modules = layer_modules(model, layers)
    for d, doc in enumerate(docs):
        ids = tok(doc)["input_ids"]
        rows = meta["doc_id"] == d
        np.testing.assert_array_equal(meta["position"][rows], np.arange(len(ids)))
        ref = alone(model, modules, ids)
        for name in layers:
            got = np.concatenate([c.acts[name] for c in chunks])[rows]
            scale = float(ref[name].abs().max())
            np.testing.assert_allclose(got, ref[name].numpy(), rtol=0, atol=2e-5 * max(scale, 1))
    with torch.inference_mode():
        hs = model(input_ids=torch.tensor([tok(docs[1])["input_ids"]]),
                   output_hidden_states=True).hidden_states
    final = np.concatenate([c.acts["final_norm"] for c in chunks])[meta["doc_id"] == 1]
    last = np.concatenate([c.acts["model.layers.29"] for c in chunks])[meta["doc_id"] == 1]
    np.testing.assert_allclose(final, hs[-1][0].numpy(), rtol=0, atol=1e-3)
    assert np.abs(last - hs[-1][0].numpy()).mean() > 1  # the last block is not hidden_states[-1]


def test_analyze_smollm2_without_the_first_position(tmp_path: Path) -> None:
    """The first-hour command of the LLM issue completes (with a small measure panel)."""
    from repscope.cli import app

    out = tmp_path / "run"
    args = ["analyze", "--model", "smollm2", "--layers", "model.layers.*", "--exclude-positions",
            "0", "--max-docs", "40", "--measures", "participation_ratio", "--pairs", "none",
            "--no-report", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    store = ActivationStore.open(out / "store")
    assert store.layers == [f"model.layers.{i}" for i in range(30)]
    meta = store.metadata()
    assert meta["position"].min() == 1 and meta["doc_id"].nunique() == 40
    m = store.manifest
    assert m["token_selection"]["exclude_positions"] == [0]
    assert m["model"]["id"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert len(m["model"]["weights_sha256"]) == 64
    assert m["tokens"]["n_documents"] == 40
    from repscope.analysis.db import load_results

    results = load_results(out, measure="participation_ratio")
    assert len(results) == 30 and results["layer"].nunique() == 30
