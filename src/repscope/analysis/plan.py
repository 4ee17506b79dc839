"""The analysis plan: a typed config, validated and expanded into tasks before any work starts.

:class:`AnalyzeConfig` is what a user writes (CLI options of ``repscope analyze``, or a
YAML/TOML file read with ``load_config(AnalyzeConfig, "plan.yaml")``). :func:`check_config`
validates everything that can be checked without data (measure names, parameters, executor
options); :func:`make_plan` resolves it against an :class:`~repscope.capture.ActivationStore`
into a frozen :class:`Plan` of :class:`Task` objects, saved as ``plan.json`` beside the
results.

Measures, layers and rows are selected by :mod:`repscope.analysis.selection` (re-exported
here). Single measures run on every layer, pair measures on every pair of layers (``pairs``).

Every result gets a deterministic key, a hash of the store's content id, the layer(s), the
measure, its resolved parameters and the selected rows, so a rerun of the same plan finds the
results that are already in the database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from repscope import registry
from repscope._io import atomic_write_text
from repscope._version import __version__
from repscope.analysis.executors import executor_option_problem
from repscope.analysis.selection import (
    MeasureRequest,
    PlanError,
    parse_measure,
    resolve_layers,
    resolve_measures,
    select_rows,
)
from repscope.capture.remote import is_url
from repscope.config import config_to_dict
from repscope.results import to_jsonable

__all__ = [
    "AnalyzeConfig",
    "Item",
    "MeasureRequest",
    "Plan",
    "PlanError",
    "RowSpec",
    "Task",
    "check_config",
    "make_plan",
    "parse_measure",
    "resolve_layers",
    "resolve_measures",
    "select_rows",
]


def _help(text: str, **meta: Any) -> dict[str, Any]:
    return {"help": text, **meta}


@dataclass(frozen=True)
class AnalyzeConfig:
    """Everything ``repscope analyze`` needs: source, layers, rows, measures, execution."""

    model: str = field(default="minilm", metadata=_help(
        "Model to capture: 'minilm' or 'smollm2' (bundled), a local Hugging Face directory, a "
        ".gguf file or a hub id in the local cache (never downloaded). Ignored when --store "
        "is given."))
    corpus: str = field(default="pydoc", metadata=_help(
        "Corpus to capture: 'pydoc' (bundled) or a .txt/.jsonl path. Ignored with --store."))
    store: Path | None = field(default=None, metadata=_help(
        "Analyse this existing ActivationStore instead of capturing (default: capture into "
        "OUT/store)."))
    checkpoints: str | None = field(default=None, metadata=_help(
        "Sweep the checkpoints of MODEL: a directory (of state-dict files, of Hugging Face "
        "checkpoint directories, or a local HF cache entry) or a comma-separated list of "
        "files/directories. Each is captured into OUT/stores/<name> and analysed with the same "
        "plan; results carry the checkpoint name and step."))
    layers: tuple[str, ...] = field(default=(), metadata=_help(
        "Layer names or globs, e.g. 'encoder.layer.*' (default: every layer)."))
    pooling: Literal["none", "mean", "first", "last"] = field(default="none", metadata=_help(
        "Capture pooling: 'none' keeps one row per token."))
    max_docs: int | None = field(default=40, metadata=_help(
        "Documents to capture from the corpus (None: all)."))
    max_length: int = field(default=128, metadata=_help("Tokens per document at capture."))
    long_documents: Literal["truncate", "window"] = field(default="truncate", metadata=_help(
        "Capture: documents longer than max_length are truncated (recorded) or split into "
        "overlapping windows."))
    overlap: int | None = field(default=None, metadata=_help(
        "Capture: tokens shared by consecutive windows (default: a quarter of max_length)."))
    exclude_positions: tuple[int, ...] = field(default=(), metadata=_help(
        "Capture: sequence positions left out of the rows and the pooling, e.g. 0 (BOS / "
        "first token); repeatable."))
    exclude_special_tokens: bool = field(default=False, metadata=_help(
        "Capture: leave special tokens ([CLS], [SEP], <s>, ...) out of the rows and pooling."))
    max_rows: int | None = field(default=2000, metadata=_help(
        "Rows per layer to analyse, sampled with SEED, the same rows for every layer "
        "(None, or 'all' on the command line: every row)."))
    stream_rows: int = field(default=262144, metadata=_help(
        "With all rows selected, streamable measures of a store with more rows than this run "
        "as map (one task per range of about this many rows, whole store shards) + merge."))
    measures: tuple[str, ...] = field(default=(), metadata=_help(
        "Measures as NAME or NAME:param=value,...; 'default' = the default panel, 'all' = "
        "every registered measure (default: the default panel). Pair measures compare layers."))
    pairs: Literal["all", "adjacent", "none"] = field(default="all", metadata=_help(
        "Layer pairs for pair (similarity) measures."))
    permutations: int = field(default=0, metadata=_help(
        "Permutation-test p-values for pair measures between distinct layers: shuffled "
        "rows per pair (0: off; each costs one measure call)."))
    labels: str | None = field(default=None, metadata=_help(
        "Store metadata column used as class labels for label-aware measures, e.g. 'doc_id'."))
    seed: int = field(default=0, metadata=_help(
        "Seed for row sampling and for every measure's 'seed' parameter."))
    device: str = field(default="cpu", metadata=_help(
        "Device for capture and for measures that take a 'device' parameter."))
    out: Path = field(default=Path("repscope-out"), metadata=_help(
        "Output directory: store/, results.duckdb, plan.json, report.html."))
    executor: Literal["local", "process", "ray"] = field(default="local", metadata=_help(
        "Where tasks run: in this process, a process pool, or Ray."))
    workers: int | None = field(default=None, metadata=_help(
        "Worker count for the process/ray executors."))
    address: str | None = field(default=None, metadata=_help(
        "Ray cluster address ('auto', 'ray://host:10001'); None starts a local Ray."))
    ray_bind: Literal["loopback", "network"] = field(default="loopback", metadata=_help(
        "Where a Ray that we start listens: loopback (this machine only) or network "
        "(Ray's default, reachable from other machines)."))
    retries: int = field(default=1, metadata=_help("Retries of a failing task."))
    task_timeout: float | None = field(default=None, metadata=_help(
        "Seconds one task attempt may run before it is stopped and counted as failed "
        "(process/ray executors)."))
    report: bool = field(default=True, metadata=_help("Write report.html after the run."))
    dry_run: bool = field(default=False, metadata=_help(
        "Print the plan and its estimated time and peak memory (measures timed on a few rows "
        "of the store on this machine), then stop: nothing is computed or written but plan.json. "
        "Needs a store: --store, or OUT/store from an earlier run."))


@dataclass(frozen=True)
class RowSpec:
    """The rows analysed: ``max_rows`` of ``n_total`` sampled with ``seed`` (same for all layers)."""

    n_total: int
    max_rows: int | None
    seed: int

    def indices(self) -> np.ndarray:
        """The sorted row indices (recomputed identically wherever a task runs)."""
        return select_rows(self.n_total, self.max_rows, self.seed)

    @property
    def n(self) -> int:
        return self.n_total if self.max_rows is None else min(self.max_rows, self.n_total)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.indices().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One result to compute inside a task: a measure on a layer (or a pair) and its key."""

    key: str
    "Deterministic database key (hash of source, layers, measure, parameters, rows)."
    measure: str
    variant: str
    params: Mapping[str, Any]
    layer: str
    layer_b: str | None = None
    "Second layer of a pair measure."


