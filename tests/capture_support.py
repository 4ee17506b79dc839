"""Tiny random BERT / GPT-2 / Llama models and word-level tokenizers built locally (no download)."""

from __future__ import annotations

import re

import torch

ARCHS = ("bert", "gpt2", "llama")
#: how each architecture's tokenizer frames a sequence
FRAMES = {"bert": ("[CLS] $A [SEP]", ["[CLS]", "[SEP]"]), "gpt2": ("$A", []),
          "llama": ("<s> $A", ["<s>"])}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>"]


def documents() -> list[str]:
    """Ten short real-text documents of different lengths (3 to 40 words)."""
    from repscope.data.corpus import load_corpus

    words = " ".join(load_corpus("pydoc").documents[:40]).split()
    lengths = [5, 17, 3, 40, 9, 28, 12, 6, 33, 21]
    out, at = [], 0
    for n in lengths:
        out.append(" ".join(words[at:at + n]))
        at += n
    return out


def word_tokenizer(arch: str, texts: list[str]):
    """A fast word-level tokenizer (whitespace + punctuation split, character offsets) whose
    vocabulary covers ``texts``, framed like ``arch``'s real tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)})
    vocab = {w: i for i, w in enumerate(SPECIALS + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    single, specials = FRAMES[arch]
    if specials:
        tk.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(s, vocab[s]) for s in specials])
    extra = {"cls_token": "[CLS]", "sep_token": "[SEP]"} if arch == "bert" else (
        {"bos_token": "<s>"} if arch == "llama" else {})
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                   **extra)


def tiny_model(arch: str, vocab: int, *, positions: int = 64, dropout: float = 0.0, seed: int = 0):
    """A 2-block random model of ``arch`` (d = 32), in eval mode."""
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    if arch == "bert":
        model = BertModel(BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=positions, pad_token_id=0,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=positions,
            bos_token_id=4, eos_token_id=4, pad_token_id=0, resid_pdrop=dropout,
            embd_pdrop=dropout, attn_pdrop=dropout))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, intermediate_size=64, max_position_embeddings=positions,
            bos_token_id=4, eos_token_id=4, pad_token_id=0, attention_dropout=dropout))
    return model.eval()


def alone(model, modules: dict[str, str], ids: list[int]) -> dict[str, torch.Tensor]:
    """Layer -> (L, d) output of its module for one unpadded sequence run alone."""
    from repscope.capture import capture

    with capture(model, list(dict.fromkeys(modules.values()))) as acts:
        model(input_ids=torch.tensor([ids]))
    return {name: acts[m][0] for name, m in modules.items()}
