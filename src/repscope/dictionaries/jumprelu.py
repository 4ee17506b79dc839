"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity
with JumpReLU Sparse Autoencoders", arXiv 2407.14435).

    z = JumpReLU_theta(pre) = pre * H(pre - theta),       theta (d_sae,) >= 0, learned
    loss = mse + l0_coeff * mean_i ||z_i||_0

The L0 term and the jump are trained with straight-through pseudo-derivatives with a rectangle
kernel of bandwidth ``eps`` (:class:`~repscope.dictionaries.activations.JumpReLUSTE`,
:class:`~repscope.dictionaries.activations.StepSTE`): the L0 penalty reaches the thresholds
only, the reconstruction reaches both the encoder (through ``H(pre - theta)``) and the
thresholds. Scale: the paper's loss is ``||x - x_hat||^2 + lambda L0`` per token; repscope's
``mse`` is per entry (divided by ``d_in``) on inputs scaled to ``E||s x||^2 = d_in``, so
``l0_coeff = lambda / d_in``; the default ``l0_coeff = 1 / d_in`` is SAELens' default
``l0_coefficient = 1`` on the same scale.

Deviations, as in SAELens 6 (``JumpReLUTrainingSAE``): ``theta`` is a parameter itself, not
``exp(log theta)`` as in the paper (Adam moves a log-threshold multiplicatively, so a small
initial threshold barely moves within a normal step budget), projected onto ``theta >= 0``
after every step; defaults ``threshold_init = 0.01`` and ``bandwidth = 0.05`` on the
normalised scale (SAELens' defaults; the paper's 0.001 / 0.001 refer to its own scale).
Like every repscope SAE, the encoder sees ``s x - b_dec`` (the paper's encoder has no
``b_dec`` subtraction: an equivalent parametrisation, ``b_enc`` absorbs ``b_dec W_enc``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from repscope._validate import check_float
from repscope.dictionaries import activations as act
from repscope.dictionaries.sae import ARCHITECTURES, SparseAutoencoder

__all__ = ["JumpReLUSAE"]


class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU SAE with a per-latent learned threshold ``threshold`` (d_sae,) and a
    straight-through L0 penalty (see the module docstring)."""

    architecture = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, *, l0_coeff: float | None = None,
                 bandwidth: float = 0.05, threshold_init: float = 0.01, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        name = "JumpReLUSAE"
        self.l0_coeff = check_float(1.0 / d_in if l0_coeff is None else l0_coeff, "l0_coeff", name, low=0.0)
        self.bandwidth = check_float(bandwidth, "bandwidth", name, low=0.0, low_inclusive=False)
        threshold_init = check_float(threshold_init, "threshold_init", name, low=0.0)
        self.threshold = nn.Parameter(torch.full((d_sae,), threshold_init, dtype=self.W_dec.dtype))

    def hyperparams(self) -> dict[str, Any]:
        return {"l0_coeff": self.l0_coeff, "bandwidth": self.bandwidth}

    def codes(self, xn, pre, train):  # type: ignore[no-untyped-def]
        if train:
            return act.JumpReLUSTE.apply(pre, self.threshold, self.bandwidth)
        return act.jumprelu(pre, self.threshold.clamp_min(0))

    def extra_losses(self, xn, pre, z, recon, dead):  # type: ignore[no-untyped-def]
        l0 = act.StepSTE.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()
        return {"l0": self.l0_coeff * l0}

    @torch.no_grad()
    def after_step(self, z: torch.Tensor) -> None:
        self.threshold.clamp_(min=0.0)  # theta >= 0: below 0 the gate would pass negative codes


ARCHITECTURES[JumpReLUSAE.architecture] = JumpReLUSAE