@dataclass(frozen=True)
class Task:
    """A unit of work, which reads its own rows from the store (tasks carry no arrays).

    ``kind='layer'``: every single measure on one layer, sharing one kNN table.
    ``kind='matrix'``: one pair measure on layer pairs, each layer prepared once
    (:func:`repscope.similarity_matrix.similarity_matrix`).
    ``kind='stream'``: the streamable measures of one layer (or every streamable pair measure
    on its layer pairs, sharing one moments state per pair) over all rows, run as one map task
    per row range in ``shards`` and an ordered merge of their accumulators
    (:mod:`repscope.analysis.stream`).
    """

    key: str
    "Hash of the items' keys; unique within a plan."
    store: str
    kind: Literal["layer", "matrix", "stream"]
    layers: tuple[str, ...]
    "Layers the task reads."
    rows: RowSpec
    items: tuple[Item, ...]
    labels: str | None = None
    "Metadata column holding class labels, for label-aware measures."
    permutations: int = 0
    "Permutation-test replicates per layer pair (matrix tasks; 0: none)."
    seed: int = 0
    "Seed of the permutations."
    shards: tuple[tuple[int, int], ...] = ()
    "Row ranges [start, stop) of the map tasks (stream tasks)."

    @property
    def label(self) -> str:
        if self.kind == "layer":
            return self.layers[0]
        if self.kind == "stream" and self.items and self.items[0].layer_b is not None:
            names = ", ".join(dict.fromkeys(it.measure for it in self.items))
            n_pairs = len({(it.layer, it.layer_b) for it in self.items})
            return f"{names} ({n_pairs} layer pairs, streamed, {len(self.shards)} shards)"
        if self.kind == "stream":
            return f"{self.layers[0]} (streamed, {len(self.shards)} shards)"
        return f"{self.items[0].measure} ({len(self.items)} layer pairs)"


