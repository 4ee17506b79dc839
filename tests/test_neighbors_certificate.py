"""The brute kNN search is certified: inputs where float32 products cannot rank the neighbours
(degenerate cosine rows, far-apart clusters) still give the exact table, through the float64
and direct fallbacks, and ordinary data pays nothing (no fallback)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repscope.neighbors.fallbacks as fallbacks
import repscope.neighbors.prepare as prepare
from repscope.neighbors import knn


def _reference(X: np.ndarray, k: int, metric: str = "euclidean"):
    """Independent float64 table: squared distances of each row to every row from direct
    differences, one row at a time, sorted by (distance, index). Cosine works on unit rows
    normalised as knn documents it (float64 row / float64 norm), so that distances of 1e-18
    compare to rtol 1e-12."""
    A = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        A = A / torch.linalg.vector_norm(torch.from_numpy(A), dim=1, keepdim=True).numpy()
    n = A.shape[0]
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k))
    for i in range(n):
        d2 = ((A - A[i]) ** 2).sum(1)  # (n,)
        d2[i] = np.inf
        order = np.argsort(d2, kind="stable")[:k]
        idx[i] = order
        dist[i] = 0.5 * d2[order] if metric == "cosine" else np.sqrt(d2[order])
    return idx, dist


def _assert_exact(nb, X, metric="euclidean", rtol=1e-12):
    idx, dist = _reference(X, nb.k, metric)
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.distances, dist, rtol=rtol, atol=0)


def _collinear(n: int = 300, d: int = 32, seed: int = 0) -> np.ndarray:
    """Rank one plus 1e-9 noise: unit rows are +-v up to ~1e-9, far below float32 rounding."""
    rng = np.random.default_rng(seed)
    return np.outer(rng.standard_normal(n), rng.standard_normal(d)) + 1e-9 * rng.standard_normal((n, d))


def _two_clusters(n: int = 300, d: int = 16, offset: float = 1e4, seed: int = 0) -> np.ndarray:
    """Two unit-scale clusters at +-offset: the centred norms (1e4) swamp the float32 product."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[: n // 2, 0] += offset
    X[n // 2:, 0] -= offset
    return X


@pytest.fixture(scope="module")
def collinear():
    return _collinear()


@pytest.fixture(scope="module")
def clusters():
    return _two_clusters()


def test_degenerate_cosine_is_exact_through_the_direct_fallback(collinear):
    nb = knn(collinear, 6, metric="cosine", duplicates="keep", strategy="brute")
    _assert_exact(nb, collinear, "cosine")
    assert nb.float64_fraction > 0.5 and nb.direct_fraction > 0.5  # float64 cannot rank them either
    assert nb.direct_fraction <= nb.float64_fraction


def test_without_the_certificate_the_float32_candidates_are_wrong(collinear, clusters, monkeypatch):
    """What the certificate guards against: accepting every float32 candidate list."""
    certify = fallbacks._certify  # the brute search's certificate

    def accept_all(L, q, cand, vals, k, rho_max, rel):
        ok, _ = certify(L, q, cand, vals, k, rho_max, rel)
        return np.ones_like(ok), cand

    monkeypatch.setattr(fallbacks, "_certify", accept_all)
    for X, metric in [(collinear, "cosine"), (clusters, "euclidean")]:
        nb = knn(X, 6, metric=metric, duplicates="keep", strategy="brute")
        idx, _ = _reference(X, 6, metric)
        assert (nb.indices != idx).any(1).mean() > 0.5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_far_clusters_are_exact_through_the_float64_fallback(clusters, dtype):
    X = clusters.astype(dtype)
    nb = knn(X, 6, strategy="brute")
    _assert_exact(nb, X, rtol=1e-12 if dtype == np.float64 else 1e-6)
    assert nb.float64_fraction == 1.0 and nb.direct_fraction == 0.0


def test_common_offset_is_removed_by_centring():
    """A huge common offset cancels in float64 centring before the float32 product: no fallback."""
    X = np.random.default_rng(1).standard_normal((300, 16)) + 1e6
    nb = knn(X, 6, strategy="brute")
    _assert_exact(nb, X, rtol=1e-9)  # X + 1e6 itself carries only ~10 digits of the offsets
    assert nb.float64_fraction == 0.0 and nb.direct_fraction == 0.0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_full_rank_data_needs_no_fallback(metric):
    X = np.random.default_rng(2).standard_normal((1200, 48)).astype(np.float32)
    nb = knn(X, 10, metric=metric, memory_budget=2**19)  # several blocks
    assert nb.strategy == "brute" and nb.float64_fraction == 0.0 and nb.direct_fraction == 0.0
    _assert_exact(nb, X, metric, rtol=1e-6)
    wide = knn(X, 10, metric=metric, dtype=torch.float64)  # another search, the same table
    np.testing.assert_array_equal(wide.indices, nb.indices)
    np.testing.assert_array_equal(wide.distances, nb.distances)


def test_float64_search_breaks_ties_by_index():
    """A lattice has many equal distances at the k-th position: a float64 search used to keep
    an arbitrary k of them; the certificate sends those rows to the exact fallback."""
    g = np.arange(10.0)
    X = np.zeros((100, 3))
    X[:, 0], X[:, 1] = np.repeat(g, 10), np.tile(g, 10)
    for dtype in (torch.float32, torch.float64):
        nb = knn(X, 5, dtype=dtype, strategy="brute")
        idx, dist = _reference(X, 5)
        np.testing.assert_array_equal(nb.indices, idx)
        np.testing.assert_array_equal(nb.distances, dist)


def test_float32_overflow_goes_to_float64():
    """Squared norms of 1e20-scale rows overflow float32 (inf / nan ranking values): no row can
    be certified from them, float64 settles all."""
    X = np.random.default_rng(7).standard_normal((200, 8)) * 1e20
    nb = knn(X, 5, strategy="brute")
    assert nb.float64_fraction == 1.0 and nb.direct_fraction == 0.0
    _assert_exact(nb, X)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_searches_are_exact_through_float64(dtype):
    X = np.random.default_rng(6).standard_normal((200, 64))
    nb = knn(X, 5, dtype=dtype)
    assert nb.float64_fraction > 0.5  # too coarse to certify most rows: searched again
    _assert_exact(nb, X)


@pytest.mark.parametrize("k", [1, 299])
def test_k_extremes(collinear, clusters, k):
    for X, metric in [(collinear, "cosine"), (clusters, "euclidean")]:
        nb = knn(X, k, metric=metric, duplicates="keep", strategy="brute")
        _assert_exact(nb, X, metric)


@pytest.mark.parametrize("policy", ["drop", "weight", "keep"])
def test_duplicates_policies(clusters, policy):
    rng = np.random.default_rng(3)
    X = np.vstack([clusters, clusters[:20], clusters[20:30] + 1e-9])  # exact and near copies
    X = X[rng.permutation(X.shape[0])]
    nb = knn(X, 5, duplicates=policy, strategy="brute")
    assert nb.duplicates.fraction == pytest.approx(30 / 330)
    _assert_exact(nb, X[nb.duplicates.kept])
    assert nb.float64_fraction > 0


def test_degenerate_cosine_policies(collinear):
    """The 1e-9 noise is within tol of the RMS radius: 'drop' merges each sign into a few
    rows (single linkage over neighbour edges), 'raise' refuses, 'keep' searches all rows."""
    nb = knn(collinear, 1, metric="cosine")
    assert nb.n <= 10 and nb.duplicates.multiplicity.sum() == 300
    _assert_exact(nb, collinear[nb.duplicates.kept], "cosine")
    with pytest.raises(ValueError, match="found duplicate rows in X"):
        knn(collinear, 1, metric="cosine", duplicates="raise")
    knn(_two_clusters(), 5, duplicates="raise")  # no duplicates: fine


def test_float64_fallback_in_column_chunks_and_small_blocks():
    """d = 4200: the float64 fallback converts 249 rows per chunk; a 1 MB budget gives blocks
    of a few query rows."""
    X = _two_clusters(300, 4200, seed=4)
    nb = knn(X, 4, strategy="brute", memory_budget=2**20)
    assert nb.float64_fraction == 1.0
    _assert_exact(nb, X, rtol=1e-10)


def test_local_recentring_settles_collinear_rows(collinear, monkeypatch):
    """Rows that fail the float64 certificate are searched again among the rows its bounds
    cannot exclude, centred at their own mean: all certified, no direct re-ranking needed."""

    def refuse(*args, **kwargs):
        raise AssertionError("the direct last resort ran")

    monkeypatch.setattr(fallbacks, "_pruned_rerank", refuse)
    nb = knn(collinear, 6, metric="cosine", duplicates="keep", strategy="brute")
    assert nb.direct_fraction > 0.5
    _assert_exact(nb, collinear, "cosine")


def test_direct_fallback_in_pieces(collinear, monkeypatch):
    """Without the local search (groups too large for its memory cap), the rows that the
    float64 bounds cannot exclude are re-ranked directly, in pieces of 40 rows."""
    monkeypatch.setattr(fallbacks, "_LOCAL_MAX_BYTES", 0)
    monkeypatch.setattr(fallbacks, "_RERANK_PIECE", 40 * collinear.shape[1])
    nb = knn(collinear, 6, metric="cosine", duplicates="keep", strategy="brute")
    assert nb.direct_fraction > 0.5
    _assert_exact(nb, collinear, "cosine")


def test_lowrank_fallback_rows_are_certified_too():
    """Far clusters of rank-3 data in 100 dimensions: the low-rank certificate fails (its
    margins scale with the centred norms), the brute one too, float64 settles them."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 100))
    X[:150] += 1e4
    nb = knn(X, 6, strategy="lowrank")
    assert nb.strategy == "lowrank" and nb.fallback_fraction > 0.5 and nb.float64_fraction > 0.5
    _assert_exact(nb, X, rtol=1e-10)


def test_nested_clusters_at_random_scales_are_never_wrong():
    """Clusters of sub-clusters of points, the three scales drawn from 1e-12 to 1e8: whichever
    stages a row needs (float32, float64, local), the table is the reference one."""
    stages = set()
    for seed in (0, 8, 12, 18, 34):  # no fallback; float64; float64 + local (12, 18)
        rng = np.random.default_rng(seed)
        n, d = 160, int(rng.integers(3, 30))
        scale = 10.0 ** rng.uniform(-12, 8, size=3)
        group, sub = rng.integers(0, 4, n), rng.integers(0, 3, n)
        X = (scale[0] * rng.standard_normal((4, d))[group]
             + scale[1] * rng.standard_normal((4, 3, d))[group, sub]
             + scale[2] * rng.standard_normal((n, d)))
        for metric in ["euclidean", "cosine"]:
            k = int(rng.integers(1, 10))
            nb = knn(X, k, metric=metric, duplicates="keep", strategy="brute")
            idx, _ = _reference(X, k, metric)
            np.testing.assert_array_equal(nb.indices, idx)
            stages.add((nb.float64_fraction > 0, nb.direct_fraction > 0))
    assert (True, True) in stages and (False, False) in stages  # both ends were exercised


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_accelerator_code_path_on_cpu(collinear, clusters, monkeypatch, metric):
    X = torch.from_numpy(collinear if metric == "cosine" else clusters)
    host = knn(X, 6, metric=metric, duplicates="keep", strategy="brute")
    monkeypatch.setattr(prepare, "_NUMPY_ON_CPU", False)
    got = knn(X, 6, metric=metric, duplicates="keep", strategy="brute")
    np.testing.assert_array_equal(got.indices, host.indices)
    np.testing.assert_allclose(got.distances, host.distances, rtol=1e-12)
    assert got.float64_fraction == host.float64_fraction and got.direct_fraction == host.direct_fraction


def test_fractions_reach_id_diagnostics_and_survive_json(clusters):
    from repscope.measures.dimension import twonn
    from repscope.results import from_json

    est = twonn(clusters, neighbors=knn(clusters, 4, strategy="brute"))
    assert est.diagnostics["neighbor_float64_fraction"] == 1.0
    assert est.diagnostics["neighbor_direct_fraction"] == 0.0
    assert from_json(est.to_json()) == est
