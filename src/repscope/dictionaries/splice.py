"""Spliced-in evaluation: the SAE's reconstruction replaces a layer's output inside the forward
pass, and we measure what the model loses.

Causal LMs (:func:`spliced_evaluation`): over held-out documents, next-token cross-entropy
(nats per predicted token) of

- ``clean``: the model as is;
- ``sae``:   the layer's output ``h`` replaced by ``decode(encode(h))`` at every spliced position;
- ``zero``:  replaced by 0;
- ``mean``:  replaced by the mean of ``h`` over the spliced positions of the evaluation
  documents (or ``mean_activation``),

and the fraction of loss recovered ``(CE_zero - CE_sae) / (CE_zero - CE_clean)`` (SAELens'
``ce_loss_score``; 1 = nothing lost, 0 = as bad as deleting the layer's output), the same with
mean ablation, and the mean per-token KL divergence ``KL(p_clean || p_x)`` of the next-token
distributions. Spliced positions: every real (non-padding) token, except special tokens
(BOS/EOS/PAD ids of the tokenizer) with ``exclude_special_tokens`` (SAEBench's
``exclude_special_tokens_from_reconstruction``); the same positions for the ablations.
Uncertainty: a bootstrap over documents (``n_boot`` resamples, seeded) gives the standard
error and 95% interval of the loss recovered.

Models without an LM head (the bundled MiniLM is a sentence encoder: its checkpoint has no
masked-LM head) get a sentence-level proxy, :func:`spliced_sentence_evaluation`: cosine between
the mean-pooled final hidden state with and without the splice (the model's own sentence
embedding), for the SAE, zero and mean ablation, and the fraction recovered
``(cos_sae - cos_zero) / (1 - cos_zero)``. It is a proxy, not a loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from repscope._validate import check_int
from repscope.results import Estimate, result_type

__all__ = ["SplicedEvaluation", "SplicedSentenceEvaluation", "spliced_evaluation",
           "spliced_sentence_evaluation", "splice"]

VARIANTS = ("sae", "zero", "mean")


@result_type
@dataclass(frozen=True)
class SplicedEvaluation(Estimate):
    """Spliced-in evaluation on a causal LM; ``value`` = fraction of CE loss recovered with
    respect to zero ablation (``stderr``/``ci``: bootstrap over documents)."""

    ce_clean: float = float("nan")
    "Next-token cross-entropy of the unmodified model (nats per predicted token)."
    ce_sae: float = float("nan")
    "Cross-entropy with the SAE's reconstruction spliced in."
    ce_zero: float = float("nan")
    "Cross-entropy with the layer's output set to zero at the spliced positions."
    ce_mean: float = float("nan")
    "Cross-entropy with the layer's output set to its mean at the spliced positions."
    loss_recovered_mean: float = float("nan")
    "``(CE_mean - CE_sae) / (CE_mean - CE_clean)``."
    kl_sae: float = float("nan")
    "Mean per-token ``KL(p_clean || p_sae)`` of the next-token distributions (nats)."
    kl_zero: float = float("nan")
    "Mean per-token KL with zero ablation."
    kl_mean: float = float("nan")
    "Mean per-token KL with mean ablation."
    fvu: float = float("nan")
    "FVU of the SAE on the layer outputs at the spliced positions."
    n_documents: int = 0
    "Documents evaluated."


@result_type
@dataclass(frozen=True)
class SplicedSentenceEvaluation(Estimate):
    """Sentence-level proxy for encoders without an LM head; ``value`` =
    ``(cos_sae - cos_zero) / (1 - cos_zero)``, the fraction of the embedding similarity recovered."""

    cos_sae: float = float("nan")
    "Mean cosine between the pooled sentence embedding with the SAE spliced in and the clean one."
    cos_zero: float = float("nan")
    "The same with the layer's output set to zero."
    cos_mean: float = float("nan")
    "The same with the layer's output set to its mean."
    fvu: float = float("nan")
    "FVU of the SAE on the layer outputs at the spliced positions."


def _replace_first(output: Any, fn: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(f"splice: the module's output is a {type(output).__name__}, not a tensor or a "
                    "tuple starting with one; pick a module whose output is the hidden state.")


@contextlib.contextmanager
def splice(model: torch.nn.Module, layer: str, replace: Any, mask: torch.Tensor) -> Iterator[None]:
    """Within the block, the output ``h`` (b, t, d) of module ``layer`` becomes
    ``replace(h[mask])`` at the positions of ``mask`` (b, t) and stays ``h`` elsewhere. The hook
    is always removed."""
    from repscope.capture.hooks import resolve_layers

    (name,) = resolve_layers(model, [layer])

    def hook(module: Any, args: Any, output: Any) -> Any:
        def fn(h: torch.Tensor) -> torch.Tensor:
            new = h.clone()
            new[mask] = replace(h[mask]).to(h.dtype)
            return new

        return _replace_first(output, fn)

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _sae_map(sae: Any) -> Any:
    dev, dtype = sae.W_dec.device, sae.W_dec.dtype

    def fn(rows: torch.Tensor) -> torch.Tensor:  # (m, d)
        return sae.decode(sae.encode(rows.to(dev, dtype))).to(rows.device)

    return fn


def _batches(documents: Sequence[str] | None, tokenizer: Any, batches: Iterable[dict] | None,
             max_length: int, batch_size: int, fn: str) -> list[dict[str, torch.Tensor]]:
    if batches is not None:
        return [dict(b) for b in batches]
    if documents is None or tokenizer is None:
        raise ValueError(f"{fn} needs documents= with tokenizer=, or batches= of input_ids / attention_mask.")
    if len(documents) == 0:
        raise ValueError(f"{fn} got no documents.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for s in range(0, len(documents), batch_size):
        # right padding: real tokens keep positions 0, 1, ... as when run alone
        enc = tokenizer(list(documents[s:s + batch_size]), return_tensors="pt", padding=True,
                        padding_side="right", truncation=True, max_length=max_length)
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def _positions(batch: dict[str, torch.Tensor], special: torch.Tensor | None) -> torch.Tensor:
    mask = batch["attention_mask"].bool()
    if special is not None and len(special):
        mask &= ~torch.isin(batch["input_ids"], special)
    return mask


def _layer_stats(model: Any, layer: str, batches: list[dict], specials: torch.Tensor | None,
                 sae: Any) -> tuple[torch.Tensor, float]:
    """Mean of the layer output over the spliced positions, and the SAE's FVU there (float64)."""
    from repscope.capture.hooks import capture

    n, s2, err = 0, 0.0, 0.0
    fn = _sae_map(sae)
    total = None
    for b in batches:
        with capture(model, [layer], stop_after_last=True) as acts:
            model(**_model_inputs(model, b))
        h = acts[layer][_positions(b, specials).to(acts[layer].device)].double()  # (m, d)
        total = h.sum(0) if total is None else total + h.sum(0)
        s2 += float(h.pow(2).sum())
        err += float((fn(h.float()).double() - h).pow(2).sum())
        n += h.shape[0]
    if n == 0:
        raise ValueError("spliced evaluation: no position to splice (every token is padding or special).")
    mean = total / n
    var = s2 - n * float(mean.pow(2).sum())
    return mean, err / max(var, 1e-300)


