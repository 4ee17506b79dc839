"""Data-parallel SAE training with ``torch.distributed``: the one-process result, on N processes.

Every process builds the same SAE (same seed, same data-dependent initialisation), walks the
same seeded batch order (:class:`~repscope.dictionaries.source.BatchPlan`) and takes its own
contiguous share of each global batch (:func:`numpy.array_split` of the sorted rows, rank by
rank). Per step:

* the loss terms that are means over rows (MSE, L1, L0, the AuxK numerator) are weighted by
  the process's share of the batch, ``B_rank / B``; the one ratio of batch sums (AuxK's
  normaliser, :func:`repscope.dictionaries.sae.batch_ratio`) uses the sum over all processes;
  so the processes' losses add up to the one-process loss of the global batch;
* the gradients are summed over the processes (one ``all_reduce`` of a flat buffer), so every
  process takes the same Adam step on the same gradient;
* the latents that fired anywhere reset the dead-latent counters everywhere (one
  ``all_reduce`` of a fired mask); logged metrics are weighted means over the processes.

The weights therefore equal one-process training on the same global batches up to the
floating-point order of the gradient sums (``tests/test_sae_distributed.py``: 1e-5 after 100
steps). Architectures whose training selection spans the whole batch (``batchtopk``,
``matryoshka``: the top ``k * B`` codes of the batch) are refused. Process 0 writes the
checkpoints and the SAE; a run resumes from them like a one-process run (the directory must be
visible to every process).

Launching: ``torchrun --nproc-per-node N $(which repscope) sae train ...`` (the command notices
``WORLD_SIZE``), :func:`train_sae_distributed` inside any process group (torchrun, Ray Train's
``TorchTrainer``), or :func:`train_sae_parallel`, which spawns ``N`` processes on this machine
(gloo on loopback for the CPU, NCCL for CUDA).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repscope.dictionaries import sae as sae_module
from repscope.dictionaries.train import TrainConfig, TrainResult, train_sae

__all__ = ["DataParallel", "train_sae_distributed", "train_sae_parallel"]

log = logging.getLogger(__name__)

_DEFAULT = TrainConfig()
BATCH_WIDE = ("batchtopk", "matryoshka")
"Architectures whose training selection spans the whole batch: not data-parallel."


class DataParallel:
    """The hooks :func:`~repscope.dictionaries.train.train_sae` calls on each of ``world``
    processes of a ``torch.distributed`` group."""

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.writer = self.rank == 0
        self._w = 1.0
        self._scale = 1.0

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This process's contiguous part of the global batch ``rows``."""
        if len(rows) < self.world:
            raise ValueError(
                f"The 'batch_size' parameter of train_sae_distributed must be at least the number "
                f"of processes ({self.world}). Got {len(rows)} instead.")
        return np.array_split(rows, self.world)[self.rank]

    @contextlib.contextmanager
    def batch(self, mine: int, total: int) -> Iterator[None]:
        """While the loss is computed: batch-sum ratios use the sums over all processes."""
        self._w = mine / total
        self._scale = total / mine if mine else 0.0
        old = sae_module._BATCH_RATIO[0]
        sae_module._BATCH_RATIO[0] = self._ratio
        try:
            yield
        finally:
            sae_module._BATCH_RATIO[0] = old

    def _ratio(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        total = den.detach().clone()
        self.dist.all_reduce(total, group=self.group)
        # weighted by B_rank / B with the other terms: scaled back so the sum is num_all / den_all
        return num / total.clamp_min(1e-12) * self._scale

    def weighted(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self._w

    def reduce_grads(self, model: torch.nn.Module) -> None:
        """Sum every parameter's gradient over the processes (one flat all-reduce)."""
        params = list(model.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # copies: any layout
        self.dist.all_reduce(flat, group=self.group)
        at = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            if p.grad is None:
                p.grad = g
            p.grad.copy_(flat[at:at + n].view(g.shape))
            at += n

    def fired(self, idx: torch.Tensor, d_sae: int) -> torch.Tensor:
        """The latents that fired in any process's share of the batch."""
        mask = torch.zeros(d_sae, dtype=torch.int32, device=idx.device)
        mask[idx] = 1
        self.dist.all_reduce(mask, group=self.group)
        return mask.nonzero().squeeze(1)

    def means(self, metrics: dict[str, float], keys: Any) -> dict[str, float]:
        """Weighted means over the processes of the per-process metrics ``keys``."""
        keys = [k for k in keys if k in metrics]
        vals = torch.tensor([metrics[k] * self._w for k in keys], dtype=torch.float64)
        self.dist.all_reduce(vals, group=self.group)
        return {k: float(v) for k, v in zip(keys, vals, strict=True)}


def train_sae_distributed(data: Any, cfg: TrainConfig = _DEFAULT, *, layer: str | None = None,
                          out_dir: Any = None, resume: bool = True, progress: bool = False,
                          backend: str | None = None) -> TrainResult:
    """Train on this process's share of every batch, inside a ``torch.distributed`` group
    (started here from torchrun's environment when none is running: gloo on the CPU, NCCL on
    CUDA, each process on ``cuda:LOCAL_RANK``). Every process returns the same trained SAE."""
    import torch.distributed as dist

    if cfg.architecture in BATCH_WIDE:
        raise ValueError(
            f"The 'architecture' parameter of train_sae_distributed must not be one of "
            f"{list(BATCH_WIDE)} (their training selection spans the whole batch, so it cannot "
            f"be split across processes). Got {cfg.architecture!r} instead.")
    if cfg.device.startswith("cuda"):
        cfg = dataclasses.replace(cfg, device=f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    own = not dist.is_initialized()
    if own:
        dist.init_process_group(backend or ("nccl" if cfg.device.startswith("cuda") else "gloo"))
    try:
        par = DataParallel()
        log.info("data-parallel SAE training: process %d of %d", par.rank, par.world)
        return train_sae(data, cfg, layer=layer, out_dir=out_dir, resume=resume,
                         progress=progress, parallel=par)
    finally:
        if own:
            dist.destroy_process_group()


def train_sae_parallel(data: Any, cfg: TrainConfig = _DEFAULT, *, processes: int = 2,
                       layer: str | None = None, out_dir: Any = None, resume: bool = True,
                       backend: str | None = None) -> TrainResult:
    """:func:`train_sae_distributed` on ``processes`` processes spawned on this machine (gloo on
    loopback; NCCL for CUDA), returning process 0's result. ``data``: an array (sent to each
    process) or an ActivationStore (each process opens it by path)."""
    import torch.multiprocessing as mp

    from repscope._validate import check_int

    processes = check_int(processes, "processes", "train_sae_parallel", low=1)
    if cfg.architecture in BATCH_WIDE:
        raise ValueError(
            f"The 'architecture' parameter of train_sae_parallel must not be one of "
            f"{list(BATCH_WIDE)} (their training selection spans the whole batch, so it cannot "
            f"be split across processes). Got {cfg.architecture!r} instead.")
    payload = _portable(data)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(processes)}
    with tempfile.TemporaryDirectory(prefix="repscope-ddp-") as tmp:
        # results travel through files written after training: a pipe would block process 0 on
        # a state larger than its buffer while this process waits in join
        mp.start_processes(_child, args=(env, payload, cfg, layer, out_dir, resume, backend, tmp),
                           nprocs=processes, join=True, start_method="spawn")
        err = Path(tmp) / "error.json"
        if err.exists():
            raise ValueError(json.loads(err.read_text())["message"])
        with np.load(Path(tmp) / "state.npz") as z:
            state = {k[2:]: torch.from_numpy(z[k].copy()) for k in z.files if k.startswith("w.")}
            train_rows, held_rows = z["train_rows"], z["heldout_rows"]
        meta = json.loads((Path(tmp) / "meta.json").read_text())
    from repscope.dictionaries.sae import build_sae

    model = build_sae(cfg.architecture, int(state["W_dec"].shape[1]), int(state["W_dec"].shape[0]),
                      **cfg.hyper())
    model.load_state_dict(state)
    return TrainResult(model.eval(), meta["history"], meta["steps"],
                       None if out_dir is None else Path(out_dir), train_rows, held_rows,
                       meta["resolved"])


def _child(rank: int, env: dict[str, str], payload: Any, cfg: TrainConfig, layer: str | None,
           out_dir: Any, resume: bool, backend: str | None, tmp: str) -> None:
    os.environ.update(env)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank)})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    data = _restore(payload)
    try:
        res = train_sae_distributed(data, cfg, layer=layer, out_dir=out_dir, resume=resume,
                                    backend=backend)
    except ValueError as exc:  # a mistake in the arguments: the same one-line error in every process
        if rank == 0:
            (Path(tmp) / "error.json").write_text(json.dumps({"message": str(exc)}))
        return
    if rank == 0:
        arrays = {f"w.{k}": v.detach().cpu().numpy() for k, v in res.sae.state_dict().items()}
        np.savez(Path(tmp) / "state.npz", train_rows=res.train_rows, heldout_rows=res.heldout_rows,
                 **arrays)
        (Path(tmp) / "meta.json").write_text(json.dumps(
            {"history": res.history, "steps": res.steps, "resolved": res.resolved}, default=_plain))


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def _portable(data: Any) -> Any:
    """What a spawned process needs to read ``data``: the array, or a store's class and path."""
    if hasattr(data, "layers") and hasattr(data, "path") and hasattr(data, "read"):
        return ("store", type(data).open, str(data.path))
    if isinstance(data, torch.Tensor):
        return ("array", data.detach().cpu().numpy())
    return ("array", np.asarray(data))


def _restore(payload: Any) -> Any:
    if payload[0] == "store":
        return payload[1](payload[2])
    return payload[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
