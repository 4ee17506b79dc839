"""Train a sparse autoencoder from arrays or an ActivationStore, with exact resume.

One step: read the batch's rows (:class:`~repscope.dictionaries.source.BatchPlan`), compute the
architecture's loss, drop the gradient component parallel to each decoder row, Adam step with
the scheduled learning rate, renormalise decoder rows to unit norm, update dead-latent
counters. Learning rate: linear warm-up over ``warmup_steps``, constant, then linear decay to
0 over the last ``decay_fraction`` of the steps.

Held-out rows: ``holdout_fraction`` of the rows (seeded contiguous segments,
:func:`~repscope.dictionaries.source.holdout_split`) are never trained on; their FVU is logged
every ``eval_every`` steps and :class:`TrainResult` returns them for evaluation.

Output directory (repscope's layout, :mod:`~repscope.dictionaries.io`)::

    out_dir/cfg.json            architecture, shapes, hyper-parameters, training config, layer,
                                resolved batch size / steps / lr and the train / held-out split
    out_dir/sae.safetensors     weights (W_enc, b_enc, W_dec, b_dec, input_scale, ...)
    out_dir/manifest.json       sha256 of both, verified by load_sae
    out_dir/state.safetensors   resume state: weights, optimiser, step, dead-latent counters, RNG
                                (tensors + JSON, no pickle: :mod:`~repscope.dictionaries.checkpoint`)

The state is written atomically every ``checkpoint_every`` steps; a run killed at any point (or
stopped by a full disk) and started again with the same config continues from the last
checkpoint and ends with the same weights, bit for bit, as an uninterrupted run (same machine,
same thread count).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from repscope._validate import check_float, check_int
from repscope.config import config_to_dict
from repscope.dictionaries import checkpoint as ckpt
from repscope.dictionaries.io import save_sae
from repscope.dictionaries.sae import SparseAutoencoder, build_sae
from repscope.dictionaries.source import (
    BatchPlan,
    RowSource,
    SubsetSource,
    as_source,
    holdout_split,
)

__all__ = ["TrainConfig", "TrainResult", "train_sae"]

log = logging.getLogger(__name__)
STATE_FILE = ckpt.STATE_FILE
#: last training batches re-read with the final weights by ``SparseAutoencoder.after_training``
#: (BatchTopK's inference threshold, Bussmann et al. 2024)
FINAL_BATCHES = 100
#: config keys that may change between a run and its resume (they do not affect the weights)
_RESUMABLE_CHANGES = ("device", "log_every", "checkpoint_every", "eval_every")
#: default rows per step: at most this, and at most an eighth of the training rows
DEFAULT_BATCH = 1024
#: held-out rows the periodic FVU is computed on (the first ones of the held-out set)
EVAL_ROWS = 4096


MIN_DEFAULT_STEPS = 1000
"""Fewest steps when ``steps`` is not given: one pass over a small store (the demo's ~5,000 token
rows are 5 steps of 1,024) leaves the SAE barely trained (FVU 0.77 there; 0.036 after 1,000)."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in ``cfg.json`` under ``train``)."""

    architecture: Literal["relu", "topk", "batchtopk", "topafa", "mp", "jumprelu", "matryoshka"] = _f(
        "topk", "SAE architecture.")
    expansion: int = _f(16, "d_sae = expansion * d_in (ignored when d_sae is given).")
    d_sae: int | None = _f(None, "Number of latents.")
    k: int = _f(32, "Active latents per row (topk, batchtopk, matryoshka: mean per row; mp: pursuit steps).")
    l1_coeff: float = _f(1e-3, "L1 coefficient (relu).")
    l0_coeff: float | None = _f(None, "L0 penalty coefficient (jumprelu; default 1 / d_in).")
    bandwidth: float = _f(0.05, "Straight-through kernel bandwidth (jumprelu).")
    threshold_init: float = _f(0.01, "Initial JumpReLU threshold (jumprelu).")
    widths: tuple[int, ...] = _f((), "Nested prefix widths, ending at d_sae (matryoshka; default "
                                     "d_sae/16, /8, /4, /2, d_sae).")
    afa_coeff: float = _f(1 / 32, "Norm-matching loss coefficient (topafa; Lee et al. sweep 1/128 to 1/16).")
    afa_tol: float = _f(0.0, "top-AFA: prefer the sparsest prefix within afa_tol * ||x|| of the closest "
                             "(0: Lee et al.'s rule; 0.02 reaches the true sparsity, docs/dictionaries.md).")
    auxk_alpha: float = _f(1 / 32, "AuxK loss coefficient (topk, batchtopk, topafa).")
    k_aux: int | None = _f(None, "Latents in the AuxK reconstruction (default d_in // 2).")
    batch_size: int | None = _f(None, "Rows per step (default min(1024, training rows / 8); "
                                          "more than the training rows is refused).")
    steps: int | None = _f(None, "Optimiser steps (default: one pass over the rows, and at "
                                 "least 1,000 steps on small data).")
    lr: float | None = _f(None, "Adam learning rate (default 2e-4 / sqrt(d_sae / 16384), Gao et al.).")
    warmup_steps: int = _f(100, "Linear learning-rate warm-up steps.")
    decay_fraction: float = _f(0.2, "Final fraction of steps with linear decay to 0.")
    dead_window_tokens: int = _f(1_000_000, "A latent is dead after this many rows without firing.")
    normalize: bool = _f(True, "Scale inputs so that E||x||^2 = d_in (scale stored in the SAE).")
    checkpoint_every: int = _f(500, "Steps between resumable checkpoints (0: only at the end).")
    log_every: int = _f(50, "Steps between logged metrics.")
    holdout_fraction: float = _f(0.1, "Fraction of rows held out (seeded segments of 64 rows), never "
                                      "trained on; evaluations use them.")
    eval_every: int = _f(250, "Steps between held-out FVU evaluations in the log (0: only at the end).")
    block_rows: int = _f(4096, "Contiguous rows per shuffled block (sequential reads).")
    window_blocks: int = _f(8, "Blocks shuffled together.")
    seed: int = _f(0, "Seed of the initialisation and the data order.")
    device: str = _f("cpu", "torch device ('cpu', 'cuda', ...).")

    def resolved_d_sae(self, d_in: int) -> int:
        return self.d_sae if self.d_sae is not None else self.expansion * d_in

    def hyper(self) -> dict[str, Any]:
        """Keyword arguments of the architecture's constructor."""
        per_arch = {
            "relu": {"l1_coeff": self.l1_coeff},
            "topk": {"k": self.k, "k_aux": self.k_aux, "auxk_alpha": self.auxk_alpha},
            "mp": {"k": self.k},
            "topafa": {"afa_coeff": self.afa_coeff, "afa_tol": self.afa_tol, "k_aux": self.k_aux,
                       "auxk_alpha": self.auxk_alpha},
        }
        per_arch["batchtopk"] = per_arch["topk"]
        per_arch["jumprelu"] = {"l0_coeff": self.l0_coeff, "bandwidth": self.bandwidth,
                                "threshold_init": self.threshold_init}
        per_arch["matryoshka"] = {**per_arch["topk"], "widths": self.widths or None}
        return {**per_arch[self.architecture], "seed": self.seed}


