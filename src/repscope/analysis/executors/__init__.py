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

Modules: ``outcomes`` (:class:`TaskOutcome`, ``_call``: what a worker runs), ``scheduler``
(:class:`Executor`, the shared loop), ``local`` / ``process`` / ``ray`` (one backend each),
``options`` (the one check of executor options), ``factory`` (:data:`BACKENDS`,
:func:`make_executor`), ``resume`` (:class:`TaskLedger`, :func:`run_sweep`), ``reduce``
(:func:`map_reduce`). The package imports only the standard library: workers start without
torch.
"""

from repscope.analysis.executors.factory import (
    BACKENDS,
    EXECUTOR_KINDS,
    executor_option_problem,
    make_executor,
)
from repscope.analysis.executors.local import LocalExecutor
from repscope.analysis.executors.options import OptionProblem
from repscope.analysis.executors.outcomes import (  # noqa: F401  (_Attempt, _call: for tests)
    TaskFailedError,
    TaskOutcome,
    _Attempt,
    _call,
)
from repscope.analysis.executors.process import ProcessExecutor
from repscope.analysis.executors.ray import RayExecutor
from repscope.analysis.executors.reduce import map_reduce
from repscope.analysis.executors.resume import DoneRecord, TaskLedger, run_sweep
from repscope.analysis.executors.scheduler import Executor

__all__ = [
    "BACKENDS",
    "EXECUTOR_KINDS",
    "DoneRecord",
    "Executor",
    "LocalExecutor",
    "OptionProblem",
    "ProcessExecutor",
    "RayExecutor",
    "TaskFailedError",
    "TaskLedger",
    "TaskOutcome",
    "executor_option_problem",
    "make_executor",
    "map_reduce",
    "run_sweep",
]
