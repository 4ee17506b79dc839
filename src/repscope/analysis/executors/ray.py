"""The Ray backend: one Ray task per attempt, on a local Ray or an existing cluster.

Ray's own retries are off (``max_retries=0``) so attempts are counted by the shared scheduler
exactly as for the other backends; a timeout cancels the attempt with ``ray.cancel(force=True)``.
A Ray instance the user started is reused and never shut down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from repscope.analysis.executors.outcomes import _Attempt, _call, _infrastructure_failure
from repscope.analysis.executors.scheduler import Executor

log = logging.getLogger(__name__)


class RayExecutor(Executor):
    """Ray tasks on a local Ray instance or an existing cluster.

    If Ray is not initialised yet, ``ray.init(address=address, **init_kwargs)`` starts (or,
    with ``address``, connects to) it and :meth:`close` shuts it down again; a Ray the caller
    initialised is reused and left running. ``workers`` caps the tasks running at once
    (default: the cluster's CPUs); each task asks Ray for ``num_cpus_per_task`` CPUs.
    """

    kind = "ray"
    options = None  # num_cpus_per_task and any ray.init keyword

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

    @classmethod
    def from_options(cls, workers: int | None, address: str | None,
                     **options: Any) -> RayExecutor:
        return cls(workers, address=address, **options)

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
