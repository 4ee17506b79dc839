"""Sparse autoencoder architectures over ``(n, d_in)`` activations.

Names and shapes follow the field (SAELens, sparsify, dictionary_learning): ``d_in``, ``d_sae``,
``W_enc (d_in, d_sae)``, ``W_dec (d_sae, d_in)``, ``b_enc (d_sae,)``, ``b_dec (d_in,)``.

    encode(x) = sigma((s x - b_dec) W_enc + b_enc)       # (n, d_sae), sparse
    decode(z) = (z W_dec + b_dec) / s                    # (n, d_in)

``s`` is the scalar input normalisation (``input_scale``, set by the trainer so that
``E||s x||^2 = d_in``); codes therefore live on the normalised scale. ``sigma`` is the
architecture's activation (see :mod:`repscope.dictionaries.activations`). Decoder rows are kept
at unit norm by the trainer, so a code value is the length of its direction in the input.

Losses (``training_loss``) are computed on the normalised scale with
``mse = mean_i ||s x_i - x_hat_i||^2 / d_in``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from repscope._validate import check_float, check_int
from repscope.dictionaries import activations as act

__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "SparseAutoencoder",
    "TopAFASAE",
    "TopKSAE",
    "TrainStep",
    "auxk_loss",
    "build_sae",
]


@dataclass(frozen=True)
class TrainStep:
    """What one training forward pass returns."""

    loss: torch.Tensor
    "Total loss to minimise (scalar)."
    codes: torch.Tensor | None
    "Sparse codes used for the reconstruction, (n, d_sae); None when only ``values``/``indices``."
    parts: dict[str, torch.Tensor]
    "Named loss terms (mse, l1, auxk, afa), detached scalars."
    values: torch.Tensor | None = None
    "Fixed-k codes as (values, indices): the code values (n, k), detached (TopK)."
    indices: torch.Tensor | None = None
    "Latent index of each entry of ``values`` (n, k), distinct within a row."
    d_sae: int | None = None
    "Number of latents (for :meth:`dense_codes` of a (values, indices) step)."

    def dense_codes(self) -> torch.Tensor:
        """The codes as an (n, d_sae) tensor (built from ``values``/``indices`` if needed)."""
        if self.codes is not None:
            return self.codes
        assert self.values is not None and self.indices is not None and self.d_sae is not None
        z = self.values.new_zeros(self.values.shape[0], self.d_sae)  # (n, d_sae)
        return z.scatter_(-1, self.indices, self.values)

    def fired(self) -> torch.Tensor:
        """Indices of the latents with a positive code in some row (1-D, may repeat)."""
        if self.codes is None:
            assert self.values is not None and self.indices is not None
            return self.indices[self.values > 0]
        return (self.codes > 0).any(0).nonzero().squeeze(1)

    def l0(self) -> torch.Tensor:
        """Mean number of positive codes per row (scalar)."""
        z = self.values if self.codes is None else self.codes
        assert z is not None
        return (z > 0).sum(1).float().mean()


class SparseAutoencoder(nn.Module):
    """Base class: parameters, normalisation, decode and the shared loss pieces."""

    architecture: ClassVar[str] = "base"
    has_encoder: ClassVar[bool] = True
    "False when the encoder is derived from the decoder (matching pursuit)."

    def __init__(self, d_in: int, d_sae: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        name = type(self).__name__
        self.d_in = check_int(d_in, "d_in", name, low=1)
        self.d_sae = check_int(d_sae, "d_sae", name, low=1)
        gen = torch.Generator().manual_seed(check_int(seed, "seed", name, low=0))
        W_dec = torch.randn(d_sae, d_in, generator=gen, dtype=torch.float64)
        W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)  # (d_sae, d_in), unit rows
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        if self.has_encoder:
            self.W_enc = nn.Parameter(W_dec.T.clone())  # (d_in, d_sae), tied at init (Gao et al.)
            self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.register_buffer("input_scale", torch.ones((), dtype=torch.float64))

    def hyperparams(self) -> dict[str, Any]:
        """Architecture hyper-parameters saved in ``cfg.json`` (besides d_in, d_sae)."""
        return {}

    # --- inference ------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Check the width and apply the input scale ``s``."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(
                f"{type(self).__name__} was built for d_in={self.d_in} features; got activations "
                f"of shape {tuple(x.shape)}. Pass the layer the SAE was trained on."
            )
        return x.to(self.W_dec.dtype) * self.input_scale.to(self.W_dec.dtype)

    def pre_acts(self, xn: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of normalised inputs, (n, d_sae)."""
        return (xn - self.b_dec) @ self.W_enc + self.b_enc

    def codes(self, xn: torch.Tensor, pre: torch.Tensor, train: bool) -> torch.Tensor:
        """The architecture's activation applied to ``pre`` (n, d_sae)."""
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes (n, d_sae) of raw activations ``x`` (n, d_in) (inference mode)."""
        xn = self.normalize(x)
        return self.codes(xn, self.pre_acts(xn), train=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction (n, d_in) on the input's scale."""
        return (z @ self.W_dec + self.b_dec) / self.input_scale.to(z.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training -------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainStep:
        """Loss on a batch of raw activations; ``dead`` (d_sae,) bool marks dead latents."""
        xn = self.normalize(x)
        pre = self.pre_acts(xn)
        z, recon = self.train_codes(xn, pre)
        mse = (recon - xn).pow(2).sum(-1).mean() / self.d_in
        parts = {"mse": mse}
        parts.update(self.extra_losses(xn, pre, z, recon, dead))
        loss = sum(parts.values())
        return TrainStep(loss, z, {k: v.detach() for k, v in parts.items()})

    def train_codes(self, xn: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-mode codes (n, d_sae) and the reconstruction on the normalised scale."""
        z = self.codes(xn, pre, train=True)
        return z, z @ self.W_dec + self.b_dec

    def extra_losses(
        self, xn: torch.Tensor, pre: torch.Tensor, z: torch.Tensor, recon: torch.Tensor,
        dead: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Architecture-specific loss terms (sparsity penalty, AuxK ...)."""
        return {}

    def after_step(self, z: torch.Tensor) -> None:
        """Hook run by the trainer after each optimiser step (e.g. threshold estimates)."""

    def after_training(self, batches: Iterable[torch.Tensor]) -> None:
        """Hook run by the trainer once after the last step with the final weights; ``batches``
        yields raw training batches (n, d_in) lazily (nothing is read unless consumed)."""


def _local_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp_min(1e-12)


_BATCH_RATIO = [_local_ratio]  # replaced while a data-parallel step runs


def batch_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` for two sums over the rows of the training batch (AuxK's normalised
    error). Under data parallelism (:mod:`repscope.dictionaries.distributed`) each process
    holds part of the batch and the denominator is summed over all of them, so that the
    processes' losses add up to the one-process loss."""
    return _BATCH_RATIO[0](num, den)


def auxk_loss(
    xn: torch.Tensor, pre: torch.Tensor, recon: torch.Tensor, W_dec: torch.Tensor,
    dead: torch.Tensor | None, k_aux: int, alpha: float,
) -> torch.Tensor:
    """AuxK loss (Gao et al. 2024, sec. A.2): reconstruct the residual ``e = x - x_hat`` from the
    ``k_aux`` largest pre-activations among dead latents only,
    ``alpha * ||e - e_hat||^2 / ||e||^2`` (batch sums), so dead latents get a gradient."""
    if dead is None or not bool(dead.any()) or alpha == 0:
        return pre.new_zeros(())
    e = (xn - recon).detach()  # (n, d_in)
    pre_dead = pre[:, dead]  # (n, n_dead)
    z_aux = act.topk(pre_dead, min(k_aux, pre_dead.shape[1]))
    e_hat = z_aux @ W_dec[dead]  # (n, d_in)
    return alpha * batch_ratio((e_hat - e).pow(2).sum(), e.pow(2).sum())


class ReLUSAE(SparseAutoencoder):
    """ReLU + L1 (Bricken et al. 2023): ``z = ReLU(pre)``; penalty
    ``l1_coeff * mean_i sum_j z_ij ||W_dec_j||``."""

    architecture = "relu"

    def __init__(self, d_in: int, d_sae: int, *, l1_coeff: float = 1e-3, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        self.l1_coeff = check_float(l1_coeff, "l1_coeff", "ReLUSAE", low=0.0)

    def hyperparams(self) -> dict[str, Any]:
        return {"l1_coeff": self.l1_coeff}

    def extra_losses(self, xn, pre, z, recon, dead):  # type: ignore[no-untyped-def]
        l1 = (z * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1": self.l1_coeff * l1}


class TopKSAE(SparseAutoencoder):
    """TopK SAE with the AuxK dead-latent loss (Gao et al. 2024, "Scaling and evaluating
    sparse autoencoders")."""

    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, *, k: int = 32, k_aux: int | None = None,
                 auxk_alpha: float = 1 / 32, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        name = type(self).__name__
        self.k = check_int(k, "k", name, low=1, high=d_sae, high_inclusive=True, high_name="d_sae")
        k_aux = max(1, d_in // 2) if k_aux is None else k_aux
        self.k_aux = check_int(k_aux, "k_aux", name, low=1)
        self.auxk_alpha = check_float(auxk_alpha, "auxk_alpha", name, low=0.0)

    def hyperparams(self) -> dict[str, Any]:
        return {"k": self.k, "k_aux": self.k_aux, "auxk_alpha": self.auxk_alpha}

    def codes(self, xn, pre, train):  # type: ignore[no-untyped-def]
        return act.topk(pre, self.k)

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainStep:
        """The generic loss (mse + AuxK), computed sparsely end to end: the top-k (and the AuxK
        selection among dead latents) block by block without autograd
        (:func:`~repscope.dictionaries.activations.topk_select`), gradients only through the
        selected latents (:class:`~repscope.dictionaries.activations.SparsePreacts`,
        :func:`~repscope.dictionaries.activations.topk_decode`); codes stay (values, indices)."""
        xn = self.normalize(x)
        xc = (xn - self.b_dec).detach()  # (n, d_in)
        use_aux = dead is not None and self.auxk_alpha > 0 and bool(dead.any())
        pre_top, idx, pre_aux, idx_aux = act.topk_select(
            xc, self.W_enc, self.b_enc, self.k, dead if use_aux else None, self.k_aux)
        if pre_aux is not None:  # one sparse encoder backward for both selections
            both = act.SparsePreacts.apply(torch.cat([pre_top, pre_aux], 1), torch.cat([idx, idx_aux], 1),
                                           xc, self.b_dec, self.W_enc, self.b_enc)
            values, aux = torch.relu(both).split([self.k, idx_aux.shape[1]], 1)
        else:
            values = torch.relu(act.SparsePreacts.apply(pre_top, idx, xc, self.b_dec, self.W_enc, self.b_enc))
        recon = act.topk_decode(values, idx, self.W_dec) + self.b_dec  # (n, d_in)
        parts = {"mse": (recon - xn).pow(2).sum(-1).mean() / self.d_in}
        if pre_aux is not None:
            e = (xn - recon).detach()  # (n, d_in)
            e_hat = act.topk_decode(aux, idx_aux, self.W_dec)  # (n, d_in)
            parts["auxk"] = self.auxk_alpha * batch_ratio((e_hat - e).pow(2).sum(), e.pow(2).sum())
        else:
            parts["auxk"] = xn.new_zeros(())
        return TrainStep(parts["mse"] + parts["auxk"], None, {k: v.detach() for k, v in parts.items()},
                         values.detach(), idx, self.d_sae)

    def extra_losses(self, xn, pre, z, recon, dead):  # type: ignore[no-untyped-def]
        return {"auxk": auxk_loss(xn, pre, recon, self.W_dec, dead, self.k_aux, self.auxk_alpha)}


class BatchTopKSAE(TopKSAE):
    """BatchTopK (Bussmann et al. 2024, arXiv 2412.06410): top ``k * n`` over the batch while
    training; at inference a JumpReLU with one global threshold ``theta``.

    ``theta`` is the paper's estimator (sec. 3), the average over batches of the smallest
    positive code kept by BatchTopK (:func:`~repscope.dictionaries.activations.batch_topk_threshold`),
    computed by the trainer with the *final* weights on the last training batches
    (:meth:`after_training`). During training an exponential moving average (decay
    ``threshold_decay``) of the same per-batch minimum serves as a running estimate, so
    intermediate checkpoints have a usable threshold."""

    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, *, threshold_decay: float = 0.99, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        self.threshold_decay = check_float(threshold_decay, "threshold_decay", "BatchTopKSAE",
                                           low=0.0, high=1.0, high_inclusive=False)
        self.register_buffer("threshold", torch.full((), -1.0, dtype=torch.float64))

    def hyperparams(self) -> dict[str, Any]:
        return {**super().hyperparams(), "threshold_decay": self.threshold_decay}

    training_loss = SparseAutoencoder.training_loss  # codes vary per row: the generic path

    def codes(self, xn, pre, train):  # type: ignore[no-untyped-def]
        if train:
            return act.batch_topk(pre, self.k)
        theta = max(float(self.threshold), 0.0)
        return act.jumprelu(pre, theta)

    @torch.no_grad()
    def after_step(self, z: torch.Tensor) -> None:
        positive = z[z > 0]
        if positive.numel() == 0:
            return
        low = float(positive.min())
        old = float(self.threshold)
        new = low if old < 0 else self.threshold_decay * old + (1 - self.threshold_decay) * low
        self.threshold.fill_(new)

    @torch.no_grad()
    def after_training(self, batches: Iterable[torch.Tensor]) -> None:
        """Set ``theta`` to the paper's estimator on ``batches`` with the current weights."""
        pres = (self.pre_acts(self.normalize(x)) for x in batches)
        theta = act.batch_topk_threshold(pres, self.k)
        if theta > 0:
            self.threshold.fill_(theta)

    @torch.no_grad()
    def calibrate_threshold(self, x: torch.Tensor, batch_size: int) -> float:
        """Re-estimate ``theta`` on raw activations ``x`` (n, d_in) cut into batches of
        ``batch_size`` (use the training batch size); returns the new ``theta``."""
        check_int(batch_size, "batch_size", "BatchTopKSAE.calibrate_threshold", low=1)
        chunks = list(x.split(batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < batch_size:
            chunks.pop()  # a partial batch keeps the same fraction but is noisier
        self.after_training(chunks)
        return float(self.threshold)


class TopAFASAE(SparseAutoencoder):
    """top-AFA SAE (Lee et al. 2025, "Evaluating and Designing Sparse Autoencoders by
    Approximating Quasi-Orthogonality", arXiv 2503.24277): per-row adaptive number of latents
    chosen so the code's norm matches the approximate feature activation ``||x_i - b_dec||``
    (see :func:`~repscope.dictionaries.activations.afa_k`); no ``k`` hyper-parameter.

    Loss, as in the paper: ``mse + L_AFA + AuxK`` with ``mse`` per element
    (``||x - x_hat||^2 / d_in``) and the norm-matching term *not* divided by ``d_in``:
    ``L_AFA = afa_coeff * mean_i (||z_i|| - ||x_i - b_dec||)^2``; the paper sweeps
    ``afa_coeff`` in [1/128, 1/16] on inputs with ``E||x||^2 = d_in`` (our normalisation too).
    ``L_AFA`` is the only pressure towards fewer latents, so its weight relative to the
    per-element MSE matters: scaled down by ``d_in`` the codes stay dense.
    Deviation: the paper's code measures ``L_AFA`` against ``||x||``; we use ``||x - b_dec||``,
    the same target as the selection rule (they coincide for centred data with ``b_dec = 0``).

    ``afa_tol`` (default 0, the paper's rule) makes the selection prefer the sparsest prefix
    whose norm is within ``afa_tol * ||x - b_dec||`` of the closest one
    (:func:`~repscope.dictionaries.activations.afa_k`). With the paper's rule, training settles
    at about 3x the true L0 (latents with tiny activations fill the last few percent of the
    norm); ``afa_tol = 0.02`` recovers the true sparsity on quasi-orthogonal features
    (docs/dictionaries.md, "top-AFA in practice").
    """

    architecture = "topafa"

    def __init__(self, d_in: int, d_sae: int, *, afa_coeff: float = 1.0 / 32, afa_tol: float = 0.0,
                 k_aux: int | None = None, auxk_alpha: float = 1 / 32, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        self.afa_coeff = check_float(afa_coeff, "afa_coeff", "TopAFASAE", low=0.0)
        self.afa_tol = check_float(afa_tol, "afa_tol", "TopAFASAE", low=0.0, high=1.0)
        self.k_aux = check_int(max(1, d_in // 2) if k_aux is None else k_aux, "k_aux", "TopAFASAE", low=1)
        self.auxk_alpha = check_float(auxk_alpha, "auxk_alpha", "TopAFASAE", low=0.0)

    def hyperparams(self) -> dict[str, Any]:
        return {"afa_coeff": self.afa_coeff, "afa_tol": self.afa_tol, "k_aux": self.k_aux,
                "auxk_alpha": self.auxk_alpha}

    def codes(self, xn, pre, train):  # type: ignore[no-untyped-def]
        target = (xn - self.b_dec).norm(dim=-1)  # (n,)
        return act.topk_afa(torch.relu(pre), target, self.W_dec.norm(dim=1), self.afa_tol)

    def extra_losses(self, xn, pre, z, recon, dead):  # type: ignore[no-untyped-def]
        gap = z.norm(dim=-1) - (xn - self.b_dec).norm(dim=-1)
        aux = auxk_loss(xn, pre, recon, self.W_dec, dead, self.k_aux, self.auxk_alpha)
        return {"afa": self.afa_coeff * gap.pow(2).mean(), "auxk": aux}


class MatchingPursuitSAE(SparseAutoencoder):
    """MP-SAE (Costa et al. 2025): the encoder is ``k`` steps of non-negative matching pursuit
    over the (unit-normalised) decoder rows, so ``W_enc = W_dec^T`` is tied and ``b_enc = 0``;
    each step can only lower the residual norm."""

    architecture = "mp"
    has_encoder = False

    def __init__(self, d_in: int, d_sae: int, *, k: int = 32, **kw: Any) -> None:
        super().__init__(d_in, d_sae, **kw)
        self.k = check_int(k, "k", "MatchingPursuitSAE", low=1, high=d_sae, high_inclusive=True,
                           high_name="d_sae")

    def hyperparams(self) -> dict[str, Any]:
        return {"k": self.k}

    @property
    def W_enc(self) -> torch.Tensor:  # type: ignore[override]
        return self.W_dec.T

    @property
    def b_enc(self) -> torch.Tensor:  # type: ignore[override]
        return self.W_dec.new_zeros(self.d_sae)

    def pre_acts(self, xn: torch.Tensor) -> torch.Tensor:
        return xn - self.b_dec  # the pursuit starts from the centred input

    def codes(self, xn, pre, train):  # type: ignore[no-untyped-def]
        W = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        z, _ = act.matching_pursuit(pre, W, self.k)
        return z * (1.0 / self.W_dec.norm(dim=1))  # exact for unit rows; keeps z W_dec right

    def residual_norms(self, x: torch.Tensor) -> torch.Tensor:
        """Residual norm after each pursuit step, (n, k + 1), non-increasing along a row."""
        pre = self.pre_acts(self.normalize(x))
        W = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        return act.matching_pursuit(pre, W, self.k)[1]


ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls
    for cls in (ReLUSAE, TopKSAE, BatchTopKSAE, TopAFASAE, MatchingPursuitSAE)
}


def build_sae(architecture: str, d_in: int, d_sae: int, **hyper: Any) -> SparseAutoencoder:
    """Instantiate an architecture by name ('relu', 'topk', 'batchtopk', 'topafa', 'mp')."""
    from repscope._validate import check_choice

    check_choice(architecture, "architecture", "build_sae", ARCHITECTURES)
    return ARCHITECTURES[architecture](d_in, d_sae, **hyper)
