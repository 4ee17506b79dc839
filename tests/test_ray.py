"""The Ray executor on one local Ray instance with 2 CPUs, shared by every test here.

Same results as the local executor, failures reported and retried with the same accounting,
a crashed Ray worker retried, a user's Ray left running, and a driver killed mid-sweep that
resumes without recomputing or duplicating finished tasks.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from repscope.analysis.executors import (  # noqa: E402
    RayExecutor,
    TaskLedger,
    make_executor,
    map_reduce,
)

# ----------------------------------------------------------------------------- tasks


def layer_stats(arg: tuple[str, int]) -> dict:
    path, layer = arg
    X = np.load(path, mmap_mode="r")[layer]  # (n, d)
    ev = np.linalg.eigvalsh(np.cov(X, rowvar=False))[::-1]  # (d,)
    return {"pr": float(ev.sum() ** 2 / (ev**2).sum()), "mean_norm": float(
        np.linalg.norm(X, axis=1).mean())}


def failing_task(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x * x


def crash_once(arg: tuple[str, int]) -> int:
    """Kills its Ray worker process on its first attempt."""
    marker, x = arg
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(7)
    return -x


def shard_sums(arg: tuple[str, int, int]) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, column sums and Gram matrix of a shard: mergeable by addition."""
    path, start, stop = arg
    X = np.asarray(np.load(path, mmap_mode="r")[start:stop], dtype=np.float64)  # (b, d)
    return len(X), X.sum(axis=0), X.T @ X


def add_sums(a: tuple, b: tuple) -> tuple:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def covariance(sums: tuple) -> np.ndarray:
    n, s, G = sums
    return (G - np.outer(s, s) / n) / (n - 1)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for the module; reuses a Ray the session already started."""
    started = not ray.is_initialized()
    auth = os.environ.get("RAY_AUTH_MODE")
    if started:
        # a private cluster on this machine: no token, so the killed-driver test's subprocess
        # can connect to it as a second driver
        os.environ["RAY_AUTH_MODE"] = "disabled"
        # the workers import this module's task functions by name, as they would a user's
        # installed package (and the driver's own PYTHONPATH, which the env var would hide)
        path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                             os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


@pytest.fixture(scope="module")
def ray_ex(ray_cluster):
    ex = make_executor("ray")
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    X = np.random.default_rng(3).normal(size=(4, 300, 6)) * np.arange(1, 7)  # (layers, n, d)
    path = tmp_path_factory.mktemp("ray") / "acts.npy"
    np.save(path, X)
    return str(path)


# ----------------------------------------------------------------------------- tests


def test_ray_executor_reuses_and_keeps_the_users_ray(ray_cluster, ray_ex):
    assert isinstance(ray_ex, RayExecutor) and ray_ex.workers == 2
    with make_executor("ray", workers=1) as one:
        assert one.workers == 1
        assert [o.result for o in one.map(failing_task, [2], key=str)] == [4]
    assert ray.is_initialized()  # close() did not shut down a Ray it did not start


def test_local_and_ray_give_the_same_results(ray_ex, data_file):
    tasks = [(data_file, i) for i in range(4)]
    ref = {o.key: o.result for o in make_executor("local").map(layer_stats, tasks,
                                                                  key=lambda t: t[1])}
    outs = list(ray_ex.map(layer_stats, tasks, key=lambda t: t[1]))
    assert sorted(o.key for o in outs) == ["0", "1", "2", "3"]
    for o in outs:
        assert o.ok and o.attempts == 1 and o.seconds >= 0 and ":" in o.worker
        assert o.result == pytest.approx(ref[o.key], rel=1e-12)


def test_a_raising_task_on_ray_is_reported_and_the_rest_complete(ray_ex):
    outs = {o.key: o for o in ray_ex.map(failing_task, range(8), key=str, retries=2)}
    bad = outs.pop("3")
    assert not bad.ok and bad.attempts == 3 and bad.result is None
    assert bad.error.startswith("ValueError: bad input 3") and "Traceback" in bad.error
    assert all(o.ok and o.attempts == 1 and o.result == int(k) ** 2 for k, o in outs.items())


def test_a_crashed_ray_worker_is_retried_with_the_same_accounting(ray_ex, tmp_path):
    tasks = [(str(tmp_path / f"m{i}"), i) for i in range(2)]
    outs = {o.key: o for o in ray_ex.map(crash_once, tasks, key=lambda t: t[1], retries=1)}
    assert [(outs[k].result, outs[k].attempts) for k in ("0", "1")] == [(0, 2), (-1, 2)]
    tasks = [(str(tmp_path / "n0"), 0)]
    (out,) = ray_ex.map(crash_once, tasks, key=lambda t: t[1], retries=0)
    assert not out.ok and out.attempts == 1 and "Error" in out.error.splitlines()[0]


def sleeper(x: int) -> int:
    if x == 0:
        time.sleep(120)
    return x


def test_a_ray_attempt_past_the_timeout_is_killed(ray_ex):
    # the clock starts at submission: warm both workers first so start-up does not count
    assert sorted(o.result for o in ray_ex.map(sleeper, [5, 6], key=str)) == [5, 6]
    t0 = time.monotonic()
    outs = {o.key: o for o in ray_ex.map(sleeper, [0, 1, 2], key=str, retries=0, timeout=6.0)}
    assert time.monotonic() - t0 < 60
    assert not outs["0"].ok and outs["0"].error.startswith("TimeoutError: the attempt ran longer")
    assert [outs[k].result for k in ("1", "2")] == [1, 2], outs["1"].error


def test_map_reduce_on_ray_equals_local(ray_ex, data_file):
    flat = str(Path(data_file).with_name("flat.npy"))
    np.save(flat, np.load(data_file).reshape(-1, 6))  # (1200, 6)
    shards = [(flat, a, a + 100) for a in range(0, 1200, 100)]
    s_ray = map_reduce(ray_ex, shard_sums, add_sums, shards)
    s_local = map_reduce(make_executor("local"), shard_sums, add_sums, shards)
    assert s_ray[0] == 1200
    np.testing.assert_allclose(covariance(s_ray), covariance(s_local), rtol=1e-12)
    np.testing.assert_allclose(covariance(s_ray), np.cov(np.load(flat).T), rtol=1e-10)


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
        with TaskLedger(sys.argv[1]) as led, make_executor("ray", address=sys.argv[3]) as ex:
            tasks = [(sys.argv[2], x) for x in range(24)]
            for out in run_sweep(ex, work, tasks, record=led, key=lambda t: t[1], retries=0):
                pass
    """
)