@dataclass
class TrainResult:
    """A trained SAE and how training went."""

    sae: SparseAutoencoder
    "The trained model (eval mode, on the training device)."
    history: list[dict[str, float]]
    "Metrics every ``log_every`` steps: step, lr, loss terms, l0, dead_fraction."
    steps: int
    "Steps done in total (including those before a resume)."
    out_dir: Path | None
    "Where cfg.json / sae.safetensors / state.safetensors were written, if anywhere."
    train_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    "Rows trained on (sorted indices into the data)."
    heldout_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    "Rows held out (never trained on): evaluate on these."
    resolved: dict[str, Any] = field(default_factory=dict)
    "Resolved defaults: batch_size, steps, lr, d_sae, and the split sizes."


def lr_at(step: int, n_steps: int, lr: float, warmup: int, decay_fraction: float) -> float:
    """Warm-up, constant, linear decay schedule."""
    scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    decay_start = n_steps * (1 - decay_fraction)
    if decay_fraction > 0 and step >= decay_start:
        scale *= max(0.0, (n_steps - step) / (n_steps - decay_start))
    return lr * scale


#: decoder rows per block of :func:`remove_parallel_grad` (temporaries stay in cache)
_PROJECT_BLOCK_ROWS = 1024


@torch.no_grad()
def remove_parallel_grad(W_dec: torch.nn.Parameter) -> None:
    """Project each decoder row's gradient onto the row's tangent space (before the step):
    ``g_j -= (g_j . w_j) w_j / ||w_j||^2``, in place, row block by row block (no temporary of
    the decoder's size)."""
    g = W_dec.grad
    if g is None:
        return
    for s in range(0, W_dec.shape[0], _PROJECT_BLOCK_ROWS):
        w, gb = W_dec[s:s + _PROJECT_BLOCK_ROWS], g[s:s + _PROJECT_BLOCK_ROWS]  # (rows, d_in)
        coef = (gb * w).sum(1, keepdim=True).div_((w * w).sum(1, keepdim=True))  # (rows, 1)
        gb.addcmul_(coef, w, value=-1)


