"""Resuming interrupted sweeps: the :class:`DoneRecord` protocol, its SQLite implementation
:class:`TaskLedger`, and :func:`run_sweep`, which skips what a record lists as done."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from repscope.analysis.executors.outcomes import TaskOutcome, _default_key, _task_keys
from repscope.analysis.executors.scheduler import Executor

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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

