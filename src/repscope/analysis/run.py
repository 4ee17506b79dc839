"""Run an analysis: capture (or open a store), plan, execute tasks, write the database.

:func:`run_analysis` does the measuring; :func:`repscope.pipeline.analyze` (what
``repscope analyze`` calls) runs it and then the report, which lives in a higher layer and is
handed in as ``write_report``. The stages:

1. :func:`~repscope.analysis.plan.check_config` validates measures and options (no work yet);
2. the store is opened, or captured into ``OUT/store`` (resumable);
3. :func:`~repscope.analysis.plan.make_plan` expands the config; ``plan.json`` is written;
4. results already in ``results.duckdb`` are skipped; the remaining tasks run on the chosen
   executor; the driver writes each task's rows as it completes (the single writer), so a
   killed run loses at most the tasks in flight;
5. ``report.html`` is generated from the database by ``write_report`` (when ``cfg.report``).

With ``checkpoints`` (a checkpoint sweep, :mod:`repscope.analysis.sweep`), stage 2 captures one
store per checkpoint and stage 3 plans the same tasks over each; all of them run as one sweep.
Streamable measures over all rows of a large store run as map + merge
(:mod:`repscope.analysis.stream`) on the same executor, after the other tasks.

:func:`run_task` is the top-level, picklable worker function: it reads its rows from the store
itself and evaluates every measure of the task, recording errors per measure.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from repscope._io import check_output_dir, remove_stale_temporaries
from repscope._progress import ProgressBar
from repscope._version import __version__
from repscope.analysis.db import ResultsDB
from repscope.analysis.executors import make_executor
from repscope.analysis.plan import (
    AnalyzeConfig,
    Item,
    MeasureRequest,
    Plan,
    Task,
    check_config,
    make_plan,
)
from repscope.analysis.provenance import provenance
from repscope.analysis.sweep import Source, checkpoint_sources, sweep_summary
from repscope.results import Estimate

__all__ = ["AnalysisRun", "TaskResult", "run_analysis", "run_task"]

log = logging.getLogger(__name__)
_BASE_FIELDS = {f.name for f in dataclasses.fields(Estimate)}


@dataclass(frozen=True)
class AnalysisRun:
    """What :func:`run_analysis` (and :func:`repscope.pipeline.analyze`) did and where."""

    run_id: str
    out: Path
    db_path: Path
    report_path: Path | None
    plan_path: Path
    plan: Plan = dataclasses.field(repr=False)
    n_results: int
    "Results in the plan."
    n_cached: int
    "Results already in the database, skipped."
    n_computed: int
    "Results computed by this run (status ok)."
    n_failed: int
    "Results that raised (recorded with their error)."
    seconds: float
    plans: tuple[Plan, ...] = dataclasses.field(default=(), repr=False)
    "One plan per checkpoint in a checkpoint sweep (``plan`` is the last); else ``(plan,)``."
    estimate: Any = dataclasses.field(default=None, repr=False)
    "The preflight :class:`~repscope.analysis.preflight.PlanEstimate` (None when not made)."
    findings: tuple[Mapping[str, Any], ...] = dataclasses.field(default=(), repr=False)
    "Data checks of this run, one per layer (and checkpoint): the ``findings`` table's rows."

    def to_pandas(self, *, status: str | None = "ok") -> Any:
        """This run's results as one tidy pandas DataFrame, a result per row.

        Parameters
        ----------
        status : {'ok', 'error'} or None, default 'ok'
            Keep the results with this status (None: all).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`repscope.analysis.db.TIDY_COLUMNS`: checkpoint, layer, layer_b,
            measure, variant, family, kind, value, stderr, ci_low, ci_high, n, p_value,
            calibrated, null_mean, n_perm, status, seconds, key; the results of every store and
            row selection this run planned (computed now or found in the database).
        """
        from repscope.analysis.db import load_results, tidy_results

        df = load_results(self.db_path, status=status)
        keys = {it.key for p in (self.plans or (self.plan,)) for _, it in p.items()}
        return tidy_results(df[df["key"].isin(keys)])

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per layer whose data check warns (massive activations, dominant coordinates)."""
        return tuple(f["message"] for f in self.findings if f.get("warn"))


