"""Permutation nulls, bootstrap intervals and the paired test for similarity measures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from repscope import inference as rstats
from repscope.results import from_json


@pytest.fixture(scope="module")
def related() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    A = rng.normal(size=(60, 5))
    B = A @ rng.normal(size=(5, 4)) + 0.5 * rng.normal(size=(60, 4))  # close to A
    C = A[:, :2] @ rng.normal(size=(2, 4)) + 2.0 * rng.normal(size=(60, 4))  # further from A
    return A, B, C


def test_permutation_test_detects_shared_structure(related):
    A, B, _ = related
    res = rstats.permutation_test("cka_linear", A, B, n_perm=99, seed=0)
    assert res.p_value == pytest.approx(0.01)  # (1 + 0) / (99 + 1): no shuffle beats it
    assert res.null_mean < 0.3 < res.value
    assert res.calibrated == pytest.approx(res.value - res.null_mean)
    assert res.diagnostics["null"].shape == (99,)
    assert from_json(res.to_json()) == res
    again = rstats.permutation_test("cka_linear", A, B, n_perm=99, seed=0)
    assert again == res


def test_permutation_test_uses_less_for_distances(related):
    A, B, _ = related
    res = rstats.permutation_test("procrustes_angular", A, B, n_perm=49)
    assert res.alternative == "less" and res.p_value == pytest.approx(1 / 50)
    assert res.calibrated < 0  # closer than chance


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(11)

    def cka(X, Y):  # the registered measure's formula, inlined to keep 300 x 39 calls fast
        X, Y = X - X.mean(0), Y - Y.mean(0)
        return np.sum((X.T @ Y) ** 2) / np.sqrt(np.sum((X.T @ X) ** 2) * np.sum((Y.T @ Y) ** 2))

    p = [rstats.permutation_test(cka, rng.normal(size=(16, 3)), rng.normal(size=(16, 2)),
                                 n_perm=39, seed=i).p_value for i in range(300)]
    # p-values live on the grid {1/40, ..., 40/40}; compare with the discrete uniform law.
    grid = np.arange(1, 41) / 40
    ecdf = np.searchsorted(np.sort(p), grid, side="right") / len(p)
    assert np.max(np.abs(ecdf - grid)) < 1.63 / np.sqrt(len(p))  # KS critical value, alpha=0.01
    assert stats.kstest(np.asarray(p) - 0.5 / 40, "uniform").pvalue > 0.01


def test_permutation_test_agrees_with_registered_measure(related):
    A, B, _ = related
    from repscope.measures.similarity import cka_linear

    by_name = rstats.permutation_test("cka_linear", A, B, n_perm=20, seed=3)
    by_fn = rstats.permutation_test(cka_linear, A, B, n_perm=20, seed=3)
    np.testing.assert_allclose(by_name.diagnostics["null"], by_fn.diagnostics["null"])


def test_bootstrap_ci_covers_the_value(related):
    A, B, _ = related
    res = rstats.bootstrap_ci("cka_linear", A, B, n_boot=60, seed=2)
    lo, hi = res.ci
    assert lo < res.value < hi and res.stderr > 0
    assert res.params["uncertainty"] == "bootstrap" and res.n_resamples == 60
    assert from_json(res.to_json()) == res


def test_paired_test_orders_closer_representation(related):
    A, B, C = related
    res = rstats.paired_test("cka_linear", A, B, C, n_boot=60, seed=0)
    assert res.value == pytest.approx(res.value_ab - res.value_ac)
    assert res.value > 0 and res.ci[0] > 0 and res.p_value < 0.05
    flipped = rstats.paired_test("cka_linear", A, C, B, n_boot=60, seed=0)
    assert flipped.value < 0 and flipped.p_value > 0.9
    dist = rstats.paired_test("procrustes_angular", A, B, C, n_boot=30, seed=0)
    assert dist.value == pytest.approx(dist.value_ac - dist.value_ab) and dist.value > 0
    assert from_json(res.to_json()) == res


def test_resampling_errors(related):
    A, B, C = related
    with pytest.raises(ValueError, match="The 'measure' parameter of permutation_test must be"):
        rstats.permutation_test(3, A, B)
    with pytest.raises(ValueError, match=r"'n_perm' parameter of permutation_test must be an int in \[1, inf\)"):
        rstats.permutation_test("cka_linear", A, B, n_perm=0)
    with pytest.raises(ValueError, match=r"'alternative' parameter of permutation_test must be one of"):
        rstats.permutation_test("cka_linear", A, B, alternative="two-sided")
    with pytest.raises(ValueError, match="'A' and 'C' must have the same number of rows"):
        rstats.paired_test("cka_linear", A, B, C[:-1])
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['kk'\]"):
        rstats.bootstrap_ci("cka_linear", A, B, params={"kk": 1})


@pytest.mark.parametrize("name", ["cka_linear", "cka_linear_debiased", "cca_mean", "pwcca",
                                  "procrustes_angular", "shape_alpha", "mutual_knn", "rsa"])
def test_prepared_permutation_null_equals_recomputing(name, related):
    A, B, _ = related
    from repscope import registry

    spec = registry.get(name)
    fast = rstats.permutation_test(name, A, B, n_perm=15, seed=4)
    slow = rstats.permutation_test(spec.fn, A, B, n_perm=15, seed=4)  # recomputes every shuffle
    np.testing.assert_allclose(fast.diagnostics["null"], slow.diagnostics["null"], atol=1e-10)
    assert fast.value == pytest.approx(slow.value, abs=1e-10)
