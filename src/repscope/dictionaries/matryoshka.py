"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima, Karvonen & Nanda 2025, "Learning Multi-Level
Features with Matryoshka Sparse Autoencoders", arXiv 2503.17547; Nabeshima 2024, "Matryoshka
Sparse Autoencoders").

The latents are ordered and cut into nested prefixes of widths ``m_1 < m_2 < ... < m_L = d_sae``;
every prefix is trained to reconstruct the input on its own:

    z = BatchTopK(pre)                                     (training; JumpReLU at inference)
    x_hat_m = z[:, :m] W_dec[:m] + b_dec
    loss = sum_l mse(x_hat_{m_l}) + AuxK                   (mse per entry, as everywhere)

as in the paper (eq. 2: the sum over levels, each with weight 1). Early latents must reconstruct
alone, so they learn general, frequent features and later ones refine them, which reduces
feature absorption. Inference is BatchTopK's: JumpReLU with the one global threshold
``theta`` (see :class:`~repscope.dictionaries.sae.BatchTopKSAE`).
Default widths: ``d_sae / 16, d_sae / 8, d_sae / 4, d_sae / 2, d_sae`` (distinct, at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from repscope._validate import param_error
from repscope.dictionaries.sae import ARCHITECTURES, BatchTopKSAE

__all__ = ["MatryoshkaSAE", "default_widths"]


def default_widths(d_sae: int) -> list[int]:
    """``d_sae / 16, d_sae / 8, d_sae / 4, d_sae / 2, d_sae``, distinct and at least 1."""
    return sorted({max(1, d_sae // 2**j) for j in range(4, -1, -1)})


class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka BatchTopK SAE with nested prefix widths ``widths`` (see the module docstring)."""

    architecture = "matryoshka"

    def __init__(self, d_in: int, d_sae: int, *, widths: Sequence[int] | None = None, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        widths = default_widths(d_sae) if widths is None or len(widths) == 0 else [int(w) for w in widths]
        ok = all(a < b for a, b in zip(widths, widths[1:], strict=False)) and widths[0] >= 1
        if not ok or widths[-1] != d_sae:
            raise param_error("MatryoshkaSAE", "widths",
                              f"strictly increasing ints in [1, d_sae={d_sae}] ending at d_sae", widths)
        self.widths = widths

    def hyperparams(self) -> dict[str, Any]:
        return {**super().hyperparams(), "widths": list(self.widths)}

    def extra_losses(self, xn, pre, z, recon, dead):  # type: ignore[no-untyped-def]
        """The inner levels' reconstruction losses (the outer one is ``mse``) and AuxK."""
        parts = super().extra_losses(xn, pre, z, recon, dead)
        partial = self.b_dec.expand_as(xn)  # (n, d_in)
        nested = xn.new_zeros(())
        start = 0
        for width in self.widths[:-1]:
            partial = partial + z[:, start:width] @ self.W_dec[start:width]
            nested = nested + (partial - xn).pow(2).sum(-1).mean() / self.d_in
            start = width
        return {"mse_nested": nested, **parts}


ARCHITECTURES[MatryoshkaSAE.architecture] = MatryoshkaSAE
