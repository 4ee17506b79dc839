"""Certified low-rank pruning in the exact kNN search: the same table as the brute search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repscope.neighbors.certificate as certificate
import repscope.neighbors.lowrank as lowrank
import repscope.neighbors.prepare as prepare
from repscope.neighbors import knn
from test_neighbors import _naive


def _low_rank(n: int, d: int, r: int, seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + 3.0  # off-centre on purpose
    return X + noise * rng.standard_normal((n, d)) if noise else X


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)
    np.testing.assert_array_equal(a.duplicates.kept, b.duplicates.kept)
    np.testing.assert_array_equal(a.duplicates.multiplicity, b.duplicates.multiplicity)
    assert a.duplicates.fraction == b.duplicates.fraction


@pytest.fixture(scope="module")
def X5():
    return _low_rank(1200, 100, 5, seed=0)  # exactly rank 5 in 100 dimensions


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_low_rank_matches_brute_and_naive(X5, metric, dtype):
    X = X5.astype(dtype)
    brute = knn(X, 10, metric=metric, strategy="brute")
    auto = knn(X, 10, metric=metric)
    assert brute.strategy == "brute" and brute.rank == 0 and brute.fallback_fraction == 0.0
    assert auto.strategy == "lowrank" and auto.rank == (5 if metric == "euclidean" else 6)
    assert auto.fallback_fraction == 0.0  # every row certified
    _same(auto, brute)
    _same(knn(X, 10, metric=metric, strategy="lowrank"), brute)
    idx, dist = _naive(X, 10, metric)
    np.testing.assert_array_equal(auto.indices, idx)
    np.testing.assert_allclose(auto.distances, dist, rtol=1e-6 if dtype == np.float32 else 1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_fallback_rows_are_searched_again_and_exact(monkeypatch, metric):
    """Noise comparable to the neighbour gaps: some rows fail the certificate (their bounds
    overlap) and are searched by brute force; the table is still the brute one."""
    # keep r small despite the noise (5 for Euclidean; the unit rows need more directions)
    monkeypatch.setattr(lowrank, "_LOWRANK_TAIL", 0.05 if metric == "euclidean" else 0.005)
    X = _low_rank(1500, 100, 5, seed=2, noise=0.2)
    low = knn(X, 10, metric=metric, strategy="lowrank", memory_budget=2**20)  # several blocks
    assert low.strategy == "lowrank" and 5 <= low.rank <= 30
    assert 0.02 < low.fallback_fraction < 0.9
    _same(low, knn(X, 10, metric=metric, strategy="brute"))
    idx, _ = _naive(X, 10, metric)
    np.testing.assert_array_equal(low.indices, idx)


def test_auto_switches_to_brute_when_the_probe_fails(monkeypatch):
    monkeypatch.setattr(lowrank, "_LOWRANK_TAIL", 0.05)
    X = _low_rank(1500, 100, 5, seed=2, noise=0.5)  # bounds far too wide: almost no row certifies
    auto = knn(X, 10)
    assert auto.strategy == "lowrank" and auto.fallback_fraction > 0.9
    _same(auto, knn(X, 10, strategy="brute"))


def test_full_rank_data_auto_picks_brute():
    X = np.random.default_rng(3).standard_normal((600, 100))
    auto = knn(X, 8)
    assert auto.strategy == "brute" and auto.rank == 0
    forced = knn(X, 8, strategy="lowrank")  # rank 100 of 100: pointless but still exact
    assert forced.strategy == "lowrank"
    _same(forced, auto)
    small = knn(np.random.default_rng(3).standard_normal((300, 6))[:, :3] @ np.ones((3, 6)), 5)
    assert small.strategy == "brute"  # d = 6 < 64: nothing to save


@pytest.mark.parametrize("policy", ["drop", "weight", "keep"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_duplicates_policies_unchanged(X5, policy, metric):
    rng = np.random.default_rng(4)
    X = np.vstack([X5[:800], X5[:60], X5[100:130] * (1 + 1e-12), X5[200:210] + 1e-11])
    X = X[rng.permutation(X.shape[0])]
    brute = knn(X, 8, metric=metric, duplicates=policy, strategy="brute")
    auto = knn(X, 8, metric=metric, duplicates=policy)
    assert auto.strategy == "lowrank"
    _same(auto, brute)
    assert auto.duplicates.fraction == pytest.approx(100 / 900)


def test_raise_policy_unchanged(X5):
    with pytest.raises(ValueError, match="found duplicate rows in X"):
        knn(np.vstack([X5, X5[:3] + 1e-12]), 5, duplicates="raise")
    assert knn(X5, 5, duplicates="raise").strategy == "lowrank"


def test_ties_broken_by_index_as_in_brute():
    """A 2-D integer lattice in 80 dimensions: many exactly equal distances."""
    g = np.arange(30.0)
    X = np.zeros((900, 80))
    X[:, 0], X[:, 1] = np.repeat(g, 30), np.tile(g, 30)
    brute = knn(X, 10, strategy="brute")
    low = knn(X, 10)
    assert low.strategy == "lowrank" and low.rank == 2
    _same(low, brute)
    idx, dist = _naive(X, 10)
    np.testing.assert_array_equal(low.indices, idx)
    np.testing.assert_array_equal(low.distances, dist)


def test_torch_input_float64_search_and_small_budget(X5):
    Xt = torch.from_numpy(X5[:500])
    a = knn(Xt, 12, dtype=torch.float64, memory_budget=2**16, strategy="lowrank")
    b = knn(Xt, 12, dtype=torch.float64, strategy="brute")
    assert a.strategy == "lowrank" and a.fallback_fraction == 0.0
    _same(a, b)


def test_certificate_never_accepts_a_wrong_row():
    """Many small random low-rank-plus-noise sets at noise levels around the breaking point:
    whatever fraction is certified, the table equals the naive one."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = _low_rank(300, 70, int(rng.integers(1, 4)), seed, noise=float(10 ** rng.uniform(-3, 0)))
        low = knn(X.astype(np.float32), 6, strategy="lowrank")
        idx, _ = _naive(X.astype(np.float32), 6)
        np.testing.assert_array_equal(low.indices, idx)
        _same(low, knn(X.astype(np.float32), 6, strategy="brute"))


