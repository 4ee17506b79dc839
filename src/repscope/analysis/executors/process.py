"""The process backend: a pool of spawned Python processes on this machine.

Workers pin their BLAS/torch thread pools so ``workers x threads`` matches the cores, and exit
on their own when the driver dies. A pool cannot stop one worker's task: a timeout replaces the
whole pool, and the other attempts it was running are re-run without being charged.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from repscope.analysis.executors.outcomes import _Attempt, _call, _infrastructure_failure
from repscope.analysis.executors.scheduler import Executor

log = logging.getLogger(__name__)


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
    refuses = {"address": "runs tasks on this machine and connects to no cluster"}
    options = ("threads_per_worker",)

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