@dataclass(frozen=True)
class Plan:
    """A resolved config: the store, layers, rows, measures and the tasks they expand into."""

    config: Mapping[str, Any]
    store: str
    source: Mapping[str, Any]
    "Model, data, hashes and the store's content id, from its manifest."
    layers: tuple[str, ...]
    rows: RowSpec
    measures: tuple[MeasureRequest, ...]
    skipped: tuple[tuple[str, str], ...]
    "(measure, reason) for registered measures not run, shown in the report."
    tasks: tuple[Task, ...] = field(repr=False)

    def items(self) -> list[tuple[Task, Item]]:
        return [(t, it) for t in self.tasks for it in t.items]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (tasks listed by layer and measure, not expanded)."""
        return {
            "repscope_version": __version__,
            "config": dict(self.config),
            "store": self.store,
            "source": dict(self.source),
            "layers": list(self.layers),
            "rows": {**asdict(self.rows), "n": self.rows.n, "digest": self.rows.digest},
            "measures": [
                {"name": m.name, "variant": m.variant, "kind": m.kind, "family": m.family,
                 "params": _jsonable(m.params)} for m in self.measures
            ],
            "skipped": [{"measure": m, "reason": r} for m, r in self.skipped],
            "n_tasks": len(self.tasks),
            "streamed": sorted({it.measure for t in self.tasks if t.kind == "stream"
                                for it in t.items}),
            "n_map_tasks": sum(len(t.shards) for t in self.tasks if t.kind == "stream"),
            "n_results": sum(len(t.items) for t in self.tasks),
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, default=str))


# -- checks and expansion ----------------------------------------------------------------------


def check_config(cfg: AnalyzeConfig) -> tuple[list[MeasureRequest], list[tuple[str, str]]]:
    """Validate what needs no data; return the resolved measures. Raises :class:`PlanError`."""
    if cfg.store is not None and not is_url(cfg.store) and not Path(cfg.store).exists():
        raise PlanError(f"The store {str(cfg.store)!r} does not exist.")
    if cfg.checkpoints is not None and cfg.store is not None:
        raise PlanError("The 'checkpoints' option captures every checkpoint into OUT/stores; it "
                        "cannot be combined with 'store'. Drop one of them.")
    if cfg.checkpoints is not None and not str(cfg.checkpoints).strip():
        raise PlanError("The 'checkpoints' option must name a directory or a comma-separated "
                        "list of checkpoint files/directories. Got an empty string.")
    if not isinstance(cfg.stream_rows, int) or cfg.stream_rows < 1:
        raise PlanError(f"The 'stream_rows' option must be an int >= 1. Got {cfg.stream_rows!r}.")
    for name, low in (("max_rows", 10), ("max_docs", 1), ("workers", 1)):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < low):
            raise PlanError(f"The '{name}' option must be an int >= {low} or None. Got {value!r}.")
    if cfg.max_length < 2:
        raise PlanError(f"The 'max_length' option must be an int >= 2. Got {cfg.max_length!r}.")
    if cfg.ray_bind not in ("loopback", "network"):
        raise PlanError(f"The 'ray_bind' option must be 'loopback' or 'network'. "
                        f"Got {cfg.ray_bind!r}.")
    if cfg.ray_bind != "loopback" and cfg.executor != "ray":
        raise PlanError(f"The 'ray_bind' option needs executor 'ray': it says where a Ray that "
                        f"repscope starts listens. Got ray_bind={cfg.ray_bind!r} with executor "
                        f"{cfg.executor!r}.")
    problem = executor_option_problem(cfg.executor, workers=cfg.workers, address=cfg.address,
                                      timeout=cfg.task_timeout)
    if problem is not None:
        raise PlanError(problem.config_message("task_timeout" if problem.name == "timeout"
                                               else problem.name))
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise PlanError(f"The 'seed' option must be an int >= 0. Got {cfg.seed!r}.")
    if cfg.permutations < 0:
        raise PlanError(f"The 'permutations' option must be an int >= 0. Got {cfg.permutations!r}.")
    if cfg.retries < 0:
        raise PlanError(f"The 'retries' option must be an int >= 0. Got {cfg.retries!r}.")
    if cfg.task_timeout is not None and not cfg.task_timeout > 0:
        raise PlanError(f"The 'task_timeout' option must be a number of seconds > 0. "
                        f"Got {cfg.task_timeout!r}.")
    dry_n = min(cfg.max_rows or 256, 256)
    return resolve_measures(cfg.measures, labels=cfg.labels, pairs=cfg.pairs, seed=cfg.seed,
                            device=cfg.device, dry_run_rows=dry_n)


def source_identity(manifest: Mapping[str, Any], n_rows: int) -> str:
    """A content id for a store: a hash of its identity (or manifest without timestamps)."""
    if isinstance(manifest.get("identity"), Mapping):
        stable: Any = manifest["identity"]
    else:
        volatile = ("time", "created", "completed", "updated", "path", "host", "elapsed",
                    "status", "shards")
        stable = {k: v for k, v in manifest.items() if not any(w in k.lower() for w in volatile)}
    text = json.dumps({"manifest": stable, "n_rows": n_rows}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_source(store: Any, path: str) -> dict[str, Any]:
    """Model, data and hashes from a store's manifest (missing fields are None)."""
    m = dict(store.manifest)

    def part(name: str, *keys: str) -> Any:
        value = m.get(name)
        if isinstance(value, Mapping):
            return next((value[k] for k in keys if value.get(k) not in (None, "")), None)
        return value if keys[0] == "id" else None

    return {
        "store": path,
        "source_id": source_identity(m, int(store.n_rows)),
        "model": part("model", "id", "name"),
        "model_hash": part("model", "weights_sha256", "sha256", "hash"),
        "data": part("data", "id", "name"),
        "data_hash": part("data", "sha256", "hash"),
        "checkpoint": m.get("checkpoint") or part("model", "checkpoint", "revision"),
        "pooling": m.get("pooling"),
        "n_rows": int(store.n_rows),
        "dims": {layer: int(store.dim(layer)) for layer in store.layers},
    }


