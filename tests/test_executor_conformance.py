"""One contract, every executor backend: each test runs once per kind in ``EXECUTOR_KINDS``.

A new backend added to ``repscope.analysis.executors.BACKENDS`` is picked up here without
editing this file; one that needs a running service gets a set-up function in ``_SETUP``
(Ray: a private local cluster for the module, started and shut down by its own handle).

Task functions live at module level so spawned and Ray workers can import them; this module
imports only the standard library, pytest and repscope's executors (no torch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repscope.analysis.executors import (
    BACKENDS,
    EXECUTOR_KINDS,
    Executor,
    TaskFailedError,
    TaskLedger,
    executor_option_problem,
    make_executor,
    map_reduce,
    run_sweep,
)

# ----------------------------------------------------------------------------- tasks


def square(x: int) -> int:
    return x * x


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x * x


def fails_once(arg: tuple[str, int]) -> int:
    """Fails on its first attempt (a marker file remembers it across processes)."""
    marker, x = arg
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError(f"transient failure of {x}")
    return -x


def fails_until(arg: tuple[str, int]) -> int:
    """Fails while the file ``arg[0]`` does not exist."""
    gate, x = arg
    if not os.path.exists(gate):
        raise RuntimeError(f"{x}: not yet")
    return x + 100


def first_is_slow(x: int) -> list[int]:
    """Shard 0 finishes last on a parallel backend."""
    if x == 0:
        time.sleep(1.0)
    return [x]


def nap(x: float) -> float:
    time.sleep(x)
    return x


def hangs_on_zero(x: int) -> int:
    if x == 0:
        time.sleep(300)
    return x


# ----------------------------------------------------------------------------- backends


def _ray_cluster() -> Callable[[], None]:
    """A private local Ray with 2 CPUs (reused if this process already runs one); returns
    what shuts it down again."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        return lambda: None
    # workers import this module's task functions by name: the tests directory and the
    # driver's own PYTHONPATH (which the runtime env would otherwise replace)
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                         os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return ray.shutdown


_SETUP: dict[str, Callable[[], Callable[[], None]]] = {"ray": _ray_cluster}
"Backends that need a service running first: kind -> start function returning its stop."


