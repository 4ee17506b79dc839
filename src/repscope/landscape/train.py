"""One training run of a landscape task: at theta_0, fully trained, or trained in a subspace.

:func:`train_point` is what every sweep task runs (in the driver, a process-pool worker or a Ray
worker): it builds the task's model at ``seed`` (``theta_0``), trains it for the task's
:class:`TrainConfig` either directly or as a :class:`~repscope.landscape.subspace.Subspace`, and
evaluates the task's metric on its evaluation split. Three independent streams derive from
``seed``: the initialisation (``seed`` itself), the projection and the batch order (two
``numpy.random.SeedSequence`` children), so changing one never shifts another.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from repscope.landscape.config import TrainConfig
from repscope.landscape.results import PointResult
from repscope.landscape.subspace import Subspace, select_parameters

if TYPE_CHECKING:  # tasks.py does not import this module: no cycle either way
    from repscope.landscape.tasks import SupervisedTask

__all__ = ["TrainConfig", "derived_seed", "evaluate", "train_point"]

KINDS = ("init", "full", "subspace")


def derived_seed(seed: int, stream: str) -> int:
    """An independent 32-bit seed for ``stream`` ('projection', 'order') from a run's seed."""
    tag = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1)[0])


def _optimizer(cfg: TrainConfig, params: Sequence[torch.Tensor], lr: float) -> Any:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.LBFGS(params, lr=lr, max_iter=cfg.max_iter, history_size=50,
                             tolerance_grad=1e-14, tolerance_change=1e-16,
                             line_search_fn="strong_wolfe")


def evaluate(task: SupervisedTask, forward: Callable[..., torch.Tensor],
             data: Sequence[torch.Tensor], batch_size: int) -> tuple[float, float]:
    """``(metric, mean loss)`` of ``forward(*inputs)`` over ``data`` (inputs..., targets)."""
    n = len(data[0])
    correct = 0
    total_loss = 0.0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = [t[i:i + batch_size] for t in data]
            out = forward(*batch[:-1])
            total_loss += float(task.loss_fn(out, batch[-1])) * len(batch[-1])
            if task.metric == "accuracy":
                correct += int((out.argmax(-1) == batch[-1]).sum())
    loss = total_loss / n
    return (correct / n if task.metric == "accuracy" else loss), loss


def train_point(task: SupervisedTask, kind: str, d: int | None = None, seed: int = 0, *,
                projection: str = "fastfood", said: bool = False, block: int | None = None,
                device: str = "cpu") -> PointResult:
    """Run ``task`` once: ``kind='init'`` evaluates theta_0, ``'full'`` trains every selected
    parameter, ``'subspace'`` trains ``d`` numbers through ``projection`` (SAID when ``said``)."""
    from repscope._validate import check_choice, check_int

    fn = "train_point"
    kind = check_choice(kind, "kind", fn, KINDS)
    seed = check_int(seed, "seed", fn, low=0)
    t0 = time.perf_counter()
    cfg = task.training
    model = task.model(seed).to(device)
    train = [t.to(device) for t in task.train]
    test = train if task.test is None else [t.to(device) for t in task.test]
    if kind == "subspace":
        d = check_int(d, "d", fn, low=1)
        net: nn.Module = Subspace(model, d, projection=projection,
                                  seed=derived_seed(seed, "projection"), said=said,
                                  include=task.include, exclude=task.exclude, block=block)
        params = list(net.parameters())
    else:
        net = model
        chosen = {id(p) for _, p in select_parameters(model, task.include, task.exclude)}
        params = [p for p in model.parameters() if id(p) in chosen]
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
    steps, train_loss, diverged = 0, math.nan, False
    if kind == "init":
        model.eval()
        _, train_loss = evaluate(task, model, train, cfg.eval_batch_size)
    else:
        model.train()
        steps, train_loss, diverged = _fit(task, net, params, train, cfg, cfg.lr_for(kind),
                                           derived_seed(seed, "order"))
    model.eval()
    if diverged:
        value = loss = math.nan
    elif isinstance(net, Subspace):
        with torch.no_grad():
            theta = {k: v.detach() for k, v in net.full_parameters().items()}
        value, loss = evaluate(task, lambda *x: net.call(theta, *x), test, cfg.eval_batch_size)
    else:
        value, loss = evaluate(task, model, test, cfg.eval_batch_size)
    return PointResult(kind=kind, d=d if kind == "subspace" else None, seed=seed,
                       value=float(value), loss=float(loss), train_loss=float(train_loss),
                       steps=steps, seconds=time.perf_counter() - t0,
                       n_trainable=sum(p.numel() for p in params) if kind != "init" else 0,
                       diverged=diverged)


def _fit(task: SupervisedTask, net: nn.Module, params: list[torch.Tensor],
         train: list[torch.Tensor], cfg: TrainConfig, lr: float,
         order_seed: int) -> tuple[int, float, bool]:
    """The training loop; returns ``(steps, mean loss of the last epoch, diverged)``."""
    opt = _optimizer(cfg, params, lr)
    n = len(train[0])
    size = cfg.batch_size if 0 < cfg.batch_size < n else n
    gen = torch.Generator().manual_seed(order_seed)
    steps, epoch_loss = 0, math.nan
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen) if size < n else None
        losses = []
        for i in range(0, n, size):
            if order is None:
                batch = train
            else:
                idx = order[i:i + size].to(train[0].device)
                batch = [t[idx] for t in train]

            def closure(batch: list[torch.Tensor] = batch) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = task.loss_fn(net(*batch[:-1]), batch[-1])
                loss.backward()
                return loss

            loss = opt.step(closure) if cfg.optimizer == "lbfgs" else _plain_step(opt, closure)
            steps += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                return steps, value, True
            losses.append(value * len(batch[-1]))
        epoch_loss = sum(losses) / n
    return steps, epoch_loss, False


def _plain_step(opt: Any, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    loss = closure()
    opt.step()
    return loss.detach()
