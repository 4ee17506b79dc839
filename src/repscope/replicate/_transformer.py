"""A one-block decoder-only transformer on modular addition, the grokking set-up.

Power, Burda, Edwards, Babuschkin and Misra (2022) found that small transformers trained on
algorithmic tasks such as ``a + b mod p`` reach perfect training accuracy early and generalise
to the held-out pairs much later ("grokking"); Nanda, Chan, Lieberum, Smith and Steinhardt
(ICLR 2023) reproduce it with one block, no layer norm, full-batch AdamW with weight decay 1.0
and betas (0.9, 0.98). This module is our own implementation of that set-up:

- :func:`modular_addition`: all ``p^2`` inputs ``[a, b, =]`` (token ``p`` is ``=``), their labels
  ``(a + b) mod p``, and a seeded split into disjoint train / test index sets;
- :func:`train_grokking`: trains the model full batch and calls ``on_checkpoint`` at the given
  steps with the accuracies, losses and the residual stream after the block at the ``=``
  position of every input (the representation whose local ID the claim measures).

Imports torch at module level: import it lazily (the claim module does, inside ``run``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from repscope._validate import check_float, check_int

__all__ = ["Checkpoint", "GrokTransformer", "ModularAddition", "modular_addition", "train_grokking"]


@dataclass(frozen=True)
class ModularAddition:
    """All inputs of ``a + b mod p`` and a seeded train / test split."""

    p: int
    tokens: np.ndarray  # (p^2, 3) int64: a, b, '=' (= token p)
    labels: np.ndarray  # (p^2,) int64
    train: np.ndarray  # (n_train,) indices into tokens, sorted
    test: np.ndarray  # (p^2 - n_train,) the rest, sorted

    def swapped(self, idx: np.ndarray) -> np.ndarray:
        """Index of ``[b, a, =]`` for each index of ``[a, b, =]`` (the commutative twin)."""
        a, b = np.divmod(np.asarray(idx), self.p)
        return b * self.p + a

    @property
    def novel(self) -> np.ndarray:
        """Held-out pairs whose twin ``[b, a]`` is held out too (memorising the train pairs
        and the symmetry of ``+`` cannot answer them), sorted."""
        return self.test[np.isin(self.swapped(self.test), self.test)]

    @property
    def train_unordered(self) -> np.ndarray:
        """Train pairs, one per unordered pair ``{a, b}`` (``a <= b`` when both twins train)."""
        a, b = np.divmod(self.train, self.p)
        return self.train[(a <= b) | ~np.isin(self.swapped(self.train), self.train)]


def modular_addition(p: int, train_fraction: float, seed: int) -> ModularAddition:
    """Every pair ``(a, b)`` of ``0..p-1`` as ``[a, b, =]`` with label ``(a + b) mod p``;
    ``round(train_fraction * p^2)`` pairs, drawn without replacement with ``seed``, train."""
    fn = "modular_addition"
    p = check_int(p, "p", fn, low=2)
    train_fraction = check_float(train_fraction, "train_fraction", fn, low=0.0, high=1.0,
                                 low_inclusive=False, high_inclusive=False)
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1)  # (p^2, 3)
    perm = np.random.default_rng(seed).permutation(p * p)
    n_train = min(max(int(round(train_fraction * p * p)), 1), p * p - 1)
    return ModularAddition(p, tokens, (a + b) % p, np.sort(perm[:n_train]), np.sort(perm[n_train:]))


class GrokTransformer(nn.Module):
    """One decoder block without layer norm (causal multi-head attention, then a ReLU MLP, both
    residual), learned positional embeddings, an untied unembedding; as Nanda et al. (2023).

    Only the ``=`` position's output is trained, so the forward pass computes the query, the
    MLP and the logits at the last position alone (keys and values at every position): the
    same function as a full causal block read at the last position, at a third of the cost.
    """

    def __init__(self, p: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512,
                 n_ctx: int = 3) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"The 'n_heads' parameter of GrokTransformer must divide d_model="
                             f"{d_model}. Got {n_heads!r} instead.")
        self.n_heads = n_heads
        self.embed = nn.Embedding(p + 1, d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.fc = nn.Linear(d_model, d_mlp)
        self.proj = nn.Linear(d_mlp, d_model)
        self.unembed = nn.Linear(d_model, p, bias=False)
        for w in self.parameters():  # N(0, 1/d_model) weights, zero biases
            if w.dim() > 1:
                nn.init.normal_(w, std=d_model ** -0.5)
            else:
                nn.init.zeros_(w)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T) tokens -> logits (B, p) and the residual stream after the block at the
        last position (B, d_model)."""
        B, T = x.shape
        r = self.embed(x) + self.pos.weight[:T]  # (B, T, d)
        d = r.shape[-1]
        hd = d // self.n_heads
        q = self.q(r[:, -1]).view(B, self.n_heads, 1, hd)  # (B, h, 1, hd)
        k, v = self.kv(r).view(B, T, 2, self.n_heads, hd).permute(2, 0, 3, 1, 4)  # (B, h, T, hd)
        att = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, dim=-1)  # (B, h, 1, T)
        res = r[:, -1] + self.out((att @ v).reshape(B, d))  # (B, d)
        res = res + self.proj(torch.relu(self.fc(res)))
        return self.unembed(res), res


@dataclass(frozen=True)
class Checkpoint:
    """What the training loop hands to ``on_checkpoint``."""

    step: int
    train_acc: float
    test_acc: float
    train_loss: float
    test_loss: float
    correct: np.ndarray  # (p^2,) bool: the argmax is the label, all inputs
    reps: np.ndarray  # (p^2, d_model) residual stream after the block at '=', all inputs


def train_grokking(data: ModularAddition, *, steps: int, lr: float, weight_decay: float,
                   seed: int, record: Sequence[int],
                   on_checkpoint: Callable[[Checkpoint], bool | None], d_model: int = 128,
                   n_heads: int = 4, d_mlp: int = 512, warmup: int = 10) -> None:
    """Full-batch AdamW (betas 0.9, 0.98; linear warm-up over ``warmup`` steps) on the train
    pairs for ``steps`` steps; before the update of each step in ``record`` (and after the last)
    call ``on_checkpoint``; a truthy return stops training."""
    torch.manual_seed(seed)
    model = GrokTransformer(data.p, d_model, n_heads, d_mlp)
    X, y = torch.from_numpy(data.tokens), torch.from_numpy(data.labels)
    tr, te = torch.from_numpy(data.train), torch.from_numpy(data.test)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)))
    marks = set(int(s) for s in record) | {steps}
    for step in range(steps + 1):
        if step in marks:
            with torch.no_grad():
                logits, reps = model(X)
                hit = (logits.argmax(1) == y).double()
                loss = nn.functional.cross_entropy(logits, y, reduction="none").double()
            ck = Checkpoint(step, hit[tr].mean().item(), hit[te].mean().item(),
                            loss[tr].mean().item(), loss[te].mean().item(), hit.numpy() > 0.5,
                            reps.numpy().copy())
            if on_checkpoint(ck) or step == steps:
                return
        logits, _ = model(X[tr])
        loss = nn.functional.cross_entropy(logits, y[tr])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
