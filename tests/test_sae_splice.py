"""Spliced-in evaluation on the bundled causal LM (SmolLM2-135M) and the MiniLM sentence proxy.

A small layer (model.layers.3), a TopK SAE trained on a few corpus documents, and a few
*other* documents to evaluate: the trained SAE recovers most of the loss, a randomly
initialised one about none, the identity all of it (docs/dictionaries.md records the numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.dictionaries.sae import build_sae
from repscope.dictionaries.splice import splice, spliced_evaluation, spliced_sentence_evaluation
from repscope.dictionaries.train import TrainConfig, train_sae

LAYER = "model.layers.3"
D = 576


def _identity_sae(d: int):
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x exactly."""
    sae = build_sae("relu", d, 2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repscope.capture.hooks import capture
    from repscope.data.corpus import load_corpus
    from repscope.data.models import builtin_smollm2

    path = builtin_smollm2()
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    docs = load_corpus().documents
    train_docs, eval_docs = docs[:24], docs[-4:]  # disjoint: evaluation on held-out documents
    rows = []
    with torch.no_grad():
        for s in range(0, len(train_docs), 8):
            enc = tok(train_docs[s:s + 8], return_tensors="pt", padding=True, truncation=True, max_length=48)
            with capture(model, [LAYER], stop_after_last=True) as acts:
                model(**enc)
            rows.append(acts[LAYER][enc["attention_mask"].bool()].float().numpy())
    X = np.concatenate(rows)  # (n, 576)
    res = train_sae(X, TrainConfig(d_sae=2 * D, k=32, batch_size=256, steps=150, lr=1e-3, warmup_steps=10))
    return model, tok, eval_docs, res


@pytest.mark.slow
def test_loss_recovered_trained_random_identity(smollm2):
    model, tok, docs, res = smollm2
    kw = dict(tokenizer=tok, max_length=48, n_boot=200)
    trained = spliced_evaluation(model, res.sae, LAYER, docs, **kw)
    print("trained", trained.value, trained.ci, trained.ce_clean, trained.ce_sae, trained.ce_zero,
          trained.ce_mean, trained.kl_sae, trained.fvu)
    assert trained.ce_clean < trained.ce_sae < trained.ce_zero
    assert 0.5 < trained.value <= 1.0 and 0.0 <= trained.loss_recovered_mean <= 1.0
    assert trained.ci[0] <= trained.value <= trained.ci[1] and trained.stderr > 0
    assert 0 < trained.kl_sae < trained.kl_zero and trained.n_documents == 4
    assert trained.params["split"] == "held-out"

    random = build_sae("topk", D, 2 * D, k=32, seed=1)  # the trainer's initialisation, untrained
    with torch.no_grad():
        random.input_scale.copy_(res.sae.input_scale)
    rnd = spliced_evaluation(model, random, LAYER, docs, **kw)
    print("random", rnd.value, rnd.ce_sae, rnd.fvu)
    assert -0.3 < rnd.value < 0.15, rnd.value  # about as bad as deleting the layer's output
    assert rnd.fvu > 0.9

    ident = spliced_evaluation(model, _identity_sae(D), LAYER, docs, **kw)
    assert ident.value == pytest.approx(1.0, abs=1e-6) and ident.kl_sae == pytest.approx(0.0, abs=1e-8)
    assert ident.ce_sae == pytest.approx(ident.ce_clean, abs=1e-6) and ident.fvu < 1e-10


@pytest.mark.slow
def test_cross_entropy_matches_the_models_own_loss(smollm2):
    """CE_clean equals the token-weighted mean of transformers' own LM loss per document."""
    model, tok, docs, _ = smollm2
    ev = spliced_evaluation(model, _identity_sae(D), LAYER, docs[:2], tokenizer=tok, max_length=32,
                            n_boot=0, exclude_special_tokens=False)
    total, count = 0.0, 0
    with torch.no_grad():
        for doc in docs[:2]:
            enc = tok(doc, return_tensors="pt", truncation=True, max_length=32)
            out = model(**enc, labels=enc["input_ids"])
            n = enc["input_ids"].shape[1] - 1
            total, count = total + float(out.loss) * n, count + n
    assert ev.ce_clean == pytest.approx(total / count, rel=1e-5)
    assert ev.n_samples == count


@pytest.mark.slow
def test_splice_hook_is_removed_and_replaces_only_masked_positions(smollm2):
    model, tok, docs, _ = smollm2
    enc = tok(docs[0], return_tensors="pt", truncation=True, max_length=16)
    mask = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    mask[0, 5:] = True
    from repscope.capture.hooks import capture

    with torch.no_grad():
        with splice(model, LAYER, lambda h: torch.zeros_like(h), mask), \
                capture(model, ["model.layers.3", "model.layers.4"]) as acts:
            model(**enc)
        assert torch.all(acts["model.layers.3"][0, 5:] == 0) and torch.any(acts["model.layers.3"][0, :5] != 0)
        clean = model(**enc).logits
        with capture(model, ["model.layers.3"]) as acts2:
            assert torch.equal(model(**enc).logits, clean)  # hook gone
        assert torch.any(acts2["model.layers.3"][0, 5:] != 0)


def test_minilm_sentence_proxy():
    """MiniLM has no LM head in its checkpoint: the sentence-embedding proxy."""
    from repscope.data.corpus import load_corpus
    from repscope.data.models import load_model

    model, tok, _, _ = load_model("minilm")
    docs = [d[:300] for d in load_corpus().documents[-8:]]
    ident = spliced_sentence_evaluation(model, _identity_sae(384), "encoder.layer.2", docs, tokenizer=tok,
                                        max_length=64)
    assert ident.cos_sae == pytest.approx(1.0, abs=1e-6) and ident.value == pytest.approx(1.0, abs=1e-5)
    assert ident.cos_zero < 0.95 and ident.cos_mean < 1
    random = build_sae("topk", 384, 768, k=16, seed=2)
    rnd = spliced_sentence_evaluation(model, random, "encoder.layer.2", docs, tokenizer=tok, max_length=64)
    assert rnd.value < 0.9 and rnd.params["pooling"] == "mean, L2-normalised"