@pytest.mark.slow
def test_a_killed_ray_driver_resumes_without_recomputing_or_duplicating(ray_cluster, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    ledger, compute_log = tmp_path / "ledger.sqlite", tmp_path / "computed.txt"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a private test cluster
    cmd = [sys.executable, str(script), str(ledger), str(compute_log), ray_cluster]
    err = open(tmp_path / "driver.err", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=err)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if _done_count(ledger) >= 4:
                break
        assert proc.poll() is None, "the driver ended before it could be killed: " + \
            (tmp_path / "driver.err").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        err.close()
    with TaskLedger(ledger) as led:
        done_before = led.done_keys()
    assert 4 <= len(done_before) < 24
    subprocess.run(cmd, env=env, check=True, timeout=180, stderr=subprocess.DEVNULL)
    with TaskLedger(ledger) as led:
        outs = led.outcomes()
    assert sorted(outs, key=int) == [str(i) for i in range(24)]  # one row per task
    assert all(o.ok and o.result == int(k) ** 2 for k, o in outs.items())
    computed = compute_log.read_text().split()
    assert all(computed.count(k) == 1 for k in done_before)  # finished work is not redone
    assert set(computed) == set(outs)


def _tiny_store(path: Path):
    """A complete 3-layer ActivationStore of 240 rows, d = 6."""
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(5)
    layers = ("embeddings", "encoder.layer.0", "encoder.layer.1")
    writer = ActivationStore.create(
        path, layers={name: 6 for name in layers}, shard_rows=100,
        identity={"model": "ray-toy"},
        info={"model": {"id": "ray-toy", "weights_sha256": "ab" * 8},
              "data": {"id": "ray-toy-data", "sha256": "cd" * 8}, "pooling": "none"})
    mix = rng.normal(size=(3, 6))
    for c in range(2):
        base = rng.normal(size=(120, 3)) @ mix  # (rows, d)
        acts = {name: (base + 0.3 * (i + 1) * rng.normal(size=(120, 6))).astype(np.float32)
                for i, name in enumerate(layers)}
        meta = {"doc_id": np.full(120, c), "position": np.arange(120),
                "token_id": np.arange(120) % 7}
        writer.append(acts, meta, chunk=c)
    return writer.finish()


@pytest.mark.slow
def test_the_same_plan_gives_the_same_results_on_local_and_ray(ray_cluster, tmp_path):
    from repscope.analysis.db import load_results
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    store = _tiny_store(tmp_path / "store")
    frames = {}
    for kind in ("local", "ray"):
        cfg = AnalyzeConfig(store=store.path, out=tmp_path / kind, executor=kind,
                            measures=("participation_ratio", "twonn", "cka_linear"),
                            pairs="adjacent", max_rows=200, seed=1, report=False)
        run = analyze(cfg)
        assert run.n_failed == 0
        frames[kind] = load_results(run.db_path).sort_values("key").reset_index(drop=True)
    local, on_ray = frames["local"], frames["ray"]
    assert len(local) == 3 + 3 + 2  # 3 layers x 2 single measures + 2 adjacent pairs
    assert list(local.key) == list(on_ray.key)
    assert list(local.measure) == list(on_ray.measure)
    np.testing.assert_allclose(on_ray.value, local.value, rtol=1e-9)
