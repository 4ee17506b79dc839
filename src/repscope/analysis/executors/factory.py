"""Choosing a backend by name: :data:`BACKENDS`, :func:`make_executor` and the option check
by kind that ``repscope analyze`` runs before any work."""

from __future__ import annotations

from typing import Any

from repscope.analysis.executors.local import LocalExecutor
from repscope.analysis.executors.options import OptionProblem, option_problem
from repscope.analysis.executors.process import ProcessExecutor
from repscope.analysis.executors.ray import RayExecutor
from repscope.analysis.executors.scheduler import Executor

BACKENDS: dict[str, type[Executor]] = {
    "local": LocalExecutor,
    "process": ProcessExecutor,
    "ray": RayExecutor,
}
"Every executor backend by kind: the one list to extend with a new backend."
EXECUTOR_KINDS = tuple(BACKENDS)


def executor_option_problem(kind: str, *, workers: Any = None, address: Any = None,
                            timeout: Any = None) -> OptionProblem | None:
    """The first of ``workers`` / ``address`` / ``timeout`` that the ``kind`` executor refuses
    (with the executors that take it), or None; None for an unknown ``kind`` (that is
    :func:`make_executor`'s check)."""
    backend = BACKENDS.get(kind)
    if backend is None:
        return None
    return option_problem(backend, workers=workers, address=address, timeout=timeout,
                          backends=BACKENDS)


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
    from repscope._validate import check_choice  # imports torch; workers import this package

    kind = check_choice(kind, "kind", "make_executor", EXECUTOR_KINDS)
    problem = executor_option_problem(kind, workers=workers, address=address)
    if problem is not None:
        raise problem.parameter_error("make_executor")
    backend = BACKENDS[kind]
    bad = [] if backend.options is None else sorted(set(options) - set(backend.options))
    if bad:
        raise TypeError(
            f"make_executor got option(s) {bad} that kind={kind!r} does not take; "
            f"it accepts {list(backend.options or ()) or 'no options'}."
        )
    return backend.from_options(workers, address, **options)