@torch.no_grad()
def unit_norm_decoder(W_dec: torch.nn.Parameter) -> None:
    """Renormalise decoder rows to unit norm (after the step)."""
    W_dec /= torch.linalg.vector_norm(W_dec, dim=1, keepdim=True)


def _storage_order(p: torch.Tensor) -> torch.Tensor:
    """``p`` as laid out in memory: the transpose of a column-major matrix (``W_enc`` (d_in,
    d_sae) is stored as its contiguous transpose, like the decoder), else ``p`` itself. The
    transpose is a detached view: same storage and version counter."""
    if p.ndim == 2 and not p.is_contiguous() and p.T.is_contiguous():
        return p.detach().T
    return p


def _adam(sae: SparseAutoencoder, lr: float) -> tuple[torch.optim.Adam, list[torch.Tensor]]:
    """Adam (Gao et al.'s betas and eps) over the parameters in storage order (see
    :func:`_storage_order`), so the fused single-kernel update (CPU and CUDA) runs on contiguous
    memory with no per-step copies or temporaries. Returns the optimiser and the tensors it
    updates (pass them to :func:`_sync_grads` before each step)."""
    tensors = [_storage_order(p) for p in sae.parameters()]
    fused = all(t.device.type in ("cpu", "cuda") for t in tensors)
    opt = torch.optim.Adam(tensors, lr=lr, betas=(0.9, 0.999), eps=6.25e-10, fused=fused or None)
    return opt, tensors


def _sync_grads(sae: SparseAutoencoder, tensors: list[torch.Tensor]) -> None:
    """Hand each parameter's gradient to the tensor the optimiser updates (a view, no copy)."""
    for p, t in zip(sae.parameters(), tensors, strict=True):
        if t is not p:
            t.grad = None if p.grad is None else _storage_order(p.grad)


@torch.no_grad()
def _init_from_data(sae: SparseAutoencoder, source: RowSource, cfg: TrainConfig) -> None:
    rng = np.random.default_rng([cfg.seed, 2**31])
    rows = np.sort(rng.choice(source.n_rows, size=min(source.n_rows, 8192), replace=False))
    x = torch.from_numpy(source.read(rows)).double()  # (m, d_in)
    if cfg.normalize:
        sae.input_scale.fill_(math.sqrt(sae.d_in / float(x.pow(2).sum(1).mean().clamp_min(1e-30))))
    sae.b_dec.copy_((x * sae.input_scale).mean(0).to(sae.b_dec.dtype))


