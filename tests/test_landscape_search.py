"""The d-sweep: the known answer (least squares of rank r has d_int100 = r, for every
projection), resuming from the database, the executors, your own task, and input checks."""

from __future__ import annotations

import functools

import duckdb
import numpy as np
import pytest
import torch
from torch import nn

import repscope.landscape.search as search
from repscope.landscape import (
    LandscapeDB,
    LandscapeError,
    SupervisedTask,
    TrainConfig,
    intrinsic_dimension_sweep,
)
from repscope.landscape.search import geometric_grid, plan_sweep
from repscope.landscape.tasks import task_fingerprint


@pytest.mark.parametrize("projection", ["dense", "sparse", "fastfood"])
@pytest.mark.parametrize("rank", [2, 5, 9])
def test_least_squares_d_int100_equals_the_rank(projection, rank):
    """A random d-dimensional subspace through theta_0 reaches the least-squares optimum iff it
    spans the r directions the loss depends on modulo the null space: generically iff d >= r."""
    res = intrinsic_dimension_sweep("lstsq", task_params={"rank": rank}, fractions=(1.0,),
                                    seeds=(0,), projection=projection, precision=0.0)
    est = res.d_int(1.0)
    assert est.value == rank
    assert est.bracket == (rank - 1, rank)
    assert res.n_params == 24
    below = res.values[list(res.dims).index(rank - 1), 0]
    assert below > res.baseline[0] * (1 + 1e-3)  # one dimension short is clearly worse


def test_every_seed_finds_the_rank_and_d_int90_is_below(tmp_path):
    res = intrinsic_dimension_sweep("lstsq", task_params={"rank": 6}, fractions=(0.5, 1.0),
                                    seeds=(0, 1, 2), precision=0.0)
    full = res.d_int(1.0)
    assert full.per_seed == (6.0, 6.0, 6.0) and full.ci == (6.0, 6.0)
    half = res.d_int(0.5)
    assert 1 <= half.value < 6 and half.threshold > res.baseline_mean
    assert list(res.dims) == sorted(set(res.dims))


def test_resume_recomputes_only_missing_runs(tmp_path, monkeypatch):
    db_path = tmp_path / "db"
    kw = dict(task_params={"rank": 3}, fractions=(1.0,), seeds=(0, 1), precision=0.0)
    first = intrinsic_dimension_sweep("lstsq", db=db_path, **kw)
    db = LandscapeDB.at(db_path)
    n_rows = len(db.done_keys())
    assert n_rows == 2 * (2 + len(first.dims))
    with duckdb.connect(str(db.path)) as con:
        con.execute("DELETE FROM landscape_points WHERE kind = 'subspace' AND d = 2")
    calls = []
    real = search.run_point

    def counting(point):
        calls.append((point.kind, point.d, point.seed))
        return real(point)

    monkeypatch.setattr(search, "run_point", counting)
    second = intrinsic_dimension_sweep("lstsq", db=db_path, **kw)
    assert sorted(calls) == [("subspace", 2, 0), ("subspace", 2, 1)]
    assert np.array_equal(second.values, first.values)
    assert second.d_int(1.0) == first.d_int(1.0)
    calls.clear()
    third = intrinsic_dimension_sweep("lstsq", db=db_path, **kw)
    assert calls == [] and third.d_int(1.0) == first.d_int(1.0)
    (key, plan, stored), = db.sweeps()
    assert plan["task_name"] == "lstsq" and stored.d_int(1.0).value == 3


@pytest.mark.slow
def test_process_executor_gives_the_local_result():
    from repscope.analysis.executors import make_executor

    kw = dict(task_params={"rank": 4}, fractions=(1.0,), seeds=(0, 1), precision=0.0)
    local = intrinsic_dimension_sweep("lstsq", **kw)
    with make_executor("process", workers=2, threads_per_worker=1) as ex:
        pooled = intrinsic_dimension_sweep("lstsq", executor=ex, **kw)
    assert np.array_equal(pooled.dims, local.dims)
    assert np.allclose(pooled.values, local.values, rtol=1e-12)
    assert pooled.d_int(1.0) == local.d_int(1.0)


# -- your own task --------------------------------------------------------------------------