# -- worker side -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TaskResult:
    """The rows one task produced (compared and hashed by identity, so any executor can key it)."""

    rows: list[dict[str, Any]]


def run_task(task: Task) -> TaskResult:
    """Evaluate every item of ``task`` on rows read from the store; one row dict per item.

    A measure that raises yields a row with ``status='error'`` and the traceback; the other
    measures of the task still run.
    """
    store = _store_class().open(task.store)
    idx = task.rows.indices()  # (n,)
    labels = None
    if task.labels is not None:
        labels = store.metadata(rows=idx)[task.labels].to_numpy()  # (n,)
    if task.kind == "matrix":
        return TaskResult(_run_matrix(store, task, idx))
    X = store.read(task.layers[0], rows=idx)  # (n, d)
    shared = _shared_neighbors(X, task.items)
    return TaskResult([_run_item(item, X, None, labels, shared) for item in task.items])


def _run_item(item: Item, X: np.ndarray, Y: np.ndarray | None, labels: np.ndarray | None,
              shared: Any) -> dict[str, Any]:
    from repscope import registry

    spec = registry.get(item.measure)
    kwargs = dict(item.params)
    if shared is not None and "neighbors" in spec.defaults:
        kwargs["neighbors"] = shared
    if spec.needs_labels:
        kwargs["labels"] = labels
    args = (X,) if Y is None else (X, Y)
    return _timed(item, lambda: spec.fn(*args, **kwargs), int(X.shape[0]))


