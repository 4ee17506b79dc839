"""Forward hooks on any ``torch.nn.Module``, selected by module name or glob pattern.

``capture`` registers one hook per selected module, keeps the first tensor each module
produces (or receives), and always removes every hook when the block ends, also when the
block raises. With ``stop_after_last=True`` the forward pass is cut short as soon as every
selected module has run, which saves the compute of the layers after the last one needed.

Example::

    with capture(model, ["embeddings", "encoder.layer.*"]) as acts:
        model(**batch)
    acts["encoder.layer.0"]  # (batch, seq, d) torch.Tensor, detached
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from repscope._names import natural_key

__all__ = [
    "LayerNotFoundError",
    "StopForward",
    "capture",
    "first_tensor",
    "natural_key",
    "resolve_layers",
]


class StopForward(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a hook to end the forward pass early; caught by :func:`capture`.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that an ``except Exception`` in the
    model's code or in the ``with`` block cannot swallow it."""


class LayerNotFoundError(KeyError, ValueError):
    """A requested module name or pattern matches no module of the model."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob -> regex where ``*`` and ``?`` stay inside one dotted component, ``**`` crosses."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[" and "]" in pattern[i + 1 :]:
            j = pattern.index("]", i + 1)
            body = pattern[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def resolve_layers(model: nn.Module, names: str | Sequence[str]) -> list[str]:
    """Expand module names and glob patterns into module names of ``model``.

    Plain names are kept in the order given; each pattern expands to its matches in natural
    sort order (``encoder.layer.*`` -> ``encoder.layer.0``, ..., ``encoder.layer.11``).
    Duplicates are dropped (first occurrence wins). A name or pattern matching nothing raises
    :class:`LayerNotFoundError` listing the closest module names.
    """
    if isinstance(names, str):
        names = [names]
    modules = [n for n, _ in model.named_modules() if n]
    known = set(modules)
    out: list[str] = []
    for name in names:
        if _is_pattern(name):
            regex = _glob_regex(name)
            found = sorted((m for m in modules if regex.fullmatch(m)), key=natural_key)
        else:
            found = [name] if name in known else []
        if not found:
            close = difflib.get_close_matches(name, modules, n=5, cutoff=0.5)
            hint = f" Close matches: {close}." if close else ""
            top = sorted({m.split(".")[0] for m in modules})[:12]
            raise LayerNotFoundError(
                f"No module of {type(model).__name__} matches layer {name!r}.{hint} "
                f"Top-level modules: {top}; see model.named_modules() for all names."
            )
        out.extend(f for f in found if f not in out)
    return out


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a module's output or input.

    Handles a bare tensor, tuples/lists (e.g. ``(hidden_states, attention_weights)``),
    mappings and dataclass outputs such as transformers' ``ModelOutput`` (in field order).
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = (getattr(value, f.name) for f in dataclasses.fields(value))
    elif isinstance(value, tuple | list):
        items = value
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


class _Recorder:
    """Holds the hook callbacks and the captured tensors of one ``capture`` block."""

    def __init__(self, layers: list[str], clone: bool, stop_after_last: bool) -> None:
        self.layers = layers
        self.clone = clone
        self.stop_after_last = stop_after_last
        self.acts: dict[str, torch.Tensor] = {}
        self.seen: set[str] = set()

    def record(self, name: str, value: Any) -> None:
        tensor = first_tensor(value)
        if tensor is None:
            raise TypeError(
                f"capture: module {name!r} produced no tensor (got {type(value).__name__}); "
                f"pick a module whose input/output holds a tensor."
            )
        tensor = tensor.detach()
        self.acts[name] = tensor.clone() if self.clone else tensor
        self.seen.add(name)
        if self.stop_after_last and len(self.seen) == len(self.layers):
            raise StopForward

    def output_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.record(name, output)

        return hook

    def input_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self.record(name, (args, kwargs))

        return hook


@contextlib.contextmanager
def capture(
    model: nn.Module,
    layers: str | Sequence[str],
    *,
    which: Literal["output", "input"] = "output",
    stop_after_last: bool = False,
    inference_mode: bool = True,
    clone: bool = False,
    eval_mode: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the outputs (or inputs) of the selected modules during forward passes.

    Args:
        model: any ``nn.Module``.
        layers: module names or glob patterns (``"encoder.layer.*"``; ``*`` and ``?`` stay
            within one dotted component, ``**`` crosses dots); see :func:`resolve_layers`.
        which: ``"output"`` keeps each module's output, ``"input"`` its first tensor argument.
        stop_after_last: end the forward pass (by raising :class:`StopForward` from the hook
            of the last module to run, caught here) as soon as every selected module ran.
            Code after the model call inside the ``with`` block is then skipped.
        inference_mode: run the block under ``torch.inference_mode()``.
        clone: copy each captured tensor (needed only if later modules modify it in place).
        eval_mode: run the block with the model in eval mode (dropout off, batch-norm running
            statistics), restoring every module's train/eval flag afterwards. ``False`` keeps
            the modes as they are (e.g. to capture inside a training loop).

    Yields:
        a dict, filled during the forward pass: module name -> detached tensor (the first
        tensor of tuple / dataclass outputs). When a module runs several times inside the
        block, the dict holds its latest call. Keys appear in execution order.

    Every hook is removed, and every module's train/eval flag restored, when the block exits,
    normally or by an exception.
    """
    if which not in ("output", "input"):
        raise ValueError(
            f"The 'which' parameter of capture must be one of {{'output', 'input'}}. "
            f"Got {which!r} instead."
        )
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    rec = _Recorder(names, clone, stop_after_last)
    handles = []
    modes = [(m, m.training) for m in model.modules()] if eval_mode else []
    try:
        if eval_mode:
            model.eval()
        for name in names:
            mod = modules[name]
            if which == "output":
                handles.append(mod.register_forward_hook(rec.output_hook(name)))
            else:
                handles.append(
                    mod.register_forward_pre_hook(rec.input_hook(name), with_kwargs=True)
                )
        grad_ctx = torch.inference_mode() if inference_mode else contextlib.nullcontext()
        with grad_ctx:
            try:
                yield rec.acts
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
