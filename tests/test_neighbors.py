"""The shared neighbour engine: exactness against a naive reference, duplicates, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from repscope.neighbors import count_pairs_within, knn


def _naive(X: np.ndarray, k: int, metric: str = "euclidean"):
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        D = 1.0 - U @ U.T
    else:
        D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(D, idx, axis=1)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((400, 12))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_naive_reference(X, metric, dtype):
    nb = knn(X, 15, metric=metric, dtype=dtype)
    idx, dist = _naive(X, 15, metric)
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.distances, dist, rtol=1e-10, atol=1e-12)
    assert nb.indices.dtype == np.int64 and nb.distances.dtype == np.float64
    assert nb.exact and nb.backend == "exact" and nb.k == 15 and nb.metric == metric


def test_float32_input_distances_within_1e6(X):
    X32 = X.astype(np.float32)
    nb = knn(X32, 10)
    idx, dist = _naive(X32, 10)
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.distances, dist, rtol=1e-6)


def test_tiny_budget_many_blocks_same_result(X):
    a = knn(X, 8)
    b = knn(torch.from_numpy(X), 8, memory_budget=2**16)  # blocks of a few rows
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-12)


def test_accurate_near_duplicate_distance_in_float32():
    """The expanded form loses a 1e-4 distance at norm 1e3 in float32; the engine must not."""
    rng = np.random.default_rng(1)
    X = (1e3 + rng.standard_normal((50, 4))).astype(np.float32)
    X[1] = X[0]
    X[1, 0] = np.nextafter(X[0, 0], np.float32(np.inf))  # one ulp apart (6.1e-5)
    nb = knn(X, 3, duplicates="keep")
    gap = float(np.float64(X[1, 0]) - np.float64(X[0, 0]))
    assert nb.indices[0, 0] == 1
    assert nb.distances[0, 0] == pytest.approx(gap, rel=1e-6)


def test_head_slices_columns(X):
    nb = knn(X, 10)
    h = nb.head(4)
    np.testing.assert_array_equal(h.indices, nb.indices[:, :4])
    assert h.k == 4
    with pytest.raises(ValueError, match=r"'k' parameter of Neighbors.head must be an int in \[1, Neighbors.k=10\]"):
        nb.head(11)


def test_cosine_lengths_are_chords(X):
    nb = knn(X, 5, metric="cosine")
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    chord = np.linalg.norm(U[nb.indices[:, 0]] - U, axis=1)
    np.testing.assert_allclose(nb.lengths()[:, 0], chord, rtol=1e-10)


# ------------------------------------------------------------------------- duplicates


def test_exact_duplicates_dropped_by_default(X):
    Xd = np.vstack([X, X[:40], X[:10]])  # 50 extra copies, one row appears three times
    nb = knn(Xd, 10)
    rep = nb.duplicates
    assert rep.policy == "drop" and nb.n == 400
    assert rep.fraction == pytest.approx(50 / 450)
    np.testing.assert_array_equal(rep.kept, np.arange(400))
    assert rep.multiplicity[:10].tolist() == [3] * 10 and rep.multiplicity.sum() == 450
    np.testing.assert_array_equal(rep.inverse[400:440], np.arange(40))
    np.testing.assert_array_equal(nb.indices, knn(X, 10).indices)


def test_near_duplicates_merged_within_tolerance(X):
    Xd = np.vstack([X, X[:30] + 1e-10])
    nb = knn(Xd, 10, duplicates="weight")
    assert nb.n == 400 and nb.duplicates.multiplicity[:30].tolist() == [2] * 30
    assert nb.duplicates.fraction == pytest.approx(30 / 430)
    assert (nb.distances > 0).all()
    # with tol=0 only bitwise-identical rows are duplicates
    assert knn(Xd, 10, tol=0.0).n == 430


def test_keep_policy_reports_but_keeps(X):
    Xd = np.vstack([X, X[:20]])
    nb = knn(Xd, 5, duplicates="keep")
    assert nb.n == 420 and nb.duplicates.fraction == pytest.approx(20 / 420)
    assert (nb.distances[:20, 0] == 0).all()


def test_raise_policy(X):
    knn(X, 5, duplicates="raise")  # no duplicates: fine
    with pytest.raises(ValueError, match=r"found duplicate rows in X \(fraction 0.02439"):
        knn(np.vstack([X, X[:10]]), 5, duplicates="raise")


def test_constant_data_and_k_after_dedup():
    with pytest.raises(ValueError, match="constant data: all 30 rows"):
        knn(np.ones((30, 3)), 2)
    X = np.repeat(np.eye(3), 10, axis=0)
    with pytest.raises(ValueError, match=r"'k' parameter of knn must be an int in \[1, n_unique=3\).*Got 5"):
        knn(X, 5)


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("k, msg", [
    (0, r"The 'k' parameter of knn must be an int in \[1, n_samples=400\). Got 0 instead."),
    (400, r"The 'k' parameter of knn must be an int in \[1, n_samples=400\). Got 400 instead."),
    (2.5, r"Got 2.5 instead"),
])
def test_bad_k(X, k, msg):
    with pytest.raises(ValueError, match=msg):
        knn(X, k)


def test_bad_inputs(X):
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        knn(bad, 3)
    with pytest.raises(ValueError, match="2-D array"):
        knn(X[:, 0], 3)
    with pytest.raises(TypeError, match="floating-point dtype"):
        knn(X.astype(np.int64), 3)
    with pytest.raises(ValueError, match=r"'metric' parameter of knn must be one of \{'euclidean', 'cosine'\}. Got 'l1'"):
        knn(X, 3, metric="l1")
    with pytest.raises(ValueError, match=r"'duplicates' parameter of knn must be one of"):
        knn(X, 3, duplicates="ignore")
    Z = X.copy()
    Z[7] = 0
    with pytest.raises(ValueError, match="metric='cosine' needs non-zero rows; row 7"):
        knn(Z, 3, metric="cosine")


def test_count_pairs_within_matches_naive(X):
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    radii = np.quantile(D[np.isfinite(D)], [0.01, 0.1, 0.5])
    got = count_pairs_within(X, radii, dtype=torch.float64, memory_budget=2**16)
    np.testing.assert_array_equal(got, [(D < r).sum() for r in radii])


@pytest.mark.parametrize("backend", ["faiss", "pynndescent"])
def test_approximate_backends_are_labelled(X, backend):
    mod = pytest.importorskip("faiss" if backend == "faiss" else "pynndescent")
    if not hasattr(mod, "IndexHNSWFlat" if backend == "faiss" else "NNDescent"):
        pytest.skip(f"{backend} is only partly installed (an empty package directory)")
    nb = knn(X, 10, backend=backend)
    ref = knn(X, 10)
    assert not nb.exact and nb.backend == backend
    assert (nb.indices == ref.indices).mean() > 0.9
    assert (np.diff(nb.distances, axis=1) >= 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_groups_match_a_bytewise_dictionary(dtype):
    """The hashed grouping equals grouping rows by their bytes (first occurrence kept, in order)."""
    from repscope.neighbors import _exact_groups

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 7)).astype(dtype)
    X[rng.integers(0, 300, 60)] = X[rng.integers(0, 300, 60)]
    X[10, 0], X[11] = 0.0, X[10]
    X[11, 0] = -0.0  # equal as numbers, different bytes: two groups, as for np.unique on bytes
    kept, inverse, counts = _exact_groups(X)
    first: dict[bytes, int] = {}
    for i, row in enumerate(X):
        first.setdefault(row.tobytes(), i)
    np.testing.assert_array_equal(kept, sorted(first.values()))
    np.testing.assert_array_equal(kept[inverse], [first[row.tobytes()] for row in X])
    np.testing.assert_array_equal(counts, np.bincount(inverse))


@pytest.mark.parametrize("n", [2000, 2003])
def test_grouped_selection_equals_topk(n):
    """The two-stage selection returns the same set as topk, including ties and a tail."""
    from repscope.neighbors import _smallest

    rng = np.random.default_rng(4)
    R = torch.from_numpy(rng.integers(0, 400, (30, n)).astype(np.float32))  # many ties
    R[:, 5] = float("inf")
    got = torch.sort(torch.gather(R, 1, _smallest(R, 12)), 1).values
    want = torch.sort(torch.topk(R, 12, dim=1, largest=False).values, 1).values
    assert torch.equal(got, want)
    R = torch.from_numpy(rng.standard_normal((30, n)).astype(np.float32))
    got = torch.sort(_smallest(R, 12), 1).values
    want = torch.sort(torch.topk(R, 12, dim=1, largest=False).indices, 1).values
    assert torch.equal(got, want)


def test_large_enough_for_grouped_selection_matches_naive():
    X = np.random.default_rng(5).standard_normal((1500, 6)).astype(np.float32)
    nb = knn(X, 10, memory_budget=2**20)  # several blocks, grouped selection in each
    idx, dist = _naive(X, 10)
    np.testing.assert_array_equal(nb.indices, idx)
    np.testing.assert_allclose(nb.distances, dist, rtol=1e-6)
