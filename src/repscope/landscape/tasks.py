"""Landscape tasks: a model factory, data, a loss, a metric and how to train.

:class:`SupervisedTask` is the Python API for your own model: give it ``model(seed) -> nn.Module``
(the initialisation theta_0 at that seed), the training tensors (inputs..., targets), optionally
the evaluation tensors, the loss and the metric. The ready tasks (:data:`READY_TASKS`, built by
:func:`ready_task` from a name and keyword parameters) run on offline data:

===========================  =====================================================================
``digits-mlp``               MLP 64-100-100-10 on scikit-learn's digits (1,348 train / 449 test)
``digits-cnn``               LeNet (3x3 convolutions, 6/16 channels, 120-84-10) on the same split
``fashion-mlp``              MLP 784-200-200-10 (Li et al.'s MNIST FC) on a Fashion-MNIST subsample
``fashion-cnn``              LeNet-5 (Li et al.'s MNIST LeNet, 5x5 convolutions) on the same subsample
``chatterbot-minilm``        SAID fine-tuning of the bundled MiniLM (all-MiniLM-L6-v2) plus a linear
                             head, on topic classification of chatterbot-corpus sentences
``chatterbot-minilm-random`` the same architecture randomly initialised (BERT's N(0, 0.02) init)
``lstsq``                    linear least squares whose design matrix has rank ``rank`` (known
                             answer: d_int100 = rank)
===========================  =====================================================================

In the sentence tasks the classification head (384 x n_classes, initialised N(0, 0.02) from the
run's seed) is part of theta and trained in the subspace like every other parameter; the unused
BERT pooler is excluded (it has no effect on the loss).

A ready task travels to workers as its :class:`TaskSpec` (name and parameters) and is rebuilt
there (:func:`resolve_task`, memoised per process so a worker loads its data once).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from repscope.landscape.config import TrainConfig
from repscope.landscape.models import MLP, LeNet, SentenceClassifier, seeded

__all__ = [
    "READY_TASKS",
    "SupervisedTask",
    "TaskSpec",
    "ready_task",
    "resolve_task",
    "task_fingerprint",
]

LOSSES = ("cross_entropy", "mse")
METRICS = ("accuracy", "loss")


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out.reshape(target.shape), target)


@dataclass(frozen=True, eq=False)
class SupervisedTask:
    """A model factory, data and objective for a landscape sweep (see the module docstring).

    Example::

        task = SupervisedTask("my-mlp", model=make_mlp, train=(X, y), test=(X_val, y_val),
                              training=TrainConfig(lr=1e-3, subspace_lr=1e-2, epochs=20))
        result = intrinsic_dimension_sweep(task, seeds=(0, 1, 2))

    For the process and Ray executors ``model`` (and a callable ``loss``) must be picklable
    (module-level functions or ``functools.partial`` of them); the task, data included, is sent
    with every run.
    """

    name: str
    "Name (results are keyed by it together with a fingerprint of data and theta_0)."
    model: Callable[[int], nn.Module]
    "``seed -> module`` at its initialisation theta_0 (deterministic in the seed)."
    train: tuple[torch.Tensor, ...]
    "Training tensors: the model's inputs, then the targets (same first dimension)."
    test: tuple[torch.Tensor, ...] | None = None
    "Evaluation tensors (same layout); None evaluates on the training split."
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy"
    "'cross_entropy', 'mse' or ``(outputs, targets) -> scalar``."
    metric: str = "accuracy"
    "'accuracy' (argmax of the outputs; higher is better) or 'loss' (lower is better)."
    training: TrainConfig = field(default_factory=TrainConfig)
    "Optimiser, learning rates, epochs and batch size, shared by every run."
    said: bool = False
    "Whether sweeps use the structure-aware (SAID) map by default."
    include: tuple[str, ...] = ()
    "Parameter-name globs forming theta (all parameters when empty)."
    exclude: tuple[str, ...] = ()
    "Parameter-name globs left out of theta (they keep their initial values)."
    description: str = ""
    "One line for reports."

    def __post_init__(self) -> None:
        from repscope._validate import check_choice, param_error

        fn = "SupervisedTask"
        if not callable(self.model):
            raise param_error(fn, "model", "a callable seed -> nn.Module", self.model)
        for name in ("train", "test"):
            data = getattr(self, name)
            if data is None and name == "test":
                continue
            if (not isinstance(data, tuple | list) or len(data) < 2
                    or not all(isinstance(t, torch.Tensor) for t in data)):
                raise param_error(fn, name, "a tuple of at least two tensors (inputs..., "
                                  "targets)", type(data).__name__)
            if len({len(t) for t in data}) != 1:
                raise param_error(fn, name, "tensors with the same first dimension",
                                  [tuple(t.shape) for t in data])
            object.__setattr__(self, name, tuple(data))
        if not callable(self.loss):
            check_choice(self.loss, "loss", fn, LOSSES)
        check_choice(self.metric, "metric", fn, METRICS)

    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if callable(self.loss):
            return self.loss
        return torch.nn.functional.cross_entropy if self.loss == "cross_entropy" else _mse

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


@dataclass(frozen=True)
class TaskSpec:
    """A ready task by name and parameters: small, picklable, hashable."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, params: Mapping[str, Any] | None = None) -> TaskSpec:
        from repscope._validate import check_choice

        check_choice(name, "task", "ready_task", sorted(READY_TASKS))
        return cls(name, _frozen(dict(params or {})))


