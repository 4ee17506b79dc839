"""The Ray backend: one Ray task per task, scheduled with Ray's own primitives.

Ray already provides what a sweep needs, so this backend uses it instead of the shared
driver-side loop of :class:`~repscope.analysis.executors.scheduler.Executor`:

* **retries**: a task is submitted with ``max_retries=retries`` and
  ``retry_exceptions=[AttemptFailed]``; Ray re-runs a task that raised or whose worker died.
  Each attempt reads its attempt number from Ray, so ``TaskOutcome.attempts`` means the same
  as on the other backends;
* **per-attempt timeouts**: Ray has no deadline per attempt, so with ``timeout=`` the driver
  waits with ``ray.wait(timeout=...)`` until the oldest attempt's deadline, cancels an attempt
  past it (``ray.cancel(force=True)``, which kills its worker) and submits the next attempt
  itself (``max_retries=0`` then, so every attempt is seen and counted);
* **in-flight bound**: at most ``max_in_flight`` tasks are submitted, more as ``ray.wait``
  returns finished ones (Ray's pattern for limiting pending tasks);
* **cancellation**: closing the outcome iterator early cancels the submitted tasks
  (``ray.cancel(force=True, recursive=True)``);
* **placement**: ``scheduling_strategy`` (``"DEFAULT"``, ``"SPREAD"`` or a Ray strategy object)
  is passed to every task.

Connecting (a local Ray on loopback, an existing cluster with a connection deadline, or the
Ray this process already runs, which is never shut down) goes through :mod:`repscope._ray`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from repscope.analysis.executors.outcomes import TaskOutcome, _Attempt, _call, _format_error
from repscope.analysis.executors.scheduler import Executor, _Progress

log = logging.getLogger(__name__)


class AttemptFailed(Exception):
    """Raised inside a Ray task whose attempt failed, so that Ray retries it; carries the
    attempt (error text, seconds, worker) and its number."""

    def __init__(self, attempt: _Attempt, number: int) -> None:
        super().__init__((attempt.error or "").splitlines()[0] if attempt.error else "failed")
        self.attempt = attempt
        self.number = number

    def __reduce__(self) -> tuple[Any, ...]:
        return (AttemptFailed, (self.attempt, self.number))


def _attempt_number() -> int:
    """This Ray task's attempt number (0 for the first run), from Ray's core worker."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # a Ray without it: attempts are then counted from 1
        return 0


def _ray_task(fn: Callable[[Any], Any], task: Any) -> tuple[_Attempt, int]:
    """One attempt inside a Ray task: ``(attempt, attempt number)``; raises
    :class:`AttemptFailed` on failure so that Ray retries it."""
    number = _attempt_number() + 1
    att = _call(fn, task)
    if not att.ok:
        raise AttemptFailed(att, number)
    return att, number


