"""Run a sweep's tasks locally, on a process pool or on Ray, with identical semantics.

A *task* is any picklable object with a unique key (a layer, a layer pair, a checkpoint x layer
x measure cell); ``fn(task)`` is a picklable top-level function that computes its result,
reading its own rows from disk (an ActivationStore, arrays on shared storage) so that no
activation array travels through the driver. Every executor offers the same call::

    with make_executor("process", workers=2) as ex:
        for outcome in ex.map(fn, tasks, key=lambda t: t.key, retries=1, progress=True):
            db.write(outcome)          # the caller is the single results writer

and the same behaviour, because scheduling, retries and bookkeeping live once, in
:meth:`Executor.map`; executors only differ in how one attempt is submitted and awaited:

- ``local``: in process, sequential, deterministic order (the default);
- ``process``: a :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` context;
  workers pin their BLAS/torch thread pools so ``workers x threads`` matches the cores, and
  exit on their own when the driver dies;
- ``ray``: Ray tasks (``ray.init()`` locally, or ``address="auto"`` / ``"ray://host:10001"``
  for a running cluster); Ray's own retries are off (``max_retries=0``) so attempts are
  counted here exactly as for the other executors. A Ray instance the user started is reused
  and never shut down.

Outcomes (:class:`TaskOutcome`) are yielded as tasks complete. A task that raises is retried
up to ``retries`` times and then reported with its error (type, message and traceback) while
the others keep running. At most ``max_in_flight`` attempts are submitted at once, so a sweep
of millions of tasks keeps bounded memory in the driver and in Ray's object store.

Interrupted sweeps resume through a *done record*: :class:`TaskLedger` (SQLite, one row per
task key, each outcome committed durably before it is handed to the caller) or any object with
``done_keys()`` and ``record(outcome)``, such as a results database. :func:`run_sweep` skips the
keys already done and records the rest. :func:`map_reduce` runs a streamable measure as a map
over shards followed by an ordered merge (e.g. :meth:`repscope.stats.Moments.merge`), which
gives bit-identical results whichever executor ran the shards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import socket
import sqlite3
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = [
    "EXECUTOR_KINDS",
    "DoneRecord",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "TaskFailedError",
    "TaskLedger",
    "TaskOutcome",
    "make_executor",
    "map_reduce",
    "run_sweep",
]

log = logging.getLogger(__name__)
# repscope._validate imports torch: it is imported inside the driver-side functions below so
# that spawned workers, which import this module to run `_call`, start without torch.

EXECUTOR_KINDS = ("local", "process", "ray")
T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one task, after all its attempts."""

    key: str
    "The task's unique key."
    result: Any = None
    "``fn(task)`` of the last attempt; ``None`` when the task failed."
    error: str | None = None
    "``None`` on success; else ``'ErrorType: message'`` followed by the traceback."
    attempts: int = 1
    "How many times the task ran (1 + the retries it used)."
    seconds: float = 0.0
    "Wall time of the last attempt inside the worker (excludes queueing and transfer)."
    worker: str = ""
    "``host:pid`` of the process that ran the last attempt."

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.error is None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: it is also a handle
class _Attempt:
    """One run of ``fn(task)`` as reported by a worker."""

    ok: bool
    value: Any
    error: str | None
    seconds: float
    worker: str


class TaskFailedError(RuntimeError):
    """Raised by :func:`map_reduce` when a shard still fails after its retries."""

    def __init__(self, outcomes: Sequence[TaskOutcome]):
        self.outcomes = list(outcomes)
        first = self.outcomes[0]
        summary = (first.error or "").splitlines()[0] if first.error else ""
        super().__init__(
            f"{len(self.outcomes)} task(s) failed after their retries; first: "
            f"key={first.key!r} after {first.attempts} attempt(s): {summary}"
        )


