"""The cost model of an exact neighbour search: its plan arithmetic against real runs.

Timings are compared with measured runs in ``benchmarks/scale.py`` (never in a test); here the
model's plan must match what a run does (bytes moved, query blocks, rows read) exactly, and its
predictions must scale as the arithmetic says.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from repscope.neighbors.cost import CostProfile, calibrate, estimate_knn_cost
from repscope.neighbors.distributed import run_knn_distributed

PROFILE = CostProfile(matmul_s=2e-10, select_s=5e-9, rerank_s=1e-8, prep_s=8e-9, read_s=1e-9,
                      transfer_s=1e-8, call_s=1e-3, start_s=5.0)


@pytest.fixture
def small_blocks(monkeypatch):
    import repscope.neighbors.prepare as prepare

    monkeypatch.setattr(prepare, "MOMENT_BLOCK", 256)


@pytest.mark.parametrize("n, d, k, workers, query_rows", [
    (1000, 12, 5, 2, 300), (1300, 7, 3, 3, 1000), (600, 20, 8, 1, 128), (2100, 5, 4, 4, 700)])
def test_the_plan_moves_and_reads_exactly_the_predicted_bytes(small_blocks, n, d, k, workers,
                                                              query_rows):
    X = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)  # no duplicates
    run = run_knn_distributed(X, k, workers=workers, executor="local", query_rows=query_rows)
    cost = estimate_knn_cost(n, d, k, workers, profile=PROFILE, query_rows=query_rows,
                             remote=True)
    assert (cost.workers, cost.query_blocks) == (run.workers, run.query_blocks)
    assert cost.bytes_moved == run.bytes_moved
    assert cost.bytes_read == run.bytes_read == n * d * 4


def test_predictions_scale_like_the_arithmetic():
    one = estimate_knn_cost(100_000, 384, 10, 1, profile=PROFILE)
    two = estimate_knn_cost(200_000, 384, 10, 1, profile=PROFILE)
    assert one.bytes_moved == 0 and one.parts["start"] == one.parts["transfer"] == 0
    assert one.parts["rank"] == pytest.approx(100_000**2 * 384 * PROFILE.matmul_s)
    assert two.parts["rank"] == pytest.approx(4 * one.parts["rank"])
    assert two.parts["select"] == pytest.approx(4 * one.parts["select"])
    assert two.parts["rerank"] == pytest.approx(2 * one.parts["rerank"])
    many = estimate_knn_cost(200_000, 384, 10, 8, profile=PROFILE)
    shard = math.ceil(math.ceil(200_000 / 4096) / 8) * 4096  # rows of the largest shard
    assert many.parts["rank"] == pytest.approx(200_000 * shard * 384 * PROFILE.matmul_s)
    assert many.memory_per_worker < two.memory_per_worker
    assert many.workers == 7  # 49 blocks of 4096 rows: 7 shards of 7 blocks
    assert many.parts["start"] == PROFILE.start_s
    assert many.bytes_moved > (many.workers - 1) * 200_000 * 384 * 4  # the queries go out
    assert sum(many.parts.values()) == pytest.approx(many.seconds)
    assert many.summary().startswith("kNN of 200,000 x 384 rows (k=10) on 7 worker(s): ~")


def test_a_profile_round_trips_and_scales(tmp_path):
    PROFILE.save(tmp_path / "p.json")
    assert CostProfile.load(tmp_path / "p.json") == PROFILE
    node = PROFILE.scaled(32, efficiency=0.75, transfer_s=1e-9)
    assert node.threads == 32 and node.transfer_s == 1e-9
    assert node.matmul_s == pytest.approx(PROFILE.matmul_s / (1 + 0.75 * 31))


def test_calibration_measures_positive_costs():
    p = calibrate(repeats=1)
    for name in ("matmul_s", "select_s", "rerank_s", "prep_s", "read_s", "transfer_s"):
        value = getattr(p, name)
        assert 0 < value < 1e-3 and math.isfinite(value), name
    assert p.matmul_s < p.select_s  # a multiply-add is cheaper than selecting an entry
    assert p.machine and p.date


@pytest.mark.parametrize("args, match", [
    ((1, 4, 1), r"The 'n' parameter of estimate_knn_cost must be an int in \[2"),
    ((100, 4, 100), r"The 'k' parameter of estimate_knn_cost must be an int in \[1, n=100\)"),
    ((100, 4, 3, 0), r"The 'workers' parameter of estimate_knn_cost must be an int in \[1"),
])
def test_bad_arguments_are_one_line_errors(args, match):
    with pytest.raises(ValueError, match=match):
        estimate_knn_cost(*args, profile=PROFILE)


def test_knn_distributed_logs_its_preflight_estimate(small_blocks, tmp_path, monkeypatch, caplog):
    """The estimate is logged (INFO) before the search, from the saved profile when one is
    named by $REPSCOPE_COST_PROFILE, and equals estimate_knn_cost's summary for the plan."""
    import logging

    from repscope.neighbors import cost

    PROFILE.save(tmp_path / "profile.json")
    monkeypatch.setenv(cost.PROFILE_ENV, str(tmp_path / "profile.json"))
    cost.default_profile.cache_clear()
    try:
        X = np.random.default_rng(1).standard_normal((900, 6)).astype(np.float32)
        with caplog.at_level(logging.INFO, logger="repscope.neighbors.distributed"):
            run_knn_distributed(X, 4, workers=3, executor="local", query_rows=200)
    finally:
        cost.default_profile.cache_clear()
    expected = estimate_knn_cost(900, 6, 4, 3, profile=PROFILE, query_rows=200,
                                 remote=False).summary()
    assert f"knn_distributed: {expected}" in caplog.messages