def _blobs(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return centres[y] + 0.4 * torch.randn(n, 2, generator=g), y


def _tiny_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _broken(seed: int) -> nn.Module:
    raise RuntimeError("cannot build this model")


def _own_task(**kw) -> SupervisedTask:
    x, y = _blobs()
    return SupervisedTask("blobs", model=_tiny_mlp, train=(x[:160], y[:160]),
                          test=(x[160:], y[160:]),
                          training=TrainConfig(lr=0.05, subspace_lr=0.2, epochs=15,
                                               batch_size=32), **kw)


def test_own_task_sweep():
    task = _own_task()
    res = intrinsic_dimension_sweep(task, seeds=(0, 1), d_max=32, growth=4.0)
    assert res.task == "blobs" and res.n_params == 2 * 16 + 16 + 16 * 3 + 3
    assert res.baseline_mean > 0.95
    est = res.d_int(0.9)
    assert not est.censored and 1 <= est.value <= 32
    assert res.values.shape == (len(res.dims), 2)
    assert res.params["metric_label"] == "accuracy on the test split (fraction correct)"


def test_fingerprint_follows_data_and_model():
    a = _own_task()
    assert task_fingerprint(a) == task_fingerprint(_own_task())
    x, y = _blobs(seed=1)
    other = SupervisedTask("blobs", model=_tiny_mlp, train=(x, y), training=a.training)
    assert task_fingerprint(other) != task_fingerprint(a)
    wider = SupervisedTask("blobs", model=functools.partial(_tiny_mlp), train=a.train,
                           test=a.test, training=TrainConfig(epochs=3))
    assert task_fingerprint(wider) != task_fingerprint(a)


def test_failing_runs_stop_the_sweep_with_one_line():
    x, y = _blobs()
    task = SupervisedTask("broken", model=_tiny_mlp, train=(x, y))
    plan = plan_sweep(task, seeds=(0,))
    object.__setattr__(task, "model", _broken)  # breaks after planning, in every worker run
    with pytest.raises(LandscapeError, match=r"^2 run\(s\) of broken failed after their "
                                             r"retries; first: init d=None seed=0: RuntimeError: "
                                             r"cannot build this model\. Running the sweep again "
                                             r"resumes"):
        search.run_sweep_plan(plan, retries=0)


def test_geometric_grid():
    assert geometric_grid(1, 24, 2.0) == (1, 2, 4, 8, 16, 24)
    assert geometric_grid(10, 1000, 3.0) == (10, 30, 90, 270, 810, 1000)
    assert geometric_grid(5, 5, 2.0) == (5,)
    assert geometric_grid(1, 10, 1.2) == (1, 2, 3, 4, 5, 6, 7, 8, 10)
    assert geometric_grid(3, 1000, 10.0) == (3, 30, 300, 1000)


def test_sweep_input_errors():
    task = _own_task()
    with pytest.raises(ValueError, match=r"'task' parameter of ready_task must be one of "
                                         r"\{'chatterbot-minilm'.*Got 'mnist-mlp'"):
        plan_sweep("mnist-mlp")
    with pytest.raises(ValueError, match=r"'fractions' parameter of intrinsic_dimension_sweep "
                                         r"must be a float in \(0, 1\]\. Got 1.5"):
        plan_sweep(task, fractions=(1.5,))
    with pytest.raises(ValueError, match=r"'d_max' parameter of intrinsic_dimension_sweep must "
                                         r"be an int in \[1, 99\]\. Got 100"):
        plan_sweep(task, d_max=100)
    with pytest.raises(ValueError, match=r"'seeds' parameter of intrinsic_dimension_sweep must "
                                         r"be a non-empty sequence \(seeds distinct\)"):
        plan_sweep(task, seeds=(1, 1))
    with pytest.raises(ValueError, match=r"'task_params' parameter of intrinsic_dimension_sweep "
                                         r"must be empty unless 'task' is a ready task's name"):
        plan_sweep(task, task_params={"rank": 2})
    with pytest.raises(ValueError, match=r"'d_min' parameter of intrinsic_dimension_sweep must "
                                         r"be an int in \[5, inf\)\. Got 3"):
        plan_sweep(task, said=True, d_min=3)
    with pytest.raises(ValueError, match=r"'params' parameter of ready_task must be keyword "
                                         r"parameters of task 'lstsq'"):
        plan_sweep("lstsq", task_params={"ranks": 3})
    with pytest.raises(ValueError, match=r"'train' parameter of SupervisedTask must be tensors "
                                         r"with the same first dimension"):
        SupervisedTask("bad", model=_tiny_mlp, train=(torch.zeros(3, 2), torch.zeros(4)))