def _worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _format_error(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n{tb}"


def _call(fn: Callable[[Any], Any], task: Any) -> _Attempt:
    """Run one attempt and capture its error: what every executor runs in its worker."""
    start = time.perf_counter()
    try:
        value = fn(task)
    except Exception as exc:  # every task error is reported, never raised into the scheduler
        return _Attempt(False, None, _format_error(exc), time.perf_counter() - start,
                        _worker_label())
    return _Attempt(True, value, None, time.perf_counter() - start, _worker_label())


def _infrastructure_failure(exc: BaseException) -> _Attempt:
    """An attempt lost to the executor itself (a crashed worker, an unpicklable result)."""
    return _Attempt(False, None, _format_error(exc), math.nan, "")


def _default_key(task: Any) -> str:
    key = getattr(task, "key", None)
    return str(task) if key is None else str(key)


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on stderr: done / running / failed, elapsed and ETA."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled
        self.done = self.running = self.failed = 0
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from repscope._progress import rich_progress

            self._bar = rich_progress("[bold]{task.description}", "{task.fields[running]} running",
                                      "[red]{task.fields[failed]} failed")
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, running=0, failed=0)
        return self

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, running=self.running,
                             failed=self.failed)

    def started(self) -> None:
        self.running += 1
        self._refresh()

    def ended(self, outcome: TaskOutcome | None) -> None:
        """An attempt ended; ``outcome`` is None when the task goes back for a retry."""
        self.running -= 1
        if outcome is not None:
            self.done += 1
            self.failed += not outcome.ok
        self._refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- executors


