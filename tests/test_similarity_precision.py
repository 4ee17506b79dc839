"""Linear CKA in mixed precision (float32 products, float64 sums) against the float64 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.inference import permutation_test
from repscope.measures.similarity import cka_linear, similarity_matrix
from repscope.measures.similarity._common import MIXED_CHUNK, cross_products
from repscope.measures.similarity.cka import LinearCKAAccumulator


def _chain(n: int, d: int, layers: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Layers of a noisy chain with uneven column scales and large offsets (centring matters)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d) + rng.normal(0, 50, d)
    out = {}
    for i in range(layers):
        out[f"l{i}"] = X
        X = X @ np.linalg.qr(rng.standard_normal((d, d)))[0] + 0.5 * rng.standard_normal((n, d))
    return out


def test_cross_products_chunks_exact_sum():
    """The chunked float32 path equals a float64 sum of float32 chunk products."""
    rng = np.random.default_rng(1)
    A = torch.from_numpy(rng.standard_normal((3 * MIXED_CHUNK + 17, 7)).astype(np.float32))
    B = torch.from_numpy(rng.standard_normal((3 * MIXED_CHUNK + 17, 5)).astype(np.float32))
    ref = sum((A[s:s + MIXED_CHUNK].T @ B[s:s + MIXED_CHUNK]).double()
              for s in range(0, A.shape[0], MIXED_CHUNK))
    got = cross_products(A, B, "mixed")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    exact = A.double().T @ B.double()
    torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-4)


def test_mixed_close_to_float64_and_really_float32():
    reps = _chain(4000, 64, 2)
    X, Y = reps["l0"], reps["l1"]
    exact, mixed = cka_linear(X, Y), cka_linear(X, Y, precision="mixed")
    assert mixed.params["precision"] == "mixed" and exact.params["precision"] == "float64"
    assert abs(mixed.value - exact.value) < 5e-8
    # narrow representations keep fewer entries to average the float32 rounding over
    x1 = X[:, :1]
    y1 = x1 + 0.3 * np.random.default_rng(2).standard_normal(x1.shape)
    diff = abs(cka_linear(x1, y1, precision="mixed").value - cka_linear(x1, y1).value)
    assert 0 < diff < 1e-5  # the float32 path really ran, and stayed accurate


def test_matrix_mixed_matches_float64_and_pairwise():
    reps = _chain(2000, 48, 4, seed=3)
    exact = similarity_matrix(reps, "cka_linear")
    mixed = similarity_matrix(reps, "cka_linear", params={"precision": "mixed"})
    np.testing.assert_allclose(mixed.values, exact.values, rtol=0, atol=5e-8)
    assert mixed.params["precision"] == "mixed"
    assert all(e.params["precision"] == "mixed" for e in mixed.estimates.values())
    pair = cka_linear(reps["l0"], reps["l2"], precision="mixed").value
    assert mixed.values[0, 2] == pytest.approx(pair, abs=5e-8)
    np.testing.assert_array_equal(np.diag(mixed.values), 1.0)


def test_mixed_invariances_and_streaming_merge():
    reps = _chain(1500, 16, 2, seed=5)
    X, Y = reps["l0"], reps["l1"]
    base = cka_linear(X, Y, precision="mixed").value
    Q = np.linalg.qr(np.random.default_rng(6).standard_normal((16, 16)))[0]
    assert cka_linear(X @ Q * 3.0 + 7.0, Y, precision="mixed").value == pytest.approx(base, abs=1e-6)
    acc = LinearCKAAccumulator.init(16, 16, "mixed")
    a = acc.update(X[:700], Y[:700]).merge(acc.update(X[700:], Y[700:]))
    assert a.compute().value == pytest.approx(base, abs=1e-7)
    with pytest.raises(ValueError, match="precision='mixed' and precision='float64'"):
        a.merge(LinearCKAAccumulator.init(16, 16))


def test_mixed_permutation_test_uses_prepared_states():
    reps = _chain(300, 8, 2, seed=7)
    r = permutation_test("cka_linear", reps["l0"], reps["l1"], n_perm=30, seed=0,
                         params={"precision": "mixed"})
    r64 = permutation_test("cka_linear", reps["l0"], reps["l1"], n_perm=30, seed=0)
    assert r.params["precision"] == "mixed"
    assert r.p_value == r64.p_value
    assert r.null_mean == pytest.approx(r64.null_mean, abs=1e-6)
    assert r.value == pytest.approx(r64.value, abs=1e-6)


def test_bad_precision():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match=r"The 'precision' parameter of cka_linear must be one of"):
        cka_linear(X, X, precision="half")
    with pytest.raises(ValueError, match=r"The 'precision' parameter of cka_linear must be one of"):
        similarity_matrix({"a": X, "b": X}, "cka_linear", params={"precision": "float16"})
