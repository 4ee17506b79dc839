"""Preflight of ``repscope sae train``: refuse settings that cannot train, estimate time and memory.

:func:`sae_preflight` resolves what :func:`~repscope.dictionaries.train.train_sae` would run
(training rows after the hold-out, batch, steps, latents), refuses with one line a batch
larger than the training rows (``train_sae``'s own ``ValueError``) or, as a
:class:`repscope.errors.UsageError`, a dictionary of more than :data:`MAX_LATENTS_PER_ROW` latents per training row (most latents then see no row
at all: 6,144 latents on 746 rows trained for 24 minutes and learnt nothing the rows could
support), and times :data:`PROBE_STEPS` real optimiser steps of the same architecture, width
and batch on this machine to estimate the whole run. Peak memory counts the parameters with
their gradients and Adam's two moments (4 copies, float32) plus a batch's dense pre-activations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LATENTS_PER_ROW", "PROBE_STEPS", "SAEPlan", "sae_preflight"]

MAX_LATENTS_PER_ROW = 4
"Refuse more latents than this many times the training rows."
PROBE_STEPS = 3
"Optimiser steps timed (after one warm-up step)."


@dataclass(frozen=True)
class SAEPlan:
    """What ``sae train`` will run and its estimated cost."""

    n_train: int
    d_in: int
    d_sae: int
    batch_size: int
    steps: int
    seconds: float
    "Estimated training time (steps x the measured time of one step)."
    peak_bytes: int

    def lines(self) -> list[str]:
        from repscope._progress import format_bytes, format_seconds

        return [f"plan: {self.d_sae} latents on {self.n_train:,} training rows of dimension "
                f"{self.d_in}, batch {self.batch_size}, {self.steps:,} steps",
                f"estimate: {format_seconds(self.seconds)} of training, peak memory "
                f"~{format_bytes(self.peak_bytes)} (steps timed on this machine)"]


def sae_preflight(cfg: Any, n_rows: int, d_in: int) -> SAEPlan:
    """Check ``cfg`` against ``n_rows`` rows of dimension ``d_in`` and estimate the run.

    Parameters
    ----------
    cfg : TrainConfig
        The training configuration.
    n_rows : int
        Rows of the layer (before the hold-out split).
    d_in : int
        Their dimension.

    Returns
    -------
    SAEPlan
        The resolved settings and the estimated seconds and peak bytes.
    """
    import torch

    from repscope._validate import check_int
    from repscope.dictionaries.sae import build_sae
    from repscope.dictionaries.source import holdout_split
    from repscope.dictionaries.train import DEFAULT_BATCH, MIN_DEFAULT_STEPS
    from repscope.errors import UsageError

    train_rows, _ = holdout_split(n_rows, cfg.holdout_fraction, cfg.seed)
    n_train = len(train_rows) or n_rows
    d_sae = cfg.resolved_d_sae(d_in)
    batch = cfg.batch_size if cfg.batch_size is not None else max(1, min(DEFAULT_BATCH,
                                                                          n_train // 8))
    # the same one-line refusal train_sae gives (exit code 1 in the CLI, as before)
    check_int(batch, "batch_size", "train_sae", low=1, high=n_train, high_inclusive=True,
              high_name="training rows")
    if d_sae > MAX_LATENTS_PER_ROW * n_train:
        raise UsageError(f"{d_sae} latents for {n_train:,} training rows: more than "
                         f"{MAX_LATENTS_PER_ROW} latents per row cannot be fit (most would never "
                         f"fire); use --d-sae or --expansion for at most "
                         f"{MAX_LATENTS_PER_ROW * n_train:,} latents, or capture more rows.")
    steps = cfg.steps if cfg.steps is not None else max(n_train // batch, MIN_DEFAULT_STEPS)
    sae = build_sae(cfg.architecture, d_in, d_sae, **cfg.hyper()).to(cfg.device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(0)).to(cfg.device)
    per_step = 0.0
    for i in range(PROBE_STEPS + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        sae.training_loss(x).loss.backward()
        opt.step()
        if i:  # the first step pays one-time allocations
            per_step += (time.perf_counter() - t0) / PROBE_STEPS
    n_params = sum(p.numel() for p in sae.parameters())
    peak = 4 * (4 * n_params + 3 * batch * d_sae + 4 * batch * d_in)
    return SAEPlan(n_train, d_in, d_sae, batch, steps, per_step * steps, int(peak))
