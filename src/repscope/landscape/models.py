"""The networks of the ready landscape tasks.

- :class:`MLP`: fully connected ReLU layers on flattened images; Li et al. (ICLR 2018) use
  784-200-200-10 on MNIST (``D = 199,210``).
- :class:`LeNet`: LeCun et al.'s (1998) LeNet-5 layout as Li et al. use it on MNIST: two
  convolutions (6 and 16 channels, ReLU, 2x2 max pooling) and 120-84-10 dense layers
  (``D = 44,426`` on 28x28 inputs with 5x5 valid convolutions); on 8x8 digits the convolutions
  are 3x3 with padding 1.
- :class:`SentenceClassifier`: a transformer encoder, mean pooling over the attention mask (as
  sentence-transformers pools all-MiniLM-L6-v2) and a linear head.

Every factory is seeded: the same seed gives the same initialisation ``theta_0``, without
touching the global random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LeNet", "MLP", "SentenceClassifier", "seeded"]


class seeded:
    """``with seeded(seed):`` runs its body with torch's global generator seeded, then restores it
    (so building a model at a seed changes no random state outside)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)


def _dense(width: int, hidden: Sequence[int], n_out: int) -> list[nn.Module]:
    """``[Linear -> ReLU] x len(hidden) -> Linear`` from ``width`` inputs."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return [*layers, nn.Linear(width, n_out)]


class MLP(nn.Module):
    """``Flatten -> [Linear -> ReLU] x len(hidden) -> Linear``."""

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int] = (200, 200)):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *_dense(n_in, hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (n, n_out)


class LeNet(nn.Module):
    """Two conv + ReLU + 2x2 max-pool stages, then dense ReLU layers and a linear output."""

    def __init__(self, side: int, n_out: int, *, channels: Sequence[int] = (6, 16),
                 kernel: int = 5, padding: int = 0, hidden: Sequence[int] = (120, 84),
                 in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for ch in channels:
            layers += [nn.Conv2d(c, ch, kernel, padding=padding), nn.ReLU(), nn.MaxPool2d(2)]
            side = (side + 2 * padding - kernel + 1) // 2
            c = ch
        self.net = nn.Sequential(*layers, nn.Flatten(), *_dense(c * side * side, hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (n, n_out)


class SentenceClassifier(nn.Module):
    """A Hugging Face encoder, mean pooling over real tokens and a linear head.

    ``forward(input_ids, attention_mask)`` trims the batch to its longest sentence first, so
    padding to a data set's longest sentence costs nothing per batch.
    """

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        width = int(attention_mask.sum(1).max())
        ids, mask = input_ids[:, :width], attention_mask[:, :width]  # (n, t)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (n, t, h)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (n, h)
        return self.head(pooled)  # (n, n_classes)