class RayExecutor(Executor):
    """Ray tasks on a local Ray instance or an existing cluster.

    If Ray is not initialised yet, a local Ray is started (listening on loopback unless
    ``bind="network"``) or, with ``address``, the cluster is joined (within
    ``connect_timeout`` seconds, or a one-line error); :meth:`close` shuts down a Ray this
    executor started and leaves a Ray the caller initialised running. ``workers`` caps the
    tasks running at once (default: the cluster's CPUs); each task asks Ray for
    ``num_cpus_per_task`` CPUs and is placed by ``scheduling_strategy``.
    """

    kind = "ray"
    options = None  # num_cpus_per_task, bind, connect_timeout, scheduling_strategy, ray.init keywords

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 num_cpus_per_task: float = 1.0, bind: str = "loopback",
                 connect_timeout: float = 60.0, scheduling_strategy: Any = "DEFAULT",
                 **init_kwargs: Any):
        from repscope._ray import connect
        from repscope._validate import check_int

        if workers is not None:
            workers = check_int(workers, "workers", "RayExecutor", low=1)
        self._session = connect(address, num_cpus=workers, bind=bind,
                                connect_timeout=connect_timeout, what="The ray executor",
                                **init_kwargs)
        ray = self._session.ray
        cpus = self._session.cpus()
        self.workers = max(1, int(cpus / num_cpus_per_task)) if workers is None else workers
        self._ray = ray
        opts = {"num_cpus": num_cpus_per_task, "scheduling_strategy": scheduling_strategy}
        self._task = ray.remote(**opts)(_ray_task)

    @classmethod
    def from_options(cls, workers: int | None, address: str | None,
                     **options: Any) -> RayExecutor:
        return cls(workers, address=address, **options)

    # The shared loop's single-attempt hooks are not used: Ray runs the attempts.
    def _submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        raise NotImplementedError("RayExecutor schedules through Ray (see _schedule)")

    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        raise NotImplementedError("RayExecutor schedules through Ray (see _schedule)")

    def _collect(self, handle: Any) -> _Attempt:
        raise NotImplementedError("RayExecutor schedules through Ray (see _schedule)")

    def _schedule(self, fn: Callable[[Any], Any], items: list[Any], keys: list[str],
                  retries: int, progress: bool, limit: int,
                  timeout: float | None = None) -> Iterator[TaskOutcome]:
        ray = self._ray
        by_ray = timeout is None  # Ray retries; with a deadline the driver sees each attempt
        task = self._task.options(max_retries=retries if by_ray else 0,
                                  retry_exceptions=[AttemptFailed])
        queue = deque(range(len(items)))
        attempts = [0] * len(items)  # submissions (= attempts when the driver retries)
        running: dict[Any, int] = {}
        since: dict[Any, float] = {}
        start = time.perf_counter()
        with _Progress(len(items), self.describe(), progress) as bar:
            try:
                while queue or running:
                    while queue and len(running) < limit:
                        i = queue.popleft()
                        attempts[i] += 1
                        handle = task.remote(fn, items[i])
                        running[handle], since[handle] = i, time.monotonic()
                        bar.started()
                    wait_for = None if by_ray else max(
                        0.0, min(since.values()) + timeout - time.monotonic())
                    ready, rest = ray.wait(list(running), num_returns=1, timeout=wait_for)
                    if ready and rest:
                        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                    done = [(h, self._outcome(h, keys[running[h]], retries)) for h in ready]
                    if not by_ray:
                        done += self._expire(running, since, ready, timeout, keys)
                    for handle, outcome in done:
                        i = running.pop(handle)
                        since.pop(handle)
                        if not by_ray:
                            outcome = _numbered(outcome, attempts[i])
                            if not outcome.ok and attempts[i] <= retries:
                                log.warning("task %r failed on attempt %d of %d, retrying: %s",
                                            keys[i], attempts[i], retries + 1,
                                            (outcome.error or "").splitlines()[0])
                                bar.ended(None)
                                queue.appendleft(i)
                                continue
                        bar.ended(outcome)
                        yield outcome
            finally:
                for handle in running:
                    self._cancel_one(handle)
        log.info("%s: %d tasks, %d failed, %.2f s", self.describe(), bar.done, bar.failed,
                 time.perf_counter() - start)

    def _expire(self, running: dict[Any, int], since: dict[Any, float], ready: list[Any],
                timeout: float, keys: list[str]) -> list[tuple[Any, TaskOutcome]]:
        """Cancel the attempts past the deadline (``ray.cancel(force=True)``); they end as
        failed attempts with a ``TimeoutError``."""
        now = time.monotonic()
        out = []
        for h in [h for h in running if h not in ready and now - since[h] >= timeout]:
            self._cancel_one(h)
            error = (f"TimeoutError: the attempt ran longer than timeout={timeout:g} s and was "
                     f"stopped by the ray executor")
            out.append((h, TaskOutcome(keys[running[h]], None, error, 1, now - since[h], "")))
        return out

    def _outcome(self, handle: Any, key: str, retries: int) -> TaskOutcome:
        try:
            att, number = self._ray.get(handle)
            return TaskOutcome(key, att.value, None, number, att.seconds, att.worker)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AttemptFailed):
                a = cause.attempt
                return TaskOutcome(key, None, a.error, cause.number, a.seconds, a.worker)
            return TaskOutcome(key, None, _format_error(exc), retries + 1, float("nan"), "")
        except Exception as exc:  # a crashed worker after the retries, a lost object
            return TaskOutcome(key, None, _format_error(exc), retries + 1, float("nan"), "")

    def _cancel_one(self, handle: Any) -> None:
        try:
            self._ray.cancel(handle, force=True, recursive=True)
        except Exception as exc:
            log.debug("could not cancel a Ray task: %s", exc)

    def close(self, wait: bool = True) -> None:
        self._session.close()


def _numbered(outcome: TaskOutcome, attempts: int) -> TaskOutcome:
    """The outcome with the driver's attempt count (when the driver submits each attempt)."""
    from dataclasses import replace

    return replace(outcome, attempts=attempts)