class Executor(ABC):
    """Runs ``fn(task)`` for many tasks; subclasses only submit and await single attempts.

    Use as a context manager (or call :meth:`close`) so pools and Ray connections the
    executor opened are released.
    """

    kind: str = ""
    workers: int = 1

    # --- what a backend implements -------------------------------------------------
    @abstractmethod
    def _submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        """Start one attempt; return a handle."""

    @abstractmethod
    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        """Block until at least one handle is finished or ``timeout`` seconds have passed;
        return the finished ones (possibly none after a timeout)."""

    @abstractmethod
    def _collect(self, handle: Any) -> _Attempt:
        """The finished attempt behind ``handle``; never raises."""

    def _cancel(self, handles: list[Any]) -> None:  # noqa: B027 (optional hook)
        """Best-effort cancellation of attempts that are no longer wanted."""

    def _check_fn(self, fn: Callable[[Any], Any]) -> None:  # noqa: B027 (optional hook)
        """Refuse a task function this backend cannot ship to its workers."""

    def _abort(self, expired: list[Any], others: list[Any]) -> list[Any]:
        """Stop the ``expired`` attempts (they ran past the timeout); return the handles among
        ``others`` that were lost as a side effect (re-run without counting an attempt)."""
        self._cancel(expired)
        return []

    supports_timeout: bool = True
    "Whether :meth:`map` can stop an attempt that runs past ``timeout``."

    def default_in_flight(self) -> int:
        """How many attempts are submitted at once unless ``max_in_flight`` says otherwise."""
        return self.workers

    def close(self, wait: bool = True) -> None:  # noqa: B027 (optional hook)
        """Release the workers (idempotent); ``wait=False`` does not wait for running attempts."""

    # --- shared behaviour ------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.kind} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(wait=exc_type is None)  # after Ctrl-C or an error, do not wait for workers

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        *,
        key: Callable[[T], Any] | None = None,
        retries: int = 1,
        progress: bool = False,
        max_in_flight: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[TaskOutcome]:
        """Run ``fn(task)`` for every task; yield a :class:`TaskOutcome` per task as it ends.

        ``key(task)`` names each task (default: ``task.key`` if present, else ``str(task)``);
        keys must be unique. A task whose attempt raises is run again, up to ``retries`` more
        times, then yielded with its error; the others are not affected. Outcomes arrive in
        completion order (the local executor: task order). Arguments are checked here,
        before any task starts; closing the returned iterator early cancels what has not run.

        ``timeout``: seconds an attempt may run (``process`` and ``ray`` executors). An attempt
        past it is stopped (Ray: its worker is killed; process pool: the pool is replaced, and
        the other attempts it was running are re-run without counting against their retries)
        and counts as a failed attempt with a ``TimeoutError``. The clock starts when the
        attempt is submitted; with a timeout at most ``workers`` attempts are in flight, so an
        attempt does not wait in a queue on its own clock.
        """
        from repscope._validate import check_int, param_error

        fn_name = f"{type(self).__name__}.map"
        items = list(tasks)
        keys = _task_keys(items, key, fn_name)
        retries = check_int(retries, "retries", fn_name, low=0)
        limit = self.default_in_flight() if max_in_flight is None else check_int(
            max_in_flight, "max_in_flight", fn_name, low=1)
        timeout, limit = self._check_timeout(timeout, limit, fn_name)
        if not callable(fn):
            raise param_error(fn_name, "fn", "a callable", fn)
        self._check_fn(fn)
        return self._schedule(fn, items, keys, retries, progress, limit, timeout)

    def _check_timeout(self, timeout: float | None, limit: int,
                       fn_name: str) -> tuple[float | None, int]:
        """Validate ``timeout``; with one, cap the attempts in flight at the workers."""
        from repscope._validate import check_float, param_error

        if timeout is None:
            return None, limit
        timeout = check_float(timeout, "timeout", fn_name, low=0.0, low_inclusive=False)
        if not self.supports_timeout:
            raise param_error(fn_name, "timeout", f"None for the {self.kind} executor, which "
                              "runs tasks in this process and cannot stop one (use the "
                              "process or ray executor)", timeout)
        return timeout, min(limit, self.workers)

    def _schedule(
        self,
        fn: Callable[[Any], Any],
        items: list[Any],
        keys: list[str],
        retries: int,
        progress: bool,
        limit: int,
        timeout: float | None = None,
    ) -> Iterator[TaskOutcome]:
        queue = deque(range(len(items)))  # indices of tasks waiting to be submitted
        attempts = [0] * len(items)
        running: dict[Any, int] = {}  # handle -> task index
        since: dict[Any, float] = {}  # handle -> submission time (monotonic)
        start = time.perf_counter()
        with _Progress(len(items), self.describe(), progress) as bar:
            try:
                while queue or running:
                    while queue and len(running) < limit:
                        i = queue.popleft()
                        attempts[i] += 1
                        handle = self._submit(fn, items[i])
                        running[handle], since[handle] = i, time.monotonic()
                        bar.started()
                    wait_for = None
                    if timeout is not None:
                        wait_for = max(0.0, min(since.values()) + timeout - time.monotonic())
                    ready = self._wait(list(running)) if wait_for is None else \
                        self._wait(list(running), wait_for)
                    finished = [(h, self._collect(h)) for h in ready]
                    finished += self._expire(running, since, finished, timeout, queue, attempts, bar)
                    for handle, att in finished:
                        i = running.pop(handle)
                        since.pop(handle)
                        if not att.ok and attempts[i] <= retries:
                            log.warning("task %r failed on attempt %d of %d, retrying: %s",
                                        keys[i], attempts[i], retries + 1,
                                        (att.error or "").splitlines()[0])
                            bar.ended(None)
                            queue.appendleft(i)  # retries go first
                            continue
                        outcome = TaskOutcome(keys[i], att.value, att.error, attempts[i],
                                              att.seconds, att.worker)
                        bar.ended(outcome)
                        yield outcome
            finally:
                if running:
                    self._cancel(list(running))
        log.info("%s: %d tasks, %d failed, %.2f s", self.describe(), bar.done, bar.failed,
                 time.perf_counter() - start)

    def _expire(self, running: dict[Any, int], since: dict[Any, float],
                finished: list[tuple[Any, _Attempt]], timeout: float | None,
                queue: deque[int], attempts: list[int],
                bar: _Progress) -> list[tuple[Any, _Attempt]]:
        """Stop the attempts past ``timeout``; return them as failed attempts. Attempts lost
        as a side effect are put back in the queue without counting against their retries."""
        if timeout is None:
            return []
        done = {h for h, _ in finished}
        now = time.monotonic()
        expired = [h for h in running if h not in done and now - since[h] >= timeout]
        if not expired:
            return []
        others = [h for h in running if h not in done and h not in expired]
        for h in self._abort(expired, others):
            i = running.pop(h)
            since.pop(h)
            attempts[i] -= 1
            queue.appendleft(i)
            bar.ended(None)
        error = (f"TimeoutError: the attempt ran longer than timeout={timeout:g} s and was "
                 f"stopped by the {self.kind} executor")
        return [(h, _Attempt(False, None, error, now - since[h], "")) for h in expired]


def _task_keys(items: list[Any], key: Callable[[Any], Any] | None, fn_name: str) -> list[str]:
    keyf = _default_key if key is None else key
    keys = [str(keyf(t)) for t in items]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(
            f"{fn_name} needs a unique key per task; the key {dup!r} occurs more than once. "
            f"Pass key=... to name tasks uniquely."
        )
    return keys


class LocalExecutor(Executor):
    """Runs every task in this process, one after the other, in task order."""

    kind = "local"

    def __init__(self) -> None:
        self.workers = 1

    supports_timeout = False  # the task runs in this thread: nothing can stop it

    def _submit(self, fn: Callable[[Any], Any], task: Any) -> _Attempt:
        return _call(fn, task)  # the handle is the finished attempt

    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        return handles

    def _collect(self, handle: Any) -> _Attempt:
        return handle