def test_bad_strategy(X5):
    with pytest.raises(ValueError, match=r"The 'strategy' parameter of knn must be one of "
                                         r"\{'auto', 'brute', 'lowrank'\}. Got 'fast' instead."):
        knn(X5, 3, strategy="fast")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_accelerator_code_path_on_cpu(X5, monkeypatch, metric):
    """The torch-only path (what runs on CUDA): the same table as its brute search, and as the
    numpy path up to the summation order of the distances."""
    X = torch.from_numpy(X5[:400].astype(np.float32))
    host = knn(X, 7, metric=metric, strategy="brute")
    monkeypatch.setattr(prepare, "_NUMPY_ON_CPU", False)
    got = knn(X, 7, metric=metric)
    assert got.strategy == "lowrank" and got.fallback_fraction == 0.0
    _same(got, knn(X, 7, metric=metric, strategy="brute"))
    np.testing.assert_array_equal(got.indices, host.indices)
    np.testing.assert_allclose(got.distances, host.distances, rtol=1e-13)


def test_reduced_precision_products_widen_the_margins(X5, monkeypatch):
    """TF32 / bfloat16 float32 products (when torch allows them) only make certification
    stricter; the table stays the brute one."""
    from repscope.neighbors import _unit_roundoff

    cpu = torch.device("cpu")
    assert _unit_roundoff(torch.float32, cpu) == 2.0**-24
    assert _unit_roundoff(torch.float64, cpu) == 2.0**-53
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert _unit_roundoff(torch.float32, cpu) == 2.0**-11
    finally:
        torch.set_float32_matmul_precision(before)
    for module in (certificate, lowrank):  # the brute and the projected margins
        monkeypatch.setattr(module, "_unit_roundoff", lambda dtype, device: 2.0**-8)
    X = X5[:600] + 1e-3 * np.random.default_rng(6).standard_normal((600, 100))
    low = knn(X, 9, strategy="lowrank")
    _same(low, knn(X, 9, strategy="brute"))
