"""Predictions captured with activations: next-token log-likelihood, entropy, pseudo-log-likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repscope.capture.predictions import (
    attention_output_modules,
    next_token_stats,
    pseudo_log_likelihood,
)


@pytest.mark.parametrize("side", ["right", "left"])
def test_next_token_stats_against_cross_entropy_with_padding(side):
    torch.manual_seed(0)
    lengths = [7, 3, 5]
    b, t, V = 3, 7, 11
    logits = torch.randn(b, t, V)
    ids = torch.randint(0, V, (b, t))
    am = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "right":
            am[i, :n] = 1
        else:
            am[i, t - n:] = 1
    lp, H = next_token_stats(logits, ids, am)
    for i in range(b):
        pos = am[i].bool().nonzero()[:, 0]
        want = -F.cross_entropy(logits[i, pos[:-1]].double(), ids[i, pos[1:]], reduction="none")
        torch.testing.assert_close(lp[i, pos[:-1]], want)
        assert torch.isnan(lp[i, pos[-1]])  # the last token has no next token
        p = torch.softmax(logits[i, pos].double(), -1)
        torch.testing.assert_close(H[i, pos], -(p * p.log()).sum(-1))
        assert torch.isnan(lp[i][~am[i].bool()]).all() and torch.isnan(H[i][~am[i].bool()]).all()
    with pytest.raises(ValueError, match="next_token_stats expects logits"):
        next_token_stats(logits[0], ids, am)


def _tiny_bert(with_head: bool):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    return (BertForMaskedLM(cfg) if with_head else BertModel(cfg)).eval()


def test_pseudo_log_likelihood_against_one_forward_per_token():
    model = _tiny_bert(True)
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0]])
    am = (ids != 0).long()
    pll = pseudo_log_likelihood(model, ids, am, mask_token_id=3, special_ids=(0, 1, 2), batch_size=2)
    for i in range(2):
        for t in range(ids.shape[1]):
            if ids[i, t] in (0, 1, 2):
                assert torch.isnan(pll[i, t])
                continue
            x = ids[i:i + 1].clone()
            x[0, t] = 3
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=x, attention_mask=am[i:i + 1]).logits[0, t].double(), -1)
            assert pll[i, t].item() == pytest.approx(logp[ids[i, t]].item(), abs=1e-6)
    with pytest.raises(ValueError, match="needs a masked-LM head"):
        pseudo_log_likelihood(_tiny_bert(False), ids, am, mask_token_id=3)


def test_attention_output_modules_for_bert_and_llama_layouts():
    bert = _tiny_bert(False)
    assert attention_output_modules(bert) == {
        "encoder.layer.0": "encoder.layer.0.attention.output.dense",
        "encoder.layer.1": "encoder.layer.1.attention.output.dense"}
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
    assert attention_output_modules(llama) == {"model.layers.0": "model.layers.0.self_attn",
                                               "model.layers.1": "model.layers.1.self_attn"}
    with pytest.raises(ValueError, match="no known attention-output module"):
        attention_output_modules(torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 2)))


def test_llama_self_attn_output_is_what_the_block_adds():
    """The captured tensor is the attention contribution: block input + attention output equals
    the residual just before the MLP (checked with the post-attention norm's input)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from repscope.capture.hooks import capture

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=1)).eval()
    ids = torch.tensor([[1, 4, 5, 6]])
    with capture(llama, ["model.layers.0.self_attn"]) as out, \
            capture(llama, ["model.layers.0", "model.layers.0.post_attention_layernorm"], which="input") as inp:
        llama(input_ids=ids)
    torch.testing.assert_close(inp["model.layers.0"] + out["model.layers.0.self_attn"],
                               inp["model.layers.0.post_attention_layernorm"])
    assert np.isfinite(out["model.layers.0.self_attn"].numpy()).all()