def _timed(item: Item, compute: Callable[[], Any], n: int) -> dict[str, Any]:
    """Run ``compute()`` for ``item``; the row dict with its result or its error."""
    row: dict[str, Any] = {
        "key": item.key, "layer": item.layer, "layer_b": item.layer_b,
        "measure": item.measure, "variant": item.variant, "params": item.params,
        "started_at": _now(),
    }
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = compute()
        row.update(_estimate_columns(est, [str(w.message) for w in caught]))
        row["status"] = "ok"
    except Exception as exc:  # recorded in the database, the other measures go on
        log.warning("measure %s on %s failed: %s", item.measure, item.layer, exc)
        row.update(status="error", value=None, n=n,
                   error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
    row["seconds"] = time.perf_counter() - t0
    row["finished_at"] = _now()
    return row


def _run_matrix(store: Any, task: Task, idx: np.ndarray) -> list[dict[str, Any]]:
    """One pair measure over layer pairs; each layer prepared once when that pays off."""
    from repscope import registry

    names = [x for x in task.layers if any(x in (it.layer, it.layer_b) for it in task.items)]
    reps = {x: store.read(x, rows=idx) for x in names}  # name -> (n, d)
    first = task.items[0]
    spec = registry.get(first.measure)
    L = len(names)
    n_matrix = L * (L + 1) // 2 if spec.symmetric else L * L
    matrix = _matrix_estimates(reps, first, spec) if 2 * len(task.items) >= n_matrix else {}
    rows = []
    for it in task.items:
        est = matrix.get((it.layer, it.layer_b)) or matrix.get((it.layer_b, it.layer))
        if est is not None:
            row = _timed(it, lambda est=est: est, len(idx))
            row["seconds"] = matrix["__seconds__"] / max(len(matrix) - 1, 1)
        else:
            row = _run_item(it, reps[it.layer], reps[it.layer_b], None, None)
        if task.permutations and row["status"] == "ok" and it.layer != it.layer_b:
            _add_permutation_test(row, it, reps[it.layer], reps[it.layer_b], task)
        rows.append(row)
    return rows


def _add_permutation_test(row: dict[str, Any], item: Item, X: np.ndarray, Y: np.ndarray,
                          task: Task) -> None:
    """Add a permutation p-value (rows of Y shuffled) to the row's ``extra`` column."""
    from repscope.inference import permutation_test

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = permutation_test(item.measure, X, Y, n_perm=task.permutations, seed=task.seed,
                                   params=dict(item.params))
    except Exception as exc:  # the value stands; the test's failure is noted beside it
        row.setdefault("extra", {})["permutation_error"] = f"{type(exc).__name__}: {exc}"
        return
    row.setdefault("extra", {}).update(
        p_value=res.p_value, null_mean=res.null_mean, null_std=res.null_std,
        calibrated=res.calibrated, adjusted=res.adjusted, n_perm=task.permutations)
    row["seconds"] += time.perf_counter() - t0


def _matrix_estimates(reps: Mapping[str, np.ndarray], item: Item, spec: Any) -> dict[Any, Any]:
    """(a, b) -> Estimate from ``similarity_matrix``; empty if unavailable or it raises."""
    try:
        from repscope.measures.similarity import similarity_matrix
    except ImportError:
        return {}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = similarity_matrix(reps, item.measure, params=item.params, diagonal=True)
    except Exception as exc:  # fall back to pair-by-pair calls, which record their own errors
        log.warning("similarity_matrix(%s) failed (%s); computing pair by pair", spec.name, exc)
        return {}
    return {**sm.estimates, "__seconds__": time.perf_counter() - t0}


def _estimate_columns(est: Any, caught: list[str]) -> dict[str, Any]:
    ci = getattr(est, "ci", None) or (None, None)
    extra = {k: v for k, v in est.to_dict().items() if k not in _BASE_FIELDS | {"type"}}
    if caught:
        extra["warnings"] = sorted(set(caught))
    return {
        "value": _float(est.value), "stderr": _float(est.stderr),
        "ci_low": _float(ci[0]), "ci_high": _float(ci[1]), "n": int(est.n_samples),
        "params": {**est.params}, "diagnostics": dict(est.diagnostics),
        "result_type": type(est).__name__, "extra": extra,
    }


def _float(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _shared_neighbors(X: np.ndarray, items: Iterable[Item]) -> Any:
    """One kNN table for the measures of a layer that take ``neighbors``.

    The table uses the (metric, duplicates) setting most of them share and the largest ``k``
    among those; a measure whose setting differs sees an unfit table and computes its own.
    """
    from collections import Counter

    from repscope import registry

    users = [it.params for it in items if "neighbors" in registry.get(it.measure).defaults]
    if len(users) < 2:
        return None
    setting = Counter((p.get("metric", "euclidean"), p.get("duplicates", "drop"))
                      for p in users).most_common(1)[0][0]
    ks = [p.get("k", 2) for p in users
          if (p.get("metric", "euclidean"), p.get("duplicates", "drop")) == setting]
    ks = [k for k in ks if isinstance(k, int) and not isinstance(k, bool)]
    if not ks:
        return None
    try:
        from repscope.neighbors import knn

        return knn(X, min(max(ks), X.shape[0] - 1), metric=setting[0], duplicates=setting[1])
    except Exception as exc:  # measures then compute their own neighbours
        log.warning("shared kNN table not computed (%s); measures compute their own", exc)
        return None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- driver side -------------------------------------------------------------------------------


def _execute(cfg: AnalyzeConfig, tasks: list[Task]) -> Iterator[tuple[Task, list[dict]]]:
    """Run ``tasks`` on the configured executor, yielding ``(task, rows)`` as they complete.

    Stream tasks run after the others, each as map over its row ranges + ordered merge.
    """
    by_key = {t.key: t for t in tasks}
    batch = [t for t in tasks if t.kind != "stream"]
    ray_options = {"bind": cfg.ray_bind} if cfg.executor == "ray" else {}
    with make_executor(kind=cfg.executor, workers=cfg.workers, address=cfg.address,
                       **ray_options) as ex:
        # the driver shows its own per-stage progress bar, so the executor's stays off
        for outcome in ex.map(run_task, batch, key=lambda t: t.key, retries=cfg.retries,
                              progress=False, timeout=cfg.task_timeout):
            task = by_key[outcome.key]
            yield task, (outcome.result.rows if outcome.error is None
                         else _failed_rows(task, outcome.error))
        for task in (t for t in tasks if t.kind == "stream"):
            yield task, _run_stream(ex, task, cfg)


def _run_stream(ex: Any, task: Task, cfg: AnalyzeConfig) -> list[dict[str, Any]]:
    """One stream task: map its row ranges on ``ex``, merge, compute every item's estimate."""
    from repscope.analysis.stream import (
        compute_from_states,
        pair_estimate,
        stream_pair_states,
        stream_states,
    )

    pairs = task.items[0].layer_b is not None
    t0 = time.perf_counter()
    try:
        if pairs:
            states = stream_pair_states(
                ex, task.store, [(it.measure, it.layer, it.layer_b, it.params) for it in task.items],
                list(task.shards), retries=cfg.retries, timeout=cfg.task_timeout)
        else:
            states = stream_states(ex, task.store, task.layers[0], list(task.shards),
                                   tuple(sorted({it.measure for it in task.items})),
                                   device=None if cfg.device == "cpu" else cfg.device,
                                   retries=cfg.retries, timeout=cfg.task_timeout)
    except Exception as exc:  # a range failed after its retries: every item records it
        log.warning("streaming %s failed: %s", task.label, exc)
        return _failed_rows(task, f"{type(exc).__name__}: {exc}")
    map_seconds = time.perf_counter() - t0
    rows = []
    def compute(it: Item) -> Any:
        if pairs:
            return pair_estimate(states, it.measure, it.layer, it.layer_b, it.params)
        return compute_from_states(it.measure, states, it.params)

    for it in task.items:
        row = _timed(it, lambda it=it: compute(it), task.rows.n)
        row["seconds"] += map_seconds / len(task.items)
        row.setdefault("extra", {})["map_shards"] = len(task.shards)
        rows.append(row)
    return rows


def _store_class() -> Any:
    try:
        from repscope.capture import ActivationStore
    except ImportError:
        from repscope.capture.store import ActivationStore
    return ActivationStore


def _sources(cfg: AnalyzeConfig, progress: bool) -> list[Any]:
    """The stores to analyse: one per checkpoint in a sweep, else the store or a capture."""
    if cfg.checkpoints is not None:
        return checkpoint_sources(cfg, progress=progress)
    store, path = _open_or_capture(cfg, progress)
    return [Source(store, path)]


def _open_or_capture(cfg: AnalyzeConfig, progress: bool) -> tuple[Any, Path]:
    if cfg.store is not None:
        from repscope.capture.remote import store_url

        store = _store_class().open(cfg.store)  # a URL is fetched into the local cache
        url = store_url(cfg.store)  # tasks open the URL: on another node, into its own cache
        return store, (url if url is not None else Path(cfg.store))
    from repscope.capture import run_capture
    from repscope.capture.run import capture_config

    path = Path(cfg.out) / "store"
    ccfg = capture_config(cfg, out=path, layers=tuple(cfg.layers))
    return run_capture(ccfg, progress=progress), path


def _run_fields(plan: Plan, run_id: str, measures: Mapping[str, MeasureRequest]) -> Callable:
    layer_index = {name: i for i, name in enumerate(plan.layers)}
    src = plan.source
    common = {
        "run_id": run_id, "source": plan.store, "source_id": src.get("source_id"),
        "model": _str(src.get("model")), "model_hash": _str(src.get("model_hash")),
        "data": _str(src.get("data")), "data_hash": _str(src.get("data_hash")),
        "checkpoint": _str(src.get("checkpoint")), "seed": plan.rows.seed,
        "checkpoint_step": src.get("checkpoint_step"),
        "rows_hash": plan.rows.digest, "repscope_version": __version__,
    }

    def complete(row: dict[str, Any]) -> dict[str, Any]:
        m = measures[row["measure"]]
        return {**common, "family": m.family, "kind": m.kind,
                "layer_index": layer_index[row["layer"]],
                "layer_b_index": layer_index.get(row.get("layer_b") or ""), **row}

    return complete


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _failed_rows(task: Task, error: str) -> list[dict[str, Any]]:
    now = _now()
    return [{"key": it.key, "layer": it.layer, "layer_b": it.layer_b,
             "measure": it.measure, "variant": it.variant, "params": it.params,
             "status": "error", "error": error, "started_at": now, "finished_at": now}
            for it in task.items]


def run_analysis(cfg: AnalyzeConfig, *, progress: bool = False, console: Any = None,
                 write_report: Callable[[Path, Path], Path] | None = None) -> AnalysisRun:
    """Run the analysis for ``cfg``; see the module docstring for the stages.

    ``write_report(db_path, html_path)`` writes the report when ``cfg.report`` is true;
    ``cfg.report`` without a ``write_report`` is refused before any work (use
    :func:`repscope.pipeline.analyze`, which supplies the HTML report). Raises
    :class:`~repscope.analysis.plan.PlanError` for an invalid config before any capture or
    measurement. Failing measures do not raise: they are recorded with their error.

    Parameters
    ----------
    cfg : AnalyzeConfig
        Source (model + corpus, or ``store``), layers, rows, measures, execution, output.
    progress : bool, default False
        Show the capture / measures progress bars and stage lines.
    console : rich.console.Console, optional
        Where the progress goes (default: stderr).
    write_report : callable, optional
        ``write_report(db_path, html_path) -> path``; required when ``cfg.report``.

    Returns
    -------
    AnalysisRun
        Where the database, plan and report are, counts of computed / cached / failed results,
        the data checks (``findings``, ``warnings``) and ``to_pandas()`` for the results.
    """
    if cfg.report and write_report is None:
        raise ValueError("run_analysis: cfg.report is true but no 'write_report' was given; "
                         "call repscope.pipeline.analyze, or set report=False.")
    t_start = time.perf_counter()
    measures, skipped = check_config(cfg)
    if cfg.dry_run:
        cfg = _dry_run_source(cfg)
    out = check_output_dir(Path(cfg.out), "out", "analyze")
    remove_stale_temporaries(out, lambda name: name in ("plan.json", "report.html"))
    sources = _sources(cfg, progress)
    plans = tuple(make_plan(cfg, s.store, s.path, measures, skipped, checkpoint=s.checkpoint)
                  for s in sources)
    plan, store = plans[-1], sources[-1].store
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    if cfg.checkpoints is None:
        plan.save(plan_path)
        plan_dict = plan.to_dict()
    else:
        import json

        from repscope._io import atomic_write_text

        plan_dict = sweep_summary(plans)
        atomic_write_text(plan_path, json.dumps(plan_dict, indent=2, default=str))
    all_items = [it for p in plans for _, it in p.items()]
    db = ResultsDB(out / "results.duckdb")
    done = db.done_keys([it.key for it in all_items])
    pending = [dataclasses.replace(t, items=tuple(i for i in t.items if i.key not in done))
               for p in plans for t in p.tasks]
    pending = [t for t in pending if t.items]
    n_todo = sum(len(t.items) for t in pending)
    sweep = f"{len(plans)} checkpoints x " if cfg.checkpoints is not None else ""
    _say(progress, console,
         f"[bold]plan[/] {sweep}{len(plan.layers)} layers x {plan.rows.n} rows, "
         f"{len(plan.measures)} measures -> {len(all_items)} results "
         f"({len(done)} already in {db.path.name}, {n_todo} to compute) on the "
         f"{cfg.executor} executor")
    estimate = None
    if (progress or cfg.dry_run) and pending:
        from repscope.analysis.preflight import estimate as estimate_plan

        estimate = estimate_plan(plan, store, pending, permutations=cfg.permutations)
        for line in estimate.lines():
            _say(progress, console, line)
    if cfg.dry_run:
        return AnalysisRun("dry-run", out, db.path, None, plan_path, plan,
                           n_results=len(all_items), n_cached=len(done), n_computed=0,
                           n_failed=0, seconds=time.perf_counter() - t_start, plans=plans,
                           estimate=estimate)
    refiner = None
    if estimate is not None:
        from repscope.analysis.preflight import Refiner, format_seconds

        refiner = Refiner(estimate.seconds, n_todo)
    run_id = f"{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    db.start_run(run_id, plan_dict, provenance(plan, store), n_todo, _now())
    findings = _data_checks(plans, sources, run_id, db)
    by_measure = {m.name: m for m in measures}
    completers = {t.key: _run_fields(p, run_id, by_measure) for p in plans for t in p.tasks}
    n_ok = n_failed = 0
    status = "failed"
    try:
        with ProgressBar(n_todo, "[bold]measures[/] {task.description}", enabled=progress,
                         console=console) as bar:
            t_task = time.perf_counter()
            for task, rows in _execute(cfg, pending):
                complete = completers[task.key]  # pending tasks keep their plan key
                rows = [complete(r) for r in rows]
                db.write_results(rows, publish="due")
                n_ok += sum(r["status"] == "ok" for r in rows)
                n_failed += sum(r["status"] != "ok" for r in rows)
                label = task.label
                if refiner is not None:  # the estimate, refined by what the tasks took
                    left = refiner.update(len(rows), time.perf_counter() - t_task)
                    label += f" (~{format_seconds(left)} left)"
                t_task = time.perf_counter()
                bar.update(advance=len(rows), description=label)
        status = "done"
    finally:
        try:
            db.finish_run(run_id, status=status, n_done=n_ok, n_failed=n_failed,
                          finished_at=_now())
        except Exception as exc:  # noqa: BLE001 (the run's own error, if any, is what matters)
            if status == "done":
                raise
            log.info("could not record the end of run %s: %s", run_id, exc)
    report_path = None
    if cfg.report and write_report is not None:
        if progress:
            from rich.console import Console

            with (console or Console(stderr=True)).status("[bold]report[/] writing report.html"):
                report_path = write_report(db.path, out / "report.html")
        else:
            report_path = write_report(db.path, out / "report.html")
    return AnalysisRun(run_id, out, db.path, report_path, plan_path, plan,
                       n_results=len(all_items), n_cached=len(done), n_computed=n_ok,
                       n_failed=n_failed, seconds=time.perf_counter() - t_start, plans=plans,
                       estimate=estimate, findings=tuple(findings))


def _dry_run_source(cfg: AnalyzeConfig) -> AnalyzeConfig:
    """A dry run reads a store, never captures: --store, or OUT/store from an earlier run."""
    from repscope.errors import UsageError

    if cfg.store is not None:
        return cfg
    if cfg.checkpoints is not None:
        raise UsageError("The 'dry_run' option cannot estimate a checkpoint sweep (each "
                         "checkpoint needs a capture); run it on one captured store with --store.")
    path = Path(cfg.out) / "store"
    try:
        _store_class().open(path)
    except Exception:  # noqa: BLE001 (missing or incomplete: the same advice)
        raise UsageError(f"The 'dry_run' option needs a store to time the measures on: pass "
                         f"--store, or capture first ('repscope capture --out {path}'); "
                         f"{str(path)!r} holds no complete store.") from None
    return dataclasses.replace(cfg, store=path)


def _data_checks(plans: tuple[Plan, ...], sources: list[Any], run_id: str,
                 db: ResultsDB) -> list[dict[str, Any]]:
    """Massive activations / outlier coordinates of every planned layer, into ``findings``."""
    from repscope.analysis.checks import check_plan, summary_line

    findings = []
    for p, s in zip(plans, sources, strict=True):
        findings.extend(check_plan(p, s.store, run_id))
    db.write_findings(findings)
    line = summary_line(findings)
    if line is not None:
        log.warning(line)
    return findings


def _say(progress: bool, console: Any, message: str) -> None:
    """A stage line on the progress console (only with ``progress``); always logged."""
    log.info(message.replace("[bold]", "").replace("[/]", ""))
    if progress:
        from rich.console import Console

        (console or Console(stderr=True)).print(message)