def _model_inputs(model: Any, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dev = next(model.parameters()).device
    return {k: v.to(dev) for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def _ce_and_logp(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token cross-entropy (b, t-1) and log-probabilities (b, t-1, V)."""
    logp = torch.log_softmax(logits[:, :-1].double(), -1)  # (b, t-1, V)
    return -logp.gather(-1, target[..., None])[..., 0], logp


def _bootstrap(stat: Any, per_doc: dict[str, np.ndarray], n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    n = len(next(iter(per_doc.values())))
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        values.append(stat({k: v[idx] for k, v in per_doc.items()}))
    values = np.asarray([v for v in values if np.isfinite(v)])
    if len(values) < 2:
        return float("nan"), (float("nan"), float("nan"))
    return float(values.std(ddof=1)), (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975)))


@torch.no_grad()
def spliced_evaluation(
    model: Any, sae: Any, layer: str, documents: Sequence[str] | None = None, *,
    tokenizer: Any = None, batches: Iterable[dict[str, torch.Tensor]] | None = None,
    max_length: int = 128, batch_size: int = 4, mean_activation: Any = None,
    exclude_special_tokens: bool = True, n_boot: int = 1000, seed: int = 0, split: str = "held-out",
) -> SplicedEvaluation:
    """Splice ``sae`` into causal LM ``model`` (any module returning ``.logits``) at module
    ``layer`` and evaluate on ``documents`` (tokenised by ``tokenizer``, right-padded,
    truncated to ``max_length``) or ``batches`` (dicts with ``input_ids``, ``attention_mask``).
    See the module docstring for every number. ``split`` (recorded) says whether the documents
    were held out from the SAE's training data."""
    fn = "spliced_evaluation"
    check_int(max_length, "max_length", fn, low=2)
    check_int(batch_size, "batch_size", fn, low=1)
    data = _batches(documents, tokenizer, batches, max_length, batch_size, fn)
    specials = None
    if exclude_special_tokens and tokenizer is not None:
        specials = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    was_training = model.training
    model.eval()
    mean, fvu = _layer_stats(model, layer, data, specials, sae)
    if mean_activation is not None:
        mean = torch.as_tensor(np.asarray(mean_activation), dtype=torch.float64)
    replacements = {"sae": _sae_map(sae), "zero": lambda h: torch.zeros_like(h),
                    "mean": lambda h: mean.to(h.device, h.dtype).expand_as(h)}
    per_doc: dict[str, list[float]] = {k: [] for k in ("n", "clean", *VARIANTS, *(f"kl_{v}" for v in VARIANTS))}
    for b in data:
        inputs = _model_inputs(model, b)
        am = inputs["attention_mask"]
        valid = (am[:, 1:] * am[:, :-1]).bool()  # (b, t-1): a real token predicting a real token
        target = inputs["input_ids"][:, 1:]
        mask = _positions(b, specials).to(am.device)

        ce_clean, logp_clean = _ce_and_logp(model(**inputs).logits, target)
        p_clean = logp_clean.exp()
        per_doc["n"].extend(valid.sum(1).tolist())
        per_doc["clean"].extend((ce_clean * valid).sum(1).tolist())
        for v in VARIANTS:
            with splice(model, layer, replacements[v], mask):
                ce, logp = _ce_and_logp(model(**inputs).logits, target)
            kl = (p_clean * (logp_clean - logp)).sum(-1)  # (b, t-1)
            per_doc[v].extend((ce * valid).sum(1).tolist())
            per_doc[f"kl_{v}"].extend((kl * valid).sum(1).tolist())
            del logp, kl
    model.train(was_training)
    arr = {k: np.asarray(v, dtype=np.float64) for k, v in per_doc.items()}
    n_tok = arr["n"].sum()
    if n_tok == 0:
        raise ValueError(f"{fn}: no next-token target (documents shorter than 2 tokens).")

    def recovered(d: dict[str, np.ndarray], base: str = "zero") -> float:
        ce = {k: d[k].sum() / d["n"].sum() for k in ("clean", "sae", base)}
        den = ce[base] - ce["clean"]
        return float((ce[base] - ce["sae"]) / den) if den != 0 else float("nan")

    stderr, ci = _bootstrap(recovered, arr, n_boot, seed) if n_boot > 0 else (None, None)
    mean_of = lambda k: float(arr[k].sum() / n_tok)  # noqa: E731
    return SplicedEvaluation(
        measure="spliced_evaluation", value=recovered(arr), n_samples=int(n_tok), stderr=stderr, ci=ci,
        params={"layer": layer, "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                "max_length": max_length, "batch_size": batch_size, "split": split,
                "exclude_special_tokens": exclude_special_tokens, "n_boot": n_boot, "seed": seed,
                "mean_activation": "given" if mean_activation is not None else "evaluation documents",
                "uncertainty": "bootstrap over documents", "ci_level": 0.95},
        ce_clean=mean_of("clean"), ce_sae=mean_of("sae"), ce_zero=mean_of("zero"), ce_mean=mean_of("mean"),
        loss_recovered_mean=recovered(arr, "mean"), kl_sae=mean_of("kl_sae"),
        kl_zero=mean_of("kl_zero"), kl_mean=mean_of("kl_mean"), fvu=fvu, n_documents=len(arr["n"]),
    )


def _pooled(hidden: torch.Tensor, am: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, L2-normalised (all-MiniLM-L6-v2's sentence embedding)."""
    m = am[..., None].to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1)  # (b, d)
    return torch.nn.functional.normalize(pooled.double(), dim=-1)


@torch.no_grad()
def spliced_sentence_evaluation(
    model: Any, sae: Any, layer: str, documents: Sequence[str] | None = None, *,
    tokenizer: Any = None, batches: Iterable[dict[str, torch.Tensor]] | None = None,
    max_length: int = 128, batch_size: int = 16, exclude_special_tokens: bool = True,
    split: str = "held-out",
) -> SplicedSentenceEvaluation:
    """Sentence-level proxy of :func:`spliced_evaluation` for encoders without an LM head
    (``model(...).last_hidden_state``): see the module docstring."""
    fn = "spliced_sentence_evaluation"
    data = _batches(documents, tokenizer, batches, max_length, batch_size, fn)
    specials = None
    if exclude_special_tokens and tokenizer is not None:
        specials = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    was_training = model.training
    model.eval()
    mean, fvu = _layer_stats(model, layer, data, specials, sae)
    replacements = {"sae": _sae_map(sae), "zero": lambda h: torch.zeros_like(h),
                    "mean": lambda h: mean.to(h.device, h.dtype).expand_as(h)}
    cos: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for b in data:
        inputs = _model_inputs(model, b)
        am = inputs["attention_mask"]
        clean = _pooled(model(**inputs).last_hidden_state, am)
        for v in VARIANTS:
            with splice(model, layer, replacements[v], _positions(b, specials).to(am.device)):
                cos[v].extend((clean * _pooled(model(**inputs).last_hidden_state, am)).sum(-1).tolist())
    model.train(was_training)
    c = {v: float(np.mean(cos[v])) for v in VARIANTS}
    frac = (c["sae"] - c["zero"]) / (1 - c["zero"]) if c["zero"] != 1 else float("nan")
    return SplicedSentenceEvaluation(
        measure="spliced_sentence_evaluation", value=frac, n_samples=len(cos["sae"]),
        params={"layer": layer, "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
                "max_length": max_length, "split": split, "pooling": "mean, L2-normalised",
                "exclude_special_tokens": exclude_special_tokens},
        cos_sae=c["sae"], cos_zero=c["zero"], cos_mean=c["mean"], fvu=fvu)
