"""What one attempt and one task produce, and :func:`_call`, what every worker runs.

Workers of every backend import this module to run :func:`_call`; it and the package import
only the standard library (no torch), so a spawned worker starts fast.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


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
    """Raised by :func:`~repscope.analysis.executors.map_reduce` when a shard still fails
    after its retries."""

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


def _task_keys(items: list[Any], key: Callable[[Any], Any] | None, fn_name: str) -> list[str]:
    """The tasks' keys, ``key(task)`` or :func:`_default_key`; refuses duplicates."""
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
