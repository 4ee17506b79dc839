"""Executors: same results everywhere, failures reported, retries counted, sweeps resume.

Task functions live at module level so spawned workers can import them; this module imports
nothing heavy at the top (no torch), so a worker that imports it starts fast.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from repscope.analysis.executors import (
    Executor,
    TaskFailedError,
    TaskLedger,
    TaskOutcome,
    _Attempt,
    _call,
    make_executor,
    map_reduce,
    run_sweep,
)

# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class LayerTask:
    """A measure over one 'layer' stored on disk: the task reads its own rows."""

    path: str
    layer: int

    @property
    def key(self) -> str:
        return f"layer={self.layer}"


def layer_spectrum_task(task: LayerTask) -> dict:
    X = np.load(task.path, mmap_mode="r")[task.layer]  # (n, d)
    ev = np.linalg.eigvalsh(np.cov(X, rowvar=False))[::-1]  # (d,)
    return {"pr": float(ev.sum() ** 2 / (ev**2).sum()), "top": float(ev[0])}


def failing_task(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x * x


def flaky_task(arg: tuple[str, int]) -> int:
    """Fails on its first attempt (a marker file remembers it across processes)."""
    marker, x = arg
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("transient failure")
    return x + 100


def dying_task(arg: tuple[str, int]) -> int:
    """Kills its worker process on the first attempt of x == 0."""
    marker, x = arg
    if x == 0 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(3)
    time.sleep(0.05)
    return x


def shard_moments(arg: tuple[str, int, int]):
    from repscope.stats import Moments

    path, start, stop = arg
    X = np.load(path, mmap_mode="r")[start:stop]  # (b, d)
    return Moments.init(X.shape[1]).update(X)


def square(x: int) -> int:
    return x * x


def timed_task(arg: tuple[str, str]) -> str:
    """'hang' never finishes in time; 'slow_once' is slow on its first attempt only."""
    marker, what = arg
    if what == "hang":
        time.sleep(120)
    if what == "slow_once" and not os.path.exists(marker):
        Path(marker).touch()
        time.sleep(10)
    return what


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def layers_file(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 120, 8)) * np.linspace(1, 3, 8)  # (layers, n, d)
    path = tmp_path_factory.mktemp("layers") / "acts.npy"
    np.save(path, X)
    return str(path)


@pytest.fixture(scope="module")
def pool():
    with make_executor("process", workers=2) as ex:
        yield ex


def _by_key(outcomes) -> dict[str, TaskOutcome]:
    out = {o.key: o for o in outcomes}
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- behaviour


def test_local_and_process_give_the_same_results(layers_file, pool):
    tasks = [LayerTask(layers_file, i) for i in range(6)]
    with make_executor("local") as local:
        ref = _by_key(local.map(layer_spectrum_task, tasks))
    got = _by_key(pool.map(layer_spectrum_task, tasks))
    assert list(ref) == list(got) == [t.key for t in tasks]
    for k in ref:
        assert ref[k].ok and got[k].ok
        assert got[k].result == pytest.approx(ref[k].result, rel=1e-12)
    # an independent check of one value
    X = np.load(layers_file)[2]
    ev = np.linalg.eigvalsh(np.cov(X.T))
    assert ref["layer=2"].result["pr"] == pytest.approx(ev.sum() ** 2 / (ev**2).sum(), rel=1e-12)
    assert {o.worker.split(":")[0] for o in got.values()} == {os.uname().nodename}


def test_local_runs_in_task_order():
    with make_executor() as ex:
        assert [o.key for o in ex.map(square, [5, 1, 3], key=str)] == ["5", "1", "3"]


@pytest.mark.parametrize("kind", ["local", "process"])
def test_raising_task_is_reported_and_the_rest_complete(kind, pool):
    ex = pool if kind == "process" else make_executor("local")
    outs = _by_key(ex.map(failing_task, range(8), key=str, retries=2))
    assert len(outs) == 8
    bad = outs.pop("3")
    assert not bad.ok and bad.result is None and bad.attempts == 3
    assert bad.error.startswith("ValueError: bad input 3")
    assert "Traceback" in bad.error and "failing_task" in bad.error
    assert all(o.ok and o.attempts == 1 and o.result == int(k) ** 2 for k, o in outs.items())


@pytest.mark.parametrize("kind", ["local", "process"])
def test_a_transient_failure_is_retried_and_counted(kind, pool, tmp_path):
    ex = pool if kind == "process" else make_executor("local")
    tasks = [(str(tmp_path / f"m{i}"), i) for i in range(3)]
    outs = _by_key(ex.map(flaky_task, tasks, key=lambda t: t[1], retries=1))
    assert [(o.result, o.attempts, o.error) for o in outs.values()] == [
        (100, 2, None), (101, 2, None), (102, 2, None)]
    # without retries the first failure is final
    tasks = [(str(tmp_path / f"n{i}"), i) for i in range(2)]
    outs = _by_key(ex.map(flaky_task, tasks, key=lambda t: t[1], retries=0))
    assert all(o.attempts == 1 and o.error.startswith("RuntimeError: transient") for o in outs.values())


def test_a_dead_worker_fails_an_attempt_and_the_pool_recovers(tmp_path):
    tasks = [(str(tmp_path / "died"), i) for i in range(3)]
    with make_executor("process", workers=1) as ex:
        outs = _by_key(ex.map(dying_task, tasks, key=lambda t: t[1], retries=2))
    assert [o.result for o in outs.values()] == list(range(3))
    assert outs["0"].attempts == 2  # its first attempt killed the worker


def test_progress_view_shows_done_running_failed(capsys):
    with make_executor("local") as ex:
        list(ex.map(failing_task, range(5), key=str, retries=0, progress=True))
    err = capsys.readouterr().err
    assert "5/5" in err and "1 failed" in err and "running" in err


# ----------------------------------------------------------------------------- scheduler


class FakeExecutor(Executor):
    """Completes attempts in reverse submission order and tracks concurrency."""

    kind = "fake"

    def __init__(self):
        self.workers = 3
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled: list[int] = []
        self._next = 0
        self._results: dict[int, _Attempt] = {}

    def _submit(self, fn, task):
        self._next += 1
        self._results[self._next] = _call(fn, task)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self._next

    def _wait(self, handles):
        return [max(handles)]

    def _collect(self, handle):
        self.in_flight -= 1
        return self._results.pop(handle)

    def _cancel(self, handles):
        self.cancelled += handles


def test_in_flight_attempts_are_bounded_and_early_close_cancels():
    ex = FakeExecutor()
    outs = list(ex.map(square, range(20), key=str))
    assert sorted(int(o.key) for o in outs) == list(range(20))
    assert [int(o.key) for o in outs] != list(range(20))  # completion order, not task order
    assert ex.max_in_flight == 3
    ex = FakeExecutor()
    list(ex.map(square, range(20), key=str, max_in_flight=5))
    assert ex.max_in_flight == 5
    ex = FakeExecutor()
    it = ex.map(square, range(20), key=str)
    next(it)
    it.close()
    assert len(ex.cancelled) == 2 and ex.in_flight == 2


def test_bad_arguments_are_refused_before_any_work():
    ex = make_executor("local")
    with pytest.raises(ValueError, match=r"unique key per task; the key '1' occurs more than once"):
        ex.map(square, [1, 1])
    with pytest.raises(ValueError, match=r"The 'retries' parameter of LocalExecutor.map must be an int in \[0, inf\). Got -1"):
        ex.map(square, [1], retries=-1)
    with pytest.raises(ValueError, match=r"The 'max_in_flight' parameter of LocalExecutor.map must be an int in \[1, inf\). Got 0"):
        ex.map(square, [1], max_in_flight=0)
    with pytest.raises(ValueError, match=r"The 'fn' parameter of LocalExecutor.map must be a callable. Got 3"):
        ex.map(3, [1])
    with pytest.raises(ValueError, match=r"The 'kind' parameter of make_executor must be one of \{'local', 'process', 'ray'\}. Got 'dask'"):
        make_executor("dask")
    with pytest.raises(ValueError, match=r"The 'workers' parameter of make_executor must be None or 1 for kind='local'"):
        make_executor("local", workers=4)
    with pytest.raises(ValueError, match=r"The 'address' parameter of make_executor must be None for kind='process'"):
        make_executor("process", address="auto")
    with pytest.raises(ValueError, match=r"The 'workers' parameter of ProcessExecutor must be an int in \[1, inf\). Got 0"):
        make_executor("process", workers=0)
    with pytest.raises(TypeError, match=r"option\(s\) \['num_cpus'\] that kind='process' does not take"):
        make_executor("process", num_cpus=2)
    with pytest.raises(TypeError, match="needs a picklable top-level function"):
        make_executor("process", workers=1).map(lambda x: x, [1])


def test_an_attempt_past_the_timeout_is_stopped_and_others_are_not_charged(tmp_path):
    """A hung task fails with a TimeoutError after each attempt's timeout; the pool is
    replaced, and an attempt lost with it is re-run without using one of its retries."""
    tasks = [(str(tmp_path / "h"), "hang"), (str(tmp_path / "q"), "quick"),
             (str(tmp_path / "s"), "slow_once")]
    t0 = time.monotonic()
    with make_executor("process", workers=2) as ex:
        outs = _by_key(ex.map(timed_task, tasks, key=lambda t: t[1], retries=0, timeout=8.0))
    assert time.monotonic() - t0 < 60  # the 120 s task did not run to its end
    hang = outs["hang"]
    assert not hang.ok and hang.attempts == 1 and hang.result is None
    assert hang.error.startswith("TimeoutError: the attempt ran longer than timeout=8 s")
    assert outs["quick"].ok and outs["quick"].result == "quick"
    slow = outs["slow_once"]  # started after 'quick', still running when 'hang' expired
    assert slow.ok and slow.result == "slow_once" and slow.attempts == 1


def test_timeout_needs_an_executor_that_can_stop_a_task():
    with pytest.raises(ValueError, match=r"The 'timeout' parameter of LocalExecutor.map must be None for the local executor"):
        make_executor("local").map(square, [1], timeout=1.0)
    with pytest.raises(ValueError, match=r"The 'timeout' parameter of ProcessExecutor.map must be a float in \(0"):
        make_executor("process", workers=1).map(square, [1], timeout=0)
    with pytest.raises(ValueError, match=r"The 'timeout' parameter of map_reduce must be None for the local executor"):
        map_reduce(make_executor("local"), square, max, [1, 2], timeout=3)


# ----------------------------------------------------------------------------- map + merge


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> str:
    X = np.random.default_rng(1).normal(size=(1000, 7)) + 5.0  # (n, d)
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    np.save(path, X)
    return str(path)


def test_map_reduce_of_moments_equals_the_batch_result(rows_file, pool):
    rng = np.random.default_rng(2)
    cuts = np.unique(np.r_[0, np.sort(rng.integers(1, 1000, size=9)), 1000])
    shards = [(rows_file, int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    from repscope.stats import Moments

    X = np.load(rows_file)
    with make_executor("local") as local:
        m_local = map_reduce(local, shard_moments, Moments.merge, shards)
    m_pool = map_reduce(pool, shard_moments, Moments.merge, shards)
    assert m_local.n == m_pool.n == 1000
    np.testing.assert_allclose(m_local.covariance(), np.cov(X.T), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_pool.covariance(), m_local.covariance(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m_pool.mean, X.mean(0), rtol=1e-12)


def test_map_reduce_raises_on_a_failed_shard_and_on_no_shards():
    ex = make_executor("local")
    assert map_reduce(ex, square, lambda a, b: a + b, [1, 2, 3]) == 14
    assert map_reduce(ex, square, lambda a, b: a + b, [], initial=0) == 0
    with pytest.raises(TaskFailedError, match=r"1 task\(s\) failed after their retries; first: key='1' after 2 attempt\(s\): ValueError: bad input 3"):
        map_reduce(ex, failing_task, lambda a, b: a + b, [1, 3, 4])
    with pytest.raises(ValueError, match="map_reduce got no shards and no 'initial' value"):
        map_reduce(ex, square, lambda a, b: a + b, [])


# ----------------------------------------------------------------------------- resume


def test_ledger_keeps_one_row_per_key_and_survives_reopening(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with TaskLedger(path) as led:
        led.record(TaskOutcome("a", None, "ValueError: x", 2, 0.1, "h:1"))
        led.record(TaskOutcome("b", {"v": np.arange(3)}, None, 1, 0.2, "h:2"))
        led.record(TaskOutcome("a", 7.5, None, 1, 0.3, "h:1"))  # a rerun succeeded
        assert len(led) == 2
    with TaskLedger(path) as led:
        assert led.done_keys() == {"a", "b"} and led.failed_keys() == set()
        outs = led.outcomes()
        assert outs["a"] == TaskOutcome("a", 7.5, None, 1, 0.3, "h:1")
        np.testing.assert_array_equal(outs["b"].result["v"], np.arange(3))


def test_run_sweep_skips_done_tasks_and_reruns_failed_ones(tmp_path):
    ex = make_executor("local")
    with TaskLedger(tmp_path / "l.sqlite") as led:
        first = _by_key(run_sweep(ex, failing_task, range(6), record=led, key=str, retries=0))
        assert len(first) == 6 and not first["3"].ok
        assert led.done_keys() == {"0", "1", "2", "4", "5"} and led.failed_keys() == {"3"}
        second = list(run_sweep(ex, failing_task, range(8), record=led, key=str, retries=0))
        assert sorted(o.key for o in second) == ["3", "6", "7"]
        assert len(led) == 8
    with pytest.raises(ValueError, match="run_sweep needs a unique key per task"):
        run_sweep(ex, square, [2, 2], key=str)


def _done_count(ledger: Path) -> int:
    """Finished tasks in a ledger another process is writing (read-only, never blocks it)."""
    if not ledger.exists():
        return 0
    con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM outcomes WHERE ok = 1").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        con.close()


DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from repscope.analysis.executors import TaskLedger, make_executor, run_sweep

    def work(task):
        compute_log, x = task
        with open(compute_log, "a") as f:  # one line per computation
            f.write(f"{x}\\n")
        time.sleep(0.15)
        return x * x

    if __name__ == "__main__":
        with TaskLedger(sys.argv[1]) as led, make_executor("process", workers=2) as ex:
            tasks = [(sys.argv[2], x) for x in range(24)]
            for out in run_sweep(ex, work, tasks, record=led, key=lambda t: t[1], retries=0):
                pass
    """
)


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_recomputing_or_duplicating(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    ledger, compute_log = tmp_path / "ledger.sqlite", tmp_path / "computed.txt"
    cmd = [sys.executable, str(script), str(ledger), str(compute_log)]
    err = open(tmp_path / "driver.err", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if _done_count(ledger) >= 4:
                break
        assert proc.poll() is None, "the driver ended before it could be killed: " + \
            (tmp_path / "driver.err").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, like kill -9 of a job
        proc.wait()
        err.close()
    with TaskLedger(ledger) as led:
        done_before = led.done_keys()
    assert 4 <= len(done_before) < 24
    subprocess.run(cmd, check=True, timeout=120, stderr=subprocess.DEVNULL)
    with TaskLedger(ledger) as led:
        outs = led.outcomes()
    assert sorted(outs, key=int) == [str(i) for i in range(24)]  # one row per task
    assert all(o.ok and o.result == int(k) ** 2 for k, o in outs.items())
    computed = compute_log.read_text().split()
    assert all(computed.count(k) == 1 for k in done_before)  # finished work is not redone
    assert set(computed) == set(outs)


ORPHAN_DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from repscope.analysis.executors import make_executor

    def pid_then_sleep(x):
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(120)

    if __name__ == "__main__":
        ex = make_executor("process", workers=2)
        list(ex.map(pid_then_sleep, range(2), key=str))
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its (new) parent is dead
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_pool_workers_exit_when_the_driver_is_killed(tmp_path):
    script, pids_file = tmp_path / "orphans.py", tmp_path / "pids.txt"
    script.write_text(ORPHAN_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(pids_file)],
                            start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not pids_file.exists() or len(pids_file.read_text().split()) < 2):
            time.sleep(0.2)
        pids = [int(p) for p in pids_file.read_text().split()]
        assert len(pids) == 2
        proc.kill()  # only the driver: its workers must notice and exit on their own
        proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ImportError, match=r"The ray executor needs Ray: pip install 'repscope\[ray\]'"):
        make_executor("ray")
