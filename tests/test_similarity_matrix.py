"""Layer x layer matrices with per-representation preparation."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from repscope import registry
from repscope.measures.similarity import similarity_matrix


@pytest.fixture(scope="module")
def reps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(90, 6))
    return {f"l{i}": Z @ rng.normal(size=(6, 5 + i)) + 0.4 * i * rng.normal(size=(90, 5 + i))
            for i in range(4)}


@pytest.mark.parametrize("name", registry.names(family="similarity"))
def test_matrix_equals_pairwise_calls(name, reps):
    params = {"n_landmarks": 30} if name == "cka_rbf_nystroem" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        M = similarity_matrix(reps, name, params=params)
        spec = registry.get(name)
        for i, a in enumerate(M.names):
            for j, b in enumerate(M.names):
                if spec.symmetric and j < i:
                    continue
                ref = spec.fn(reps[a], reps[b], **(params or {})).value
                assert M.values[i, j] == pytest.approx(ref, abs=1e-10), (a, b)
    if spec.symmetric:
        np.testing.assert_array_equal(M.values, M.values.T)
    assert M.measure == name and M.names == tuple(reps)


def test_each_representation_is_prepared_once(reps, monkeypatch):
    calls: list[str] = []
    spec = registry.get("cka_linear")
    orig = spec.prepared

    def counting(X, dev, params, name):
        calls.append(name)
        return orig.prepare(X, dev, params, name)

    monkeypatch.setitem(registry._REGISTRY, "cka_linear", dataclasses.replace(
        spec, prepared=registry.Prepared(counting, orig.compare)))
    M = similarity_matrix(reps, "cka_linear")
    assert sorted(calls) == sorted(reps)
    assert len(M.estimates) == 10  # upper triangle with the diagonal
    np.testing.assert_allclose(np.diag(M.values), 1.0)


def test_asymmetric_measure_fills_every_ordered_pair(reps):
    M = similarity_matrix(reps, "pwcca", diagonal=False)
    assert not M.symmetric and len(M.estimates) == 12
    assert np.isnan(np.diag(M.values)).all()
    assert M.values[0, 1] != pytest.approx(M.values[1, 0], abs=1e-6)
    assert len(list(M.pairs())) == 12


def test_matrix_accepts_tensors_and_reports_progress(reps):
    seen = []
    M = similarity_matrix({k: torch.from_numpy(v) for k, v in reps.items()}, "procrustes_angular",
                          progress=lambda done, total: seen.append((done, total)))
    ref = similarity_matrix(reps, "procrustes_angular")
    np.testing.assert_allclose(M.values, ref.values, atol=1e-12)
    assert seen[-1] == (10, 10)


def test_matrix_errors(reps):
    bad = dict(reps, short=np.ones((10, 3)))
    with pytest.raises(ValueError, match="'l0' has 90 and 'short' has 10"):
        similarity_matrix(bad, "cka_linear")
    with pytest.raises(KeyError, match="Unknown measure 'cka_lin'"):
        similarity_matrix(reps, "cka_lin")
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['k'\] for measure 'cka_linear'"):
        similarity_matrix(reps, "cka_linear", params={"k": 3})


def test_matrix_validates_parameters_of_prepared_measures(reps):
    with pytest.raises(ValueError, match=r"'k' parameter of mutual_knn must be an int in \[1, n_samples=90\)"):
        similarity_matrix(reps, "mutual_knn", params={"k": 0})
    with pytest.raises(ValueError, match=r"'alpha' parameter of shape_alpha must be a float in \[0, 1\]"):
        similarity_matrix(reps, "shape_alpha", params={"alpha": -1.0})
    with pytest.raises(ValueError, match=r"'variance_kept' parameter of svcca must be a float in \(0, 1\]"):
        similarity_matrix(reps, "svcca", params={"variance_kept": 0.0})
    with pytest.raises(ValueError, match=r"'compare' parameter of rsa must be one of"):
        similarity_matrix(reps, "rsa", params={"compare": "cosine"})


def test_matrix_and_permutation_respect_min_samples():
    from repscope.inference import permutation_test

    tiny = {"a": np.eye(3), "b": np.eye(3)[::-1].copy()}
    with pytest.raises(ValueError, match="similarity_matrix needs at least 4 samples"):
        similarity_matrix(tiny, "cka_linear_debiased")
    with pytest.raises(ValueError, match="cka_linear_debiased needs at least 4 samples"):
        permutation_test("cka_linear_debiased", tiny["a"], tiny["b"])