def _frozen(value: Any) -> Any:
    """Mappings as sorted ``(key, value)`` tuples and lists as tuples, recursively (hashable)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def task_fingerprint(task: SupervisedTask | TaskSpec) -> str:
    """A hex digest identifying a task's runs in the results database.

    A ready task: its name, parameters, code version, description (data sizes) and resolved
    training settings. Your own task: its name, objective,
    training settings, parameter selection, data bytes and theta_0 at seed 0, so changing any of
    them gives new keys instead of reusing old results.
    """
    h = hashlib.sha256()
    if isinstance(task, TaskSpec):
        built = resolve_task(task)  # the resolved defaults count too, not only what was given
        h.update(repr(("ready", task.name, task.params, READY_TASKS[task.name][2],
                       built.description, dataclasses.astuple(built.training), built.include,
                       built.exclude)).encode())
        return h.hexdigest()
    loss = task.loss if isinstance(task.loss, str) else getattr(task.loss, "__qualname__", "fn")
    h.update(repr(("own", task.name, loss, task.metric, task.include, task.exclude,
                   dataclasses.astuple(task.training))).encode())
    for t in task.train + (task.test or ()):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for name, p in task.model(0).state_dict().items():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- ready tasks -------------------------------------------------------------------------------


def _images_task(name: str, split: Any, model: Callable[[int], nn.Module], training: TrainConfig,
                 description: str) -> SupervisedTask:
    return SupervisedTask(
        name, model=model,
        train=(torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)),
        test=(torch.from_numpy(split.x_test), torch.from_numpy(split.y_test)),
        training=training, description=description)


def _build(factory: Callable[..., nn.Module], seed: int, *args: Any, **kw: Any) -> nn.Module:
    with seeded(seed):
        return factory(*args, **kw)


_DIGITS_TRAIN = TrainConfig(lr=1e-3, subspace_lr=0.1, epochs=40, batch_size=64)
_FASHION_TRAIN = TrainConfig(lr=1e-3, subspace_lr=0.1, epochs=20, batch_size=128)
_SENTENCE_TRAIN = TrainConfig(lr=5e-5, subspace_lr=0.3, epochs=8, batch_size=16,
                              eval_batch_size=64)
# a randomly initialised encoder needs a larger full-training rate (pilot: 3e-4 trains, 1e-3
# diverges, at 5e-5 it barely moves); the subspace rate is the pretrained task's
_RANDOM_SENTENCE_TRAIN = dataclasses.replace(_SENTENCE_TRAIN, lr=3e-4)
_LSTSQ_TRAIN = TrainConfig(optimizer="lbfgs", lr=1.0, epochs=1, batch_size=0, max_iter=100)


def _digits(model: str, training: TrainConfig | None = None) -> SupervisedTask:
    from repscope.landscape.data import load_digits_split

    split = load_digits_split()
    if model == "mlp":
        factory = functools.partial(_build, MLP, n_in=64, n_out=10, hidden=(100, 100))
        text = "MLP 64-100-100-10 on scikit-learn digits (1,348 train / 449 test)"
    else:
        factory = functools.partial(_build, LeNet, side=8, n_out=10, kernel=3, padding=1)
        text = "LeNet (3x3 conv 6/16, 120-84-10) on scikit-learn digits (1,348 / 449)"
    return _images_task(f"digits-{model}", split, factory, training or _DIGITS_TRAIN, text)


def _fashion(model: str, n_train: int = 5000, n_test: int = 2000,
             training: TrainConfig | None = None) -> SupervisedTask:
    from repscope.landscape.data import load_fashion_mnist

    split = load_fashion_mnist(n_train=n_train, n_test=n_test)
    if model == "mlp":
        factory = functools.partial(_build, MLP, n_in=784, n_out=10, hidden=(200, 200))
        text = f"MLP 784-200-200-10 on Fashion-MNIST ({n_train:,} train / {n_test:,} test)"
    else:
        factory = functools.partial(_build, LeNet, side=28, n_out=10)
        text = f"LeNet-5 on Fashion-MNIST ({n_train:,} train / {n_test:,} test)"
    return _images_task(f"fashion-{model}", split, factory, training or _FASHION_TRAIN, text)


def _sentence_model(seed: int, *, encoder_state: Mapping[str, torch.Tensor] | None,
                    config: Any, n_classes: int) -> nn.Module:
    from transformers import BertModel

    with seeded(seed):
        encoder = BertModel(config, add_pooling_layer=True)  # random N(0, 0.02) init
        model = SentenceClassifier(encoder, n_classes)
        nn.init.normal_(model.head.weight, std=0.02)
        nn.init.zeros_(model.head.bias)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    return model


def _sentences(pretrained: bool, per_class: int = 40, max_length: int = 24,
               categories: tuple[str, ...] | None = None,
               training: TrainConfig | None = None) -> SupervisedTask:
    from repscope.data.models import load_model
    from repscope.landscape.data import CHATTERBOT_CATEGORIES, chatterbot_sentences

    data = chatterbot_sentences(tuple(categories or CHATTERBOT_CATEGORIES), per_class=per_class)
    encoder, tokenizer, model_id, _ = load_model("minilm")

    def tokens(texts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    state = {k: v.clone() for k, v in encoder.state_dict().items()} if pretrained else None
    factory = functools.partial(_sentence_model, encoder_state=state, config=encoder.config,
                                n_classes=len(data.classes))
    kind = "pretrained" if pretrained else "randomly initialised"
    return SupervisedTask(
        "chatterbot-minilm" + ("" if pretrained else "-random"), model=factory,
        train=(*tokens(data.train), torch.from_numpy(data.y_train)),
        test=(*tokens(data.test), torch.from_numpy(data.y_test)),
        training=training or (_SENTENCE_TRAIN if pretrained else _RANDOM_SENTENCE_TRAIN),
        said=True, exclude=("encoder.pooler.*",),
        description=f"SAID fine-tuning of {kind} MiniLM ({model_id}) + linear head: topic of "
                    f"chatterbot-corpus sentences ({len(data.classes)} topics, "
                    f"{len(data.train)} train / {len(data.test)} test)")


def _lstsq(rank: int = 5, n: int = 120, p: int = 24, noise: float = 0.5, data_seed: int = 0,
           training: TrainConfig | None = None) -> SupervisedTask:
    from repscope.landscape.data import low_rank_regression

    X, y = low_rank_regression(n, p, rank, noise=noise, seed=data_seed)
    factory = functools.partial(_build, nn.Linear, in_features=p, out_features=1, bias=False,
                                dtype=torch.float64)
    return SupervisedTask(
        "lstsq", model=factory, train=(torch.from_numpy(X), torch.from_numpy(y)), loss="mse",
        metric="loss", training=training or _LSTSQ_TRAIN,
        description=f"least squares, {n} x {p} design matrix of rank {rank} (d_int100 = {rank})")


READY_TASKS: dict[str, tuple[Callable[..., SupervisedTask], dict[str, Any], int]] = {
    "digits-mlp": (functools.partial(_digits, "mlp"), {}, 1),
    "digits-cnn": (functools.partial(_digits, "cnn"), {}, 1),
    "fashion-mlp": (functools.partial(_fashion, "mlp"), {}, 1),
    "fashion-cnn": (functools.partial(_fashion, "cnn"), {}, 1),
    "chatterbot-minilm": (functools.partial(_sentences, True), {}, 1),
    "chatterbot-minilm-random": (functools.partial(_sentences, False), {}, 1),
    "lstsq": (_lstsq, {}, 1),
}
"name -> (builder, default parameters, code version); the version enters result keys."


def ready_task(name: str, **params: Any) -> SupervisedTask:
    """Build a ready task (see the module docstring) with optional parameters, e.g.
    ``ready_task("fashion-cnn", n_train=5000)`` or ``ready_task("lstsq", rank=7)``; a
    ``training`` mapping (or :class:`TrainConfig`) overrides the task's training settings."""
    spec = TaskSpec.of(name, params)
    return resolve_task(spec)


@functools.lru_cache(maxsize=4)
def resolve_task(spec: TaskSpec) -> SupervisedTask:
    """The task a :class:`TaskSpec` names (memoised: a worker builds each task once)."""
    from repscope._validate import param_error

    builder, defaults, _ = READY_TASKS[spec.name]
    params = {**defaults, **dict(spec.params)}
    training = params.pop("training", None)
    try:
        task = builder(**params)
    except TypeError as exc:
        raise param_error("ready_task", "params", f"keyword parameters of task {spec.name!r} "
                          f"({exc})", params) from None
    if training is not None:
        if not isinstance(training, TrainConfig):
            training = _train_config(task.training, dict(training))
        task = dataclasses.replace(task, training=training)
    return task


def _train_config(base: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    from repscope.config import build_config, config_to_dict

    values = {**config_to_dict(base), **{k: v for k, v in overrides.items() if v is not None}}
    return build_config(TrainConfig, values)


def n_params(task: SupervisedTask) -> tuple[int, int]:
    """``(D, number of parameter tensors)`` of the task's theta."""
    from repscope.landscape.subspace import select_parameters

    selected = select_parameters(task.model(0), task.include, task.exclude)
    return sum(p.numel() for _, p in selected), len(selected)

