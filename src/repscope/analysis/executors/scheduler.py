"""The scheduler every backend shares: :class:`Executor` and its :meth:`Executor.map` loop.

Scheduling, retries, attempt counting, per-attempt timeouts, the in-flight bound and progress
live here, once. A backend subclasses :class:`Executor` and only implements how one attempt
is submitted (``_submit``), awaited (``_wait``) and collected (``_collect``), plus the optional
hooks (``_cancel``, ``_abort``, ``_check_fn``, ``close``) and the class attributes that say what
it refuses (``refuses``) and which constructor options it takes (``options``).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from repscope._progress import ProgressBar
from repscope.analysis.executors.options import option_problem
from repscope.analysis.executors.outcomes import TaskOutcome, _Attempt, _task_keys

log = logging.getLogger(__name__)
# repscope._validate imports torch: it is imported inside the driver-side functions below so
# that spawned workers, which import this package to run `_call`, start without torch.

T = TypeVar("T")
R = TypeVar("R")


class _Progress:
    """Done / running / failed counts of one :meth:`Executor.map`, shown on the shared
    progress-bar layout (:class:`repscope._progress.ProgressBar`) when enabled."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.done = self.running = self.failed = 0
        self._bar = ProgressBar(total, "[bold]{task.description}",
                                "{task.fields[running]} running", "[red]{task.fields[failed]} failed",
                                description=label, enabled=enabled, running=0, failed=0)

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def _refresh(self) -> None:
        self._bar.update(completed=self.done, running=self.running, failed=self.failed)

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
        self._bar.__exit__(*exc)


class Executor(ABC):
    """Runs ``fn(task)`` for many tasks; subclasses only submit and await single attempts.

    Use as a context manager (or call :meth:`close`) so pools and Ray connections the
    executor opened are released.
    """

    kind: str = ""
    workers: int = 1
    refuses: ClassVar[Mapping[str, str]] = {}
    """Options this backend cannot take ('workers' beyond 1, 'address', 'timeout') -> why, as
    a verb phrase ('runs one task at a time'); read only by
    :func:`~repscope.analysis.executors.options.option_problem`."""
    options: ClassVar[tuple[str, ...] | None] = ()
    "Constructor keywords ``make_executor`` passes on (None: any)."

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

    @classmethod
    def from_options(cls, workers: int | None, address: str | None,
                     **options: Any) -> Executor:
        """Build from :func:`~repscope.analysis.executors.make_executor`'s arguments, already
        checked against ``refuses`` and ``options``."""
        return cls(workers, **options)  # type: ignore[call-arg]

    def default_in_flight(self) -> int:
        """How many attempts are submitted at once unless ``max_in_flight`` says otherwise."""
        return self.workers

    def close(self, wait: bool = True) -> None:  # noqa: B027 (optional hook)
        """Release the workers (idempotent); ``wait=False`` does not wait for running attempts."""

    # --- shared behaviour ------------------------------------------------------------
    @property
    def supports_timeout(self) -> bool:
        """Whether :meth:`map` can stop an attempt that runs past ``timeout``."""
        return "timeout" not in self.refuses

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
        from repscope._validate import param_error

        fn_name = f"{type(self).__name__}.map"
        items = list(tasks)
        keys = _task_keys(items, key, fn_name)
        retries, limit, timeout = self._check_run(retries, max_in_flight, timeout, fn_name)
        if not callable(fn):
            raise param_error(fn_name, "fn", "a callable", fn)
        self._check_fn(fn)
        return self._schedule(fn, items, keys, retries, progress, limit, timeout)

    def _check_run(self, retries: int, max_in_flight: int | None, timeout: float | None,
                   fn_name: str) -> tuple[int, int, float | None]:
        """Validated ``(retries, in-flight limit, timeout)``; with a timeout, at most
        ``workers`` attempts are in flight."""
        from repscope._validate import check_float, check_int

        retries = check_int(retries, "retries", fn_name, low=0)
        limit = self.default_in_flight() if max_in_flight is None else check_int(
            max_in_flight, "max_in_flight", fn_name, low=1)
        if timeout is None:
            return retries, limit, None
        timeout = check_float(timeout, "timeout", fn_name, low=0.0, low_inclusive=False)
        problem = option_problem(type(self), timeout=timeout)
        if problem is not None:
            raise problem.parameter_error(fn_name, f"the {self.kind} executor")
        return retries, min(limit, self.workers), timeout

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