def _key(*parts: Any) -> str:
    text = json.dumps(_jsonable(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _jsonable(obj: Any) -> Any:
    return to_jsonable(obj)


def _layer_pairs(layers: Sequence[str], pairs: str, symmetric: bool) -> list[tuple[str, str]]:
    if pairs == "adjacent":
        return list(zip(layers[:-1], layers[1:], strict=True))
    n = len(layers)
    if symmetric:
        return [(layers[i], layers[j]) for i in range(n) for j in range(i, n)]
    return [(layers[i], layers[j]) for i in range(n) for j in range(n)]


def make_plan(cfg: AnalyzeConfig, store: Any, store_path: str | Path,
              measures: Sequence[MeasureRequest], skipped: Sequence[tuple[str, str]], *,
              checkpoint: Any = None) -> Plan:
    """Expand ``cfg`` over an open store into tasks (one per layer, one per layer pair).

    ``checkpoint`` (a :class:`~repscope.capture.checkpoints.Checkpoint`) marks the store as
    one checkpoint of a sweep: its name and step go into ``source`` and into every result key.
    When every row is selected and the store has more than ``cfg.stream_rows`` rows, the
    streamable single measures of each layer form a ``'stream'`` task (map over row ranges +
    merge) instead of joining the layer task, which loads the layer's rows at once; the layer
    pairs of every streamable pair measure (without permutations) form one more ``'stream'``
    task instead of ``'matrix'`` tasks, which load every layer at once, so that measures on
    the same pair share one pass and one moments state.
    """
    layers = resolve_layers(cfg.layers, list(store.layers))
    if cfg.labels is not None:
        columns = list(store.metadata().columns)
        if cfg.labels not in columns:
            raise PlanError(f"Unknown labels column {cfg.labels!r}; the store has {columns}.")
    source = describe_source(store, str(store_path))
    rows = RowSpec(int(store.n_rows), cfg.max_rows, cfg.seed)
    base: tuple[Any, ...] = (source["source_id"], rows.digest, cfg.labels)
    if checkpoint is not None:
        source.update(checkpoint=checkpoint.name, checkpoint_step=checkpoint.step)
        base += (checkpoint.name,)
    tasks: list[Task] = []
    singles = [m for m in measures if m.kind == "single"]
    shards = stream_shards(store, cfg.stream_rows) if rows.n == rows.n_total else []
    streamed = {m.name for m in singles if len(shards) > 1 and _streamable(m.name)}
    for layer in layers:
        items = tuple(Item(_key(base, layer, None, m.name, m.params), m.name, m.variant,
                           m.params, layer) for m in singles)
        batch = tuple(it for it in items if it.measure not in streamed)
        stream = tuple(it for it in items if it.measure in streamed)
        if batch:
            tasks.append(_task(store_path, "layer", (layer,), rows, batch, cfg.labels))
        if stream:
            tasks.append(dataclasses.replace(
                _task(store_path, "stream", (layer,), rows, stream, None), shards=tuple(shards)))
    pair_stream: list[Item] = []  # one stream task: the measures share each pair's moments
    for m in (m for m in measures if m.kind == "pair"):
        pairs = _layer_pairs(layers, cfg.pairs, registry.get(m.name).symmetric)
        perm = (cfg.permutations,) if cfg.permutations else ()  # p-values change the result
        items = tuple(Item(_key(base, a, b, m.name, m.params, *perm), m.name, m.variant,
                           m.params, a, b) for a, b in pairs)
        if items and len(shards) > 1 and not cfg.permutations and _streamable_pair(m.name):
            pair_stream.extend(items)  # every row, map over ranges + merge per pair
        elif items:
            tasks.append(dataclasses.replace(
                _task(store_path, "matrix", tuple(layers), rows, items, cfg.labels),
                permutations=cfg.permutations, seed=cfg.seed))
    if pair_stream:
        tasks.append(dataclasses.replace(
            _task(store_path, "stream", tuple(layers), rows, tuple(pair_stream), None),
            shards=tuple(shards)))
    return Plan(config_to_dict(cfg), str(store_path), source, tuple(layers), rows,
                tuple(measures), tuple(skipped), tuple(tasks))


def _streamable(name: str) -> bool:
    """A single measure with an accumulator (init/update/merge/compute) and no labels."""
    spec = registry.get(name)
    return spec.accumulator is not None and spec.kind == "single" and not spec.needs_labels


def _streamable_pair(name: str) -> bool:
    """A pair measure with an accumulator ``init(d_x, d_y)`` / ``update(X, Y)`` (e.g.
    ``cka_linear``); streamed over all rows unless permutation p-values are asked for."""
    spec = registry.get(name)
    return spec.accumulator is not None and spec.kind == "pair" and not spec.needs_labels


def stream_shards(store: Any, target_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` covering the store, each of whole store shards and about
    ``target_rows`` rows (a range closes once it holds ``target_rows`` rows or more)."""
    ranges: list[tuple[int, int]] = []
    start = stop = 0
    for shard in getattr(store, "shards", None) or [_Whole(int(store.n_rows))]:
        stop = int(shard.start) + int(shard.rows)
        if stop - start >= target_rows:
            ranges.append((start, stop))
            start = stop
    if stop > start:
        ranges.append((start, stop))
    return ranges


@dataclass(frozen=True)
class _Whole:
    """A store without shard information, seen as one shard."""

    rows: int
    start: int = 0


def _task(store: str | Path, kind: Literal["layer", "matrix", "stream"], layers: tuple[str, ...],
          rows: RowSpec, items: tuple[Item, ...], labels: str | None) -> Task:
    key = _key([it.key for it in items])
    return Task(key, str(store), kind, layers, rows, items, labels)