def _resolve(cfg: TrainConfig, n_train: int, d_sae: int) -> tuple[int, int, float]:
    """Batch size, step count and learning rate, defaults filled in; warns about shapes that
    cannot train well and refuses a batch larger than the training rows."""
    fn = "train_sae"
    if cfg.batch_size is None:
        batch = max(1, min(DEFAULT_BATCH, n_train // 8))
    else:
        batch = check_int(cfg.batch_size, "batch_size", fn, low=1, high=n_train, high_inclusive=True,
                          high_name="training rows")
    if d_sae > n_train:
        log.warning("train_sae: %d latents for only %d training rows: most latents cannot be fit "
                    "(use a smaller expansion or d_sae, or more rows)", d_sae, n_train)
    n_steps = cfg.steps if cfg.steps is not None else max(n_train // batch, MIN_DEFAULT_STEPS)
    check_int(n_steps, "steps", fn, low=1)
    lr = cfg.lr if cfg.lr is not None else 2e-4 / math.sqrt(d_sae / 2**14)
    return batch, n_steps, lr


@torch.no_grad()
def heldout_fvu(sae: SparseAutoencoder, X: torch.Tensor) -> float:
    """FVU of ``sae`` on raw rows ``X`` (n, d_in), in float64 (the definition of
    :func:`~repscope.dictionaries.evaluate.fvu`)."""
    was_training = sae.training
    sae.eval()
    recon = sae.decode(sae.encode(X)).double()  # (n, d_in)
    sae.train(was_training)
    x = X.double()
    return float((x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-300))


def _batch_fvu(sae: SparseAutoencoder, x: torch.Tensor, mse: float) -> float:
    """Training-batch FVU from the step's per-entry mse on the normalised scale."""
    xd = x.double()
    total = float((xd - xd.mean(0)).pow(2).sum(1).mean()) * float(sae.input_scale) ** 2
    return mse * sae.d_in / max(total, 1e-300)


def _check_writable(out: Path) -> None:
    """Fail before training when the output directory cannot be written."""
    probe = out / f".write-probe-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"0")
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(out)) from None


def train_sae(
    data: Any,
    cfg: TrainConfig = TrainConfig(),
    *,
    layer: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    parallel: Any = None,
) -> TrainResult:
    """Train ``cfg.architecture`` on ``data`` (an ``(n, d)`` array/tensor, or an
    ActivationStore with ``layer``), holding out ``cfg.holdout_fraction`` of the rows. With
    ``out_dir``, checkpoints there and, when ``resume`` and a training state exists, continues
    from it. ``callback(step, metrics)`` runs after every step (``metrics`` has step, lr and
    loss; the full set on logging steps). Writing errors (full disk, read-only directory) are
    raised as ``OSError``; the last checkpoint stays intact and a rerun resumes from it.
    ``parallel``: set by :func:`repscope.dictionaries.distributed.train_sae_distributed`
    (this process's share of each batch, gradient all-reduce); None trains in one process.

    Parameters
    ----------
    data : array of shape (n, d), tensor, or ActivationStore
        The activations (a store needs ``layer``).
    cfg : TrainConfig
        Architecture, width, sparsity, schedule, seed.
    layer : str, optional
        The store layer to train on.
    out_dir : path, optional
        Checkpoint directory (resumable).
    resume : bool, default True
    progress : bool, default False
    callback : callable, optional
        ``callback(step, metrics)`` after every step.

    Returns
    -------
    TrainResult
        The trained autoencoder, its resolved settings and the training history.
    """
    par = parallel if parallel is not None else _ONE_PROCESS
    full = as_source(data, layer, "train_sae")
    check_float(cfg.holdout_fraction, "holdout_fraction", "train_sae", low=0.0, high=1.0, high_inclusive=False)
    train_rows, held_rows = holdout_split(full.n_rows, cfg.holdout_fraction, cfg.seed)
    source: RowSource = SubsetSource(full, train_rows) if len(held_rows) else full
    d_sae = cfg.resolved_d_sae(source.d)
    sae = build_sae(cfg.architecture, source.d, d_sae, **cfg.hyper()).to(cfg.device)
    batch, n_steps, lr = _resolve(cfg, source.n_rows, d_sae)
    plan = BatchPlan(source.n_rows, batch, cfg.seed, cfg.block_rows, cfg.window_blocks)
    resolved = {"batch_size": batch, "steps": n_steps, "lr": lr, "d_sae": d_sae,
                "train_rows": len(train_rows), "heldout_rows": len(held_rows),
                "split": f"holdout_split(n_rows={full.n_rows}, fraction={cfg.holdout_fraction}, seed={cfg.seed})"}
    X_eval = (torch.from_numpy(full.read(held_rows[:EVAL_ROWS])).to(cfg.device)
              if len(held_rows) else None)
    opt, opt_tensors = _adam(sae, lr)
    since_fired = torch.zeros(d_sae, dtype=torch.int64, device=cfg.device)
    history: list[dict[str, float]] = []
    extra = {"hook_name": layer, "source": full.name, "train": config_to_dict(cfg), "resolved": resolved}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and par.writer:
        _check_writable(out)
    start = 0
    if out is not None and resume and ckpt.has_state(out):
        start, since_fired, history = _load_state(out, sae, opt, cfg)
        log.info("resuming %s at step %d of %d", out, start, n_steps)
    else:
        _init_from_data(sae, source, cfg)

    def checkpoint(step: int) -> None:
        if out is None or not par.writer:  # data parallel: every process holds the same state
            return
        ckpt.save_state(out, sae.state_dict(), opt.state_dict(), since_fired,
                        {"step": step, "history": history, "train": config_to_dict(cfg)})
        save_sae(sae, out, **extra)

    sae.train()
    bar = _progress(progress and par.writer, n_steps, start)
    for step, rows in plan.iter_rows(start, n_steps):
        mine = par.share(rows)  # this process's rows of the global batch (all of them alone)
        x = torch.from_numpy(source.read(mine)).to(cfg.device)  # (batch, d_in)
        dead = since_fired > cfg.dead_window_tokens
        with par.batch(len(mine), len(rows)):
            res = sae.training_loss(x, dead)
        opt.zero_grad(set_to_none=True)  # the storage-order views' gradients
        sae.zero_grad(set_to_none=True)
        par.weighted(res.loss).backward()
        par.reduce_grads(sae)
        remove_parallel_grad(sae.W_dec)
        _sync_grads(sae, opt_tensors)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, n_steps, lr, cfg.warmup_steps, cfg.decay_fraction)
        opt.step()
        unit_norm_decoder(sae.W_dec)
        if type(sae).after_step is not SparseAutoencoder.after_step:
            sae.after_step(res.dense_codes())
        with torch.no_grad():
            since_fired += len(rows)
            since_fired.index_fill_(0, par.fired(res.fired(), d_sae), 0)
        metrics = {"step": step, "lr": opt.param_groups[0]["lr"], "loss": float(res.loss.detach())}
        last = step == n_steps - 1
        if step % cfg.log_every == 0 or last:
            metrics.update({k: float(v) for k, v in res.parts.items()})
            metrics["l0"] = float(res.l0())
            metrics["fvu"] = _batch_fvu(sae, x, metrics["mse"])
            metrics.update(par.means(metrics, ("loss", *res.parts, "l0", "fvu")))
            metrics["dead_fraction"] = float(dead.float().mean())
            if X_eval is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
                metrics["heldout_fvu"] = heldout_fvu(sae, X_eval)
                log.info("step %d: held-out FVU %.4f (%d rows)", step, metrics["heldout_fvu"], len(X_eval))
            history.append(metrics)
            log.debug("step %d %s", step, metrics)
            if bar is not None:
                bar[0].update(bar[1], description=f"SAE fvu={metrics['fvu']:.3f} l0={metrics['l0']:.1f}")
        if bar is not None:
            bar[0].update(bar[1], advance=1)
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            checkpoint(step + 1)
        if callback is not None:
            callback(step, metrics)
    if bar is not None:
        bar[0].stop()
    final = plan.iter_rows(max(0, n_steps - FINAL_BATCHES), n_steps)  # lazy: read if consumed
    sae.after_training(torch.from_numpy(source.read(rows)).to(cfg.device) for _, rows in final)
    checkpoint(n_steps)
    return TrainResult(sae.eval(), history, n_steps, out, train_rows, held_rows, resolved)


class _OneProcess:
    """The hooks :func:`train_sae` calls for data parallelism, for one process: no-ops."""

    writer = True

    def share(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def batch(self, mine: int, total: int) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def weighted(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def reduce_grads(self, sae: SparseAutoencoder) -> None:
        pass

    def fired(self, idx: torch.Tensor, d_sae: int) -> torch.Tensor:
        return idx

    def means(self, metrics: dict[str, float], keys: Any) -> dict[str, float]:
        return {}


_ONE_PROCESS = _OneProcess()


def _load_state(out: Path, sae: SparseAutoencoder, opt: torch.optim.Optimizer, cfg: TrainConfig):  # type: ignore[no-untyped-def]
    state = ckpt.load_state(out, sae.W_dec.device)
    saved = state["train"]
    now = config_to_dict(cfg)
    diff = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
    if diff:
        raise ValueError(
            f"Cannot resume {str(out)!r}: the training config differs in {diff} "
            f"(saved {[saved.get(k) for k in diff]}, now {[now[k] for k in diff]}). "
            "Use the same config, another out_dir, or resume=False."
        )
    sae.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    for t in opt.param_groups[0]["params"]:  # moments saved in W_enc's (d_in, d_sae) shape
        for key, value in opt.state.get(t, {}).items():
            if torch.is_tensor(value) and value.ndim == 2 and value.shape != t.shape:
                opt.state[t][key] = value.T.contiguous()
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state["since_fired"], list(state["history"])


def _progress(enabled: bool, total: int, start: int):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=False)
    task = bar.add_task("SAE", total=total, completed=start)
    bar.start()
    return bar, task


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from ``cfg.json['train']``."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})