def _worker_init(threads: int, parent_pid: int) -> None:
    """Process-pool worker set-up: thread pools sized to share the cores; die with the driver."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # read by torch / BLAS when they are first imported
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # BLAS libraries that are already loaded
    except ImportError:
        pass

    def watch() -> None:  # a worker whose driver was killed exits instead of lingering
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="repscope-parent-watch", daemon=True).start()


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned Python processes on this machine.

    Each worker limits its torch/BLAS thread pools to ``threads_per_worker`` (default: the
    cores divided by the workers) so the pool does not oversubscribe the CPU. A worker that
    dies (segfault, out of memory) fails the attempts it held; they are retried on a fresh pool.
    """

    kind = "process"

    def __init__(self, workers: int | None = None, *, threads_per_worker: int | None = None):
        from repscope._validate import check_int

        cores = os.cpu_count() or 1
        self.workers = cores if workers is None else check_int(
            workers, "workers", "ProcessExecutor", low=1)
        self.threads_per_worker = max(1, cores // self.workers) if threads_per_worker is None \
            else check_int(threads_per_worker, "threads_per_worker", "ProcessExecutor", low=1)
        self._pool: Any = None

    def describe(self) -> str:
        return f"process ({self.workers} workers x {self.threads_per_worker} threads)"

    def default_in_flight(self) -> int:
        return 2 * self.workers  # one queued attempt per worker hides the hand-off latency

    def _check_fn(self, fn: Callable[[Any], Any]) -> None:
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"The process executor needs a picklable top-level function as 'fn'; "
                f"{fn!r} cannot be pickled ({type(exc).__name__}: {exc}). Define it at module "
                f"level (not a lambda or a nested function)."
            ) from exc

    def _ensure_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.threads_per_worker, os.getpid()),
            )
        return self._pool

    def _submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        pool = self._ensure_pool()
        future = pool.submit(_call, fn, task)
        future.repscope_pool = pool  # which pool to replace if this attempt finds it broken
        return future

    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def _abort(self, expired: list[Any], others: list[Any]) -> list[Any]:
        """A pool cannot stop one worker's task: kill every worker and start a fresh pool;
        the other running attempts are lost with it and are re-run."""
        pool = self._pool
        if pool is None:
            return []
        for proc in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        log.warning("%d attempt(s) ran past the timeout: replaced the process pool (%d other "
                    "running attempt(s) will be re-run)", len(expired), len(others))
        self._discard_pool()
        return [h for h in others if getattr(h, "repscope_pool", None) is pool]

    def _collect(self, handle: Any) -> _Attempt:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return handle.result()
        except BrokenProcessPool as exc:
            if handle.repscope_pool is self._pool:  # not a pool already replaced
                log.warning("a process-pool worker died; starting a fresh pool")
                self._discard_pool()
            return _infrastructure_failure(exc)
        except Exception as exc:  # e.g. a task or result that cannot be pickled
            return _infrastructure_failure(exc)

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _cancel(self, handles: list[Any]) -> None:
        for h in handles:
            h.cancel()

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks on a local Ray instance or an existing cluster.

    If Ray is not initialised yet, ``ray.init(address=address, **init_kwargs)`` starts (or,
    with ``address``, connects to) it and :meth:`close` shuts it down again; a Ray the caller
    initialised is reused and left running. ``workers`` caps the tasks running at once
    (default: the cluster's CPUs); each task asks Ray for ``num_cpus_per_task`` CPUs.
    """

    kind = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 num_cpus_per_task: float = 1.0, **init_kwargs: Any):
        from repscope._validate import check_int

        try:
            import ray
        except ImportError as exc:
            raise ImportError(
                "The ray executor needs Ray: pip install 'repscope[ray]'."
            ) from exc
        if workers is not None:
            workers = check_int(workers, "workers", "RayExecutor", low=1)
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False,
                                      "logging_level": logging.WARNING}
            if address is None and workers is not None:
                kwargs["num_cpus"] = workers
            kwargs.update(init_kwargs)
            ray.init(address=address, **kwargs)
            self._owns_ray = True
        elif address is not None or init_kwargs:
            log.info("Ray is already initialised; reusing it and ignoring address/init options")
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, int(cpus / num_cpus_per_task)) if workers is None else workers
        self._ray = ray
        self._remote = ray.remote(num_cpus=num_cpus_per_task, max_retries=0)(_call)

    def _submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return self._remote.remote(fn, task)

    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        ready, rest = self._ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _collect(self, handle: Any) -> _Attempt:
        try:
            return self._ray.get(handle)
        except Exception as exc:  # a crashed worker, an argument that failed to deserialise
            return _infrastructure_failure(exc)

    def _cancel(self, handles: list[Any]) -> None:
        for h in handles:
            try:
                self._ray.cancel(h, force=True)
            except Exception as exc:
                log.debug("could not cancel a Ray task: %s", exc)

    def close(self, wait: bool = True) -> None:
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False


def make_executor(
    kind: str = "local",
    workers: int | None = None,
    address: str | None = None,
    **options: Any,
) -> Executor:
    """Build the executor selected by ``kind`` (``"local"``, ``"process"`` or ``"ray"``).

    ``workers``: parallel tasks (``process``: pool size, default the CPU count; ``ray``: tasks
    running at once, default the cluster's CPUs; ``local``: only 1). ``address``: a Ray cluster
    (``"auto"``, ``"ray://head:10001"``); ``ray`` only. ``options``: ``threads_per_worker`` for
    ``process``; ``num_cpus_per_task`` and any ``ray.init`` keyword (``num_cpus``,
    ``runtime_env``, ...) for ``ray``.
    """
    from repscope._validate import check_choice, param_error

    kind = check_choice(kind, "kind", "make_executor", EXECUTOR_KINDS)
    if address is not None and kind != "ray":
        raise param_error("make_executor", "address", f"None for kind={kind!r} (only 'ray' "
                          "connects to a cluster)", address)
    if kind == "local":
        if workers not in (None, 1):
            raise param_error("make_executor", "workers",
                              "None or 1 for kind='local' (use kind='process' for a pool)",
                              workers)
        _no_options(options, "local", ())
        return LocalExecutor()
    if kind == "process":
        _no_options(options, "process", ("threads_per_worker",))
        return ProcessExecutor(workers, **options)
    return RayExecutor(workers, address=address, **options)


def _no_options(options: dict[str, Any], kind: str, allowed: tuple[str, ...]) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise TypeError(
            f"make_executor got option(s) {bad} that kind={kind!r} does not take; "
            f"it accepts {list(allowed) or 'no options'}."
        )


# --------------------------------------------------------------------------- resume


class DoneRecord(Protocol):
    """Anything that durably remembers finished tasks (:class:`TaskLedger`, a results DB)."""

    def done_keys(self) -> set[str]:
        """Keys of tasks that finished successfully."""
        ...

    def record(self, outcome: TaskOutcome) -> None:
        """Durably store one outcome (an upsert: at most one row per key)."""
        ...


class TaskLedger:
    """A durable record of task outcomes in one SQLite file, one row per task key.

    Every :meth:`record` is its own committed transaction (WAL journal, ``synchronous=FULL``),
    so an outcome the caller has seen survives ``kill -9`` of the driver and a power loss.
    The key is the primary key: re-recording a key replaces its row, never duplicates it.
    Results are stored pickled; open only ledgers you wrote. Keep the file on a local disk
    of the driver (SQLite's WAL mode does not work on network file systems).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS outcomes (key TEXT PRIMARY KEY, ok INTEGER NOT NULL, "
            "result BLOB, error TEXT, attempts INTEGER NOT NULL, seconds REAL, worker TEXT, "
            "recorded_at REAL NOT NULL)"
        )

    def record(self, outcome: TaskOutcome) -> None:
        blob = pickle.dumps(outcome.result, protocol=pickle.HIGHEST_PROTOCOL) if outcome.ok \
            else None
        self._con.execute(
            "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "ok=excluded.ok, result=excluded.result, error=excluded.error, "
            "attempts=excluded.attempts, seconds=excluded.seconds, worker=excluded.worker, "
            "recorded_at=excluded.recorded_at",
            (outcome.key, int(outcome.ok), blob, outcome.error, outcome.attempts,
             None if math.isnan(outcome.seconds) else outcome.seconds, outcome.worker,
             time.time()),
        )

    def done_keys(self) -> set[str]:
        return {k for (k,) in self._con.execute("SELECT key FROM outcomes WHERE ok = 1")}

    def failed_keys(self) -> set[str]:
        """Keys whose last recorded outcome is a failure."""
        return {k for (k,) in self._con.execute("SELECT key FROM outcomes WHERE ok = 0")}

    def outcomes(self) -> dict[str, TaskOutcome]:
        """Every recorded outcome, by key."""
        rows = self._con.execute(
            "SELECT key, ok, result, error, attempts, seconds, worker FROM outcomes ORDER BY key")
        return {
            key: TaskOutcome(key, pickle.loads(blob) if ok else None, error, attempts,
                             math.nan if seconds is None else seconds, worker or "")
            for key, ok, blob, error, attempts, seconds, worker in rows
        }

    def __len__(self) -> int:
        return self._con.execute("SELECT count(*) FROM outcomes").fetchone()[0]

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> TaskLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_sweep(
    executor: Executor,
    fn: Callable[[T], R],
    tasks: Iterable[T],
    *,
    record: DoneRecord | None = None,
    key: Callable[[T], Any] | None = None,
    retries: int = 1,
    progress: bool = False,
    max_in_flight: int | None = None,
    timeout: float | None = None,
) -> Iterator[TaskOutcome]:
    """:meth:`Executor.map` over the tasks that ``record`` does not list as done.

    Each outcome (success or failure) is stored with ``record.record`` *before* it is yielded,
    so a sweep killed at any moment and run again redoes only unfinished or failed tasks.
    """
    items = list(tasks)
    keys = _task_keys(items, key, "run_sweep")
    done = record.done_keys() if record is not None else set()
    pending = [t for t, k in zip(items, keys, strict=True) if k not in done]
    if done:
        log.info("resuming: %d of %d tasks already done, %d to run", len(items) - len(pending),
                 len(items), len(pending))
    keyf = _default_key if key is None else key
    outcomes = executor.map(fn, pending, key=keyf, retries=retries, progress=progress,
                            max_in_flight=max_in_flight, timeout=timeout)  # checks arguments now
    return outcomes if record is None else _recorded(outcomes, record)


def _recorded(outcomes: Iterator[TaskOutcome], record: DoneRecord) -> Iterator[TaskOutcome]:
    with contextlib.closing(outcomes):
        for outcome in outcomes:
            record.record(outcome)
            yield outcome


# --------------------------------------------------------------------------- map + merge


_NO_INITIAL: Any = object()


def map_reduce(
    executor: Executor,
    map_fn: Callable[[T], R],
    reduce_fn: Callable[[R, R], R],
    shards: Iterable[T],
    *,
    initial: R = _NO_INITIAL,
    retries: int = 1,
    progress: bool = False,
    max_in_flight: int | None = None,
    timeout: float | None = None,
) -> R:
    """``reduce_fn`` folded over ``map_fn(shard)`` for every shard, merged in shard order.

    The map runs on ``executor``; partial results are merged in the driver in shard order as
    soon as each prefix is complete, so the result does not depend on which executor ran the
    shards or in which order they finished (for a streamable measure with an associative
    ``merge`` it equals the one-pass batch result up to rounding). Example::

        moments = map_reduce(ex, shard_moments, Moments.merge, row_ranges)

    Raises :class:`TaskFailedError` as soon as a shard fails after its retries (the other
    shards are cancelled), and ``ValueError`` for no shards and no ``initial``.
    """
    from repscope._validate import check_int

    items = list(shards)
    if not items and initial is _NO_INITIAL:
        raise ValueError("map_reduce got no shards and no 'initial' value to return.")
    retries = check_int(retries, "retries", "map_reduce", low=0)
    limit = executor.default_in_flight() if max_in_flight is None else check_int(
        max_in_flight, "max_in_flight", "map_reduce", low=1)
    timeout, limit = executor._check_timeout(timeout, limit, "map_reduce")
    executor._check_fn(map_fn)
    acc = initial
    pending: dict[int, Any] = {}  # partial results waiting for their predecessors
    next_i = 0
    outcomes = executor._schedule(map_fn, items, [str(i) for i in range(len(items))], retries,
                                  progress, limit, timeout)
    try:
        for out in outcomes:
            if not out.ok:
                raise TaskFailedError([out])
            pending[int(out.key)] = out.result
            while next_i in pending:
                part = pending.pop(next_i)
                acc = part if acc is _NO_INITIAL else reduce_fn(acc, part)
                next_i += 1
    finally:
        outcomes.close()  # cancels the rest if a shard failed
    return acc