@pytest.fixture(scope="module", params=EXECUTOR_KINDS)
def ex(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """One executor per backend for the module, with two workers where it takes them."""
    kind = request.param
    stop = _SETUP.get(kind, lambda: lambda: None)()
    workers = None if "workers" in BACKENDS[kind].refuses else 2
    executor = make_executor(kind, workers=workers)
    try:
        # start every worker before any test times anything
        list(executor.map(nap, [0.3] * executor.workers, key=lambda _: os.urandom(8).hex()))
        yield executor
    finally:
        executor.close()
        stop()


def _parallel(ex: Executor) -> bool:
    return ex.workers > 1


# ----------------------------------------------------------------------------- the contract


def test_same_results_and_order_semantics(ex):
    outs = list(ex.map(square, range(10), key=str))
    assert sorted(o.key for o in outs) == [str(i) for i in range(10)]  # each task once
    assert {o.key: o.result for o in outs} == {str(i): i * i for i in range(10)}
    for o in outs:
        assert o.ok and o.error is None and o.attempts == 1
        assert o.seconds >= 0 and ":" in o.worker  # host:pid of the process that ran it
    if not _parallel(ex):
        assert [o.key for o in outs] == [str(i) for i in range(10)]  # task order


def test_outcomes_arrive_in_completion_order(ex):
    keys = [o.key for o in ex.map(first_is_slow, range(4), key=str)]
    assert sorted(keys) == ["0", "1", "2", "3"]
    if _parallel(ex):
        assert keys[-1] == "0"  # the slow first task did not hold the others back
    else:
        assert keys == ["0", "1", "2", "3"]


def test_a_raising_task_is_reported_and_the_rest_complete(ex):
    outs = {o.key: o for o in ex.map(fails_on_three, range(6), key=str, retries=0)}
    bad = outs.pop("3")
    assert not bad.ok and bad.result is None and bad.attempts == 1
    assert bad.error.startswith("ValueError: bad input 3") and "Traceback" in bad.error
    assert {k: o.result for k, o in outs.items()} == {str(i): i * i for i in (0, 1, 2, 4, 5)}
    assert all(o.ok for o in outs.values())


def test_retries_are_counted_the_same(ex, tmp_path):
    tasks = [(str(tmp_path / f"marker-{i}"), i) for i in range(3)]
    outs = {o.key: o for o in ex.map(fails_once, tasks, key=lambda t: t[1], retries=1)}
    assert {k: (o.ok, o.result, o.attempts) for k, o in outs.items()} == {
        "0": (True, 0, 2), "1": (True, -1, 2), "2": (True, -2, 2)}
    out = {o.key: o for o in ex.map(fails_on_three, [3, 4], key=str, retries=2)}
    assert not out["3"].ok and out["3"].attempts == 3  # 1 + retries
    assert out["4"].ok and out["4"].attempts == 1


def test_a_sweep_resumes_through_the_ledger(ex, tmp_path):
    gate = tmp_path / "gate"
    tasks = [(str(gate), i) for i in range(6)]
    with TaskLedger(tmp_path / "ledger.sqlite") as ledger:
        first = {o.key: o for o in run_sweep(ex, fails_until, tasks, record=ledger,
                                             key=lambda t: t[1], retries=0)}
        assert len(first) == 6 and not any(o.ok for o in first.values())
        assert ledger.failed_keys() == set(first) and ledger.done_keys() == set()
        gate.touch()
        # an interrupted run: the caller stops after two outcomes
        it = run_sweep(ex, fails_until, tasks, record=ledger, key=lambda t: t[1], retries=0)
        done_first = [next(it).key, next(it).key]
        it.close()
        assert ledger.done_keys() >= set(done_first)
        done = ledger.done_keys()
        rest = [o.key for o in run_sweep(ex, fails_until, tasks, record=ledger,
                                         key=lambda t: t[1])]
        assert sorted(rest) == sorted(set(map(str, range(6))) - done)  # only what was left
        assert len(ledger) == 6 and ledger.done_keys() == {str(i) for i in range(6)}
        assert {k: o.result for k, o in ledger.outcomes().items()} == {
            str(i): i + 100 for i in range(6)}


def test_map_reduce_merges_in_shard_order_whatever_the_completion_order(ex):
    concat = list.__add__  # not commutative: the merge order shows in the result
    assert map_reduce(ex, first_is_slow, concat, range(5)) == [0, 1, 2, 3, 4]
    assert map_reduce(ex, first_is_slow, concat, range(3), initial=[-1]) == [-1, 0, 1, 2]
    assert map_reduce(ex, first_is_slow, concat, [], initial=[]) == []
    with pytest.raises(TaskFailedError, match=r"key='3' after 2 attempt\(s\): ValueError: bad input 3"):
        map_reduce(ex, fails_on_three, max, range(5), retries=1)


def test_timeouts_stop_the_attempt_or_are_refused(ex):
    name = f"{type(ex).__name__}.map"
    if not ex.supports_timeout:
        with pytest.raises(ValueError) as err:
            ex.map(square, [1], timeout=5.0)
        msg = str(err.value)
        assert msg.startswith(f"The 'timeout' parameter of {name} must be None for the "
                              f"{ex.kind} executor (it ") and msg.endswith("Got 5.0 instead.")
        assert "\n" not in msg  # the one-line error
        return
    with pytest.raises(ValueError, match=rf"The 'timeout' parameter of {name} must be a float in \(0"):
        ex.map(square, [1], timeout=0.0)
    t0 = time.monotonic()
    outs = {o.key: o for o in ex.map(hangs_on_zero, [0, 1, 2], key=str, retries=0, timeout=4.0)}
    assert time.monotonic() - t0 < 120
    assert not outs["0"].ok and outs["0"].attempts == 1
    assert outs["0"].error.startswith("TimeoutError: the attempt ran longer than timeout=4 s")
    assert [(outs[k].ok, outs[k].result) for k in ("1", "2")] == [(True, 1), (True, 2)]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("kind", EXECUTOR_KINDS)
@pytest.mark.parametrize("option, value", [("workers", 3), ("address", "auto"), ("timeout", 5.0)])
def test_one_options_check_for_the_api_and_the_config(kind, option, value):
    """``make_executor`` / ``Executor.map`` and ``repscope analyze``'s config check refuse the
    same options for the same backend, with the backend's own reason, each in its vocabulary."""
    from repscope.analysis.plan import AnalyzeConfig, PlanError, check_config

    why = BACKENDS[kind].refuses.get(option)
    if why is None:
        assert executor_option_problem(kind, **{option: value}) is None
        return
    config_name = "task_timeout" if option == "timeout" else option
    cfg = AnalyzeConfig(executor=kind, **{config_name: value})
    with pytest.raises(PlanError, match=rf"^The '{config_name}' option needs executor ") as err:
        check_config(cfg)  # refused before any measure is resolved
    assert f"the {kind} executor {why}. Got {config_name}={value!r}" in str(err.value)
    if option != "timeout":  # a map() argument: test_timeouts_stop_the_attempt_or_are_refused
        with pytest.raises(ValueError, match=rf"^The '{option}' parameter of make_executor must "
                                             rf"be None.* for kind='{kind}' \(it ") as err:
            make_executor(kind, **{option: value})
    assert why in str(err.value) and "\n" not in str(err.value)
