"""``LandscapeConfig``: everything ``repscope landscape`` needs; also its command-line options.

Like ``AnalyzeConfig`` it loads from a YAML/TOML/JSON file (``--config``) with options given on
the command line overriding the file, and is saved beside the results (``config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["LandscapeConfig", "TrainConfig"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class LandscapeConfig:
    """Tasks, the d-sweep and its execution."""

    task: tuple[str, ...] = field(default=("digits-mlp", "digits-cnn"), metadata=_help(
        "Ready task(s) to sweep (repeatable): digits-mlp, digits-cnn, fashion-mlp, fashion-cnn, "
        "chatterbot-minilm, chatterbot-minilm-random, lstsq."))
    task_params: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "Parameters of every task, as JSON (e.g. '{\"n_train\": 5000}' for Fashion-MNIST, "
        "'{\"rank\": 7}' for lstsq, '{\"per_class\": 60}' for the sentence tasks)."))
    out: Path = field(default=Path("repscope-landscape"), metadata=_help(
        "Output directory: results.duckdb, plan.json, config.json, landscape.html, "
        "landscape.png."))
    projection: Literal["fastfood", "sparse", "dense"] = field(default="fastfood", metadata=_help(
        "Random projection P: fastfood (structured, O(D log d)), sparse (density 1/sqrt(D_t) "
        "per tensor) or dense (Gaussian; small models)."))
    said: bool | None = field(default=None, metadata=_help(
        "Structure-aware map: one trained scale per parameter tensor (default: the task's "
        "choice; on for the MiniLM tasks)."))
    fractions: tuple[float, ...] = field(default=(0.9,), metadata=_help(
        "Fractions of full-training performance to find d_int for (repeatable; 0.9 = "
        "d_int90)."))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_help(
        "Seeds (repeatable): theta_0, projection and batch order of each repeated run."))
    d_min: int | None = field(default=None, metadata=_help(
        "First grid dimension (default 1, or the SAID scales + 1)."))
    d_max: int | None = field(default=None, metadata=_help(
        "Largest dimension tried (default D); d_int above it is reported as '> d_max'."))
    growth: float = field(default=2.0, metadata=_help("Ratio of the geometric grid."))
    precision: float = field(default=0.05, metadata=_help(
        "Bisection stops when the bracket is at most max(1, precision * d) wide (0: exact)."))
    tolerance: float = field(default=1e-6, metadata=_help(
        "Slack on the threshold, relative to the baseline (or to the loss gap)."))
    overshoot: int = field(default=1, metadata=_help(
        "Grid points run above the first passing one (to show the plateau)."))
    block: int | None = field(default=None, metadata=_help(
        "Fastfood block size (a power of 2 >= d; default the smallest)."))
    epochs: int | None = field(default=None, metadata=_help("Override the tasks' epochs."))
    lr: float | None = field(default=None, metadata=_help(
        "Override the tasks' full-training learning rate."))
    subspace_lr: float | None = field(default=None, metadata=_help(
        "Override the tasks' subspace learning rate."))
    batch_size: int | None = field(default=None, metadata=_help(
        "Override the tasks' batch size."))
    device: str = field(default="cpu", metadata=_help("Torch device of the training runs."))
    executor: Literal["local", "process", "ray"] = field(default="local", metadata=_help(
        "Where runs execute: local (in process), process (a pool) or ray."))
    workers: int | None = field(default=None, metadata=_help(
        "Parallel runs (process/ray; default: the CPU count)."))
    address: str | None = field(default=None, metadata=_help(
        "Ray cluster address (ray executor only)."))
    retries: int = field(default=1, metadata=_help("Retries of a failing run."))
    task_timeout: float | None = field(default=None, metadata=_help(
        "Seconds a run may take (process/ray executors)."))
    report: bool = field(default=True, metadata=_help(
        "Write landscape.html and landscape.png after the sweeps."))

    def training_overrides(self) -> dict[str, Any]:
        """The training settings given here (to pass as the tasks' ``training`` parameter)."""
        keys = ("epochs", "lr", "subspace_lr", "batch_size")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass(frozen=True)
class TrainConfig:
    """How every run of a task trains (the same for every ``d`` and seed)."""

    optimizer: Literal["adam", "sgd", "lbfgs"] = field(
        default="adam", metadata={"help": "Optimiser: adam, sgd (with momentum) or lbfgs "
                                          "(full batch, strong Wolfe line search)."})
    lr: float = field(default=1e-3, metadata={"help": "Learning rate of full training."})
    subspace_lr: float | None = field(
        default=None, metadata={"help": "Learning rate in a subspace (None: lr). Steps in z move "
                                        "theta along unit directions, so it is usually larger."})
    epochs: int = field(default=10, metadata={"help": "Passes over the training split."})
    batch_size: int = field(default=64, metadata={"help": "Mini-batch size (0: full batch)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay of the optimiser "
                                                                "(on z in a subspace)."})
    momentum: float = field(default=0.9, metadata={"help": "Momentum (sgd only)."})
    max_iter: int = field(default=100, metadata={"help": "Iterations per lbfgs step."})
    eval_batch_size: int = field(default=512, metadata={"help": "Batch size for evaluation."})

    def lr_for(self, kind: str) -> float:
        return self.lr if kind == "full" or self.subspace_lr is None else self.subspace_lr
