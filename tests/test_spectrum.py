"""Spectral, spread, outlier and diffusion measures against references and planted structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope import registry
from repscope.measures.spectrum import (
    anisotropy,
    common_mean_share,
    covariance_eigenvalues,
    dse,
    dsmi,
    effective_rank,
    isoscore,
    norm_outliers,
    outlier_dimensions,
    power_law_alpha,
    power_law_fit,
    spectral_entropy,
    spectrum,
    stable_rank,
)
from repscope.stats import Moments


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    return np.linalg.qr(rng.normal(size=(d, d)))[0]


@pytest.fixture(scope="module")
def aniso_data() -> np.ndarray:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 12)) * np.geomspace(5, 0.2, 12) + rng.normal(size=12)
    return X @ _rotation(12, rng)  # (n, d)


# ----------------------------------------------------------------------------- references
def test_spectrum_matches_numpy_eigvalsh(aniso_data):
    ref = np.sort(np.linalg.eigvalsh(np.cov(aniso_data, rowvar=False)))[::-1]
    est = spectrum(aniso_data)
    np.testing.assert_allclose(est.diagnostics["eigenvalues"], ref, rtol=1e-10, atol=1e-12)
    assert est.value == pytest.approx(ref.sum(), rel=1e-12)
    np.testing.assert_allclose(est.diagnostics["cumulative_explained_variance"][-1], 1.0)
    assert est.diagnostics["rank_limit"] == 12


def test_participation_ratio_is_the_shared_implementation(aniso_data):
    ev = np.linalg.eigvalsh(np.cov(aniso_data, rowvar=False))
    pr = spectrum(aniso_data).diagnostics["participation_ratio"]
    assert pr == pytest.approx(ev.sum() ** 2 / (ev**2).sum(), rel=1e-10)
    assert pr == pytest.approx(registry.get("participation_ratio").fn(aniso_data).value, rel=1e-10)


def test_closed_forms_from_reference_eigenvalues(aniso_data):
    ev = np.sort(np.linalg.eigvalsh(np.cov(aniso_data, rowvar=False)))[::-1]
    s = np.sqrt(ev) / np.sqrt(ev).sum()
    assert effective_rank(aniso_data).value == pytest.approx(np.exp(-(s * np.log(s)).sum()), rel=1e-10)
    p = ev / ev.sum()
    assert spectral_entropy(aniso_data).value == pytest.approx(-(p * np.log(p)).sum(), rel=1e-10)
    assert spectral_entropy(aniso_data, normalized=True).value == pytest.approx(
        -(p * np.log(p)).sum() / np.log(12), rel=1e-10)
    assert stable_rank(aniso_data).value == pytest.approx(ev.sum() / ev[0], rel=1e-10)
    # stable rank is ||Xc||_F^2 / ||Xc||_2^2
    Xc = aniso_data - aniso_data.mean(0)
    assert stable_rank(aniso_data).value == pytest.approx(
        np.linalg.norm(Xc) ** 2 / np.linalg.norm(Xc, 2) ** 2, rel=1e-10)


def test_anisotropy_equals_naive_mean_pairwise_cosine(aniso_data):
    U = aniso_data / np.linalg.norm(aniso_data, axis=1, keepdims=True)
    G = U @ U.T  # (n, n), fine at n = 400 for a reference
    n = G.shape[0]
    naive = (G.sum() - np.trace(G)) / (n * (n - 1))
    assert anisotropy(aniso_data).value == pytest.approx(naive, rel=1e-10)


def test_isoscore_limits_and_reference_formula(aniso_data):
    rng = np.random.default_rng(0)
    line = rng.normal(size=(300, 1)) @ rng.normal(size=(1, 8))  # all variance in one direction
    assert isoscore(line).value == pytest.approx(0.0, abs=1e-9)
    assert isoscore(rng.normal(size=(20000, 8))).value > 0.99
    # step by step as in Rudman et al. (2022), Algorithm 1
    ev = np.linalg.eigvalsh(np.cov(aniso_data, rowvar=False))
    d = ev.size
    s = np.sqrt(d) * ev / np.linalg.norm(ev)
    delta = np.linalg.norm(s - 1) / np.sqrt(2 * (d - np.sqrt(d)))
    k = (d - delta**2 * (d - np.sqrt(d))) ** 2 / d**2
    assert isoscore(aniso_data).value == pytest.approx((d * k - 1) / (d - 1), rel=1e-10)


def test_common_mean_share_reference():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 7)) + 2.0
    ref = np.linalg.norm(X.mean(0)) ** 2 / np.mean((X**2).sum(1))
    assert common_mean_share(X).value == pytest.approx(ref, rel=1e-10)
    assert common_mean_share(X - X.mean(0)).value == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- planted structure
def test_isotropic_gaussian_gives_full_rank_and_no_anisotropy():
    rng = np.random.default_rng(2)
    d = 40
    X = rng.normal(size=(8000, d))
    assert effective_rank(X).value == pytest.approx(d, rel=0.01)
    assert spectral_entropy(X).diagnostics["exp_entropy"] == pytest.approx(d, rel=0.01)
    assert abs(anisotropy(X).value) < 0.005
    assert isoscore(X).value > 0.98
    assert outlier_dimensions(X).value == 0


@pytest.mark.parametrize("r", [3, 7])
def test_rank_r_plus_noise_gives_r(r):
    rng = np.random.default_rng(r)
    d, n = 64, 3000
    basis = np.linalg.qr(rng.normal(size=(d, r)))[0]  # (d, r)
    X = 3.0 * rng.normal(size=(n, r)) @ basis.T + 1e-3 * rng.normal(size=(n, d))
    assert spectral_entropy(X).diagnostics["exp_entropy"] == pytest.approx(r, rel=0.03)
    # Roy-Vetterli uses singular values (sqrt of eigenvalues), so the noise floor weighs more
    assert effective_rank(X).value == pytest.approx(r, rel=0.1)
    assert stable_rank(X).value <= r


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.6])
def test_planted_power_law_exponent(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    d, n = 60, 10000
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    X = rng.normal(size=(n, d)) * np.sqrt(lam) @ _rotation(d, rng).T + 5.0
    est = power_law_alpha(X)
    assert est.value == pytest.approx(alpha, abs=0.05)
    assert est.diagnostics["r2"] > 0.99
    assert est.diagnostics["fit_range"] == (1, d)
    assert 0 < est.stderr < 0.05
    assert power_law_alpha(X, rank_min=5, rank_max=40).diagnostics["fit_range"] == (5, 40)


def test_power_law_fit_on_exact_spectrum():
    ev = 3.0 * np.arange(1, 101, dtype=float) ** -1.3
    fit = power_law_fit(ev, 1, None)
    assert fit["alpha"] == pytest.approx(1.3, abs=1e-12)
    assert fit["r2"] == pytest.approx(1.0)


def test_planted_outlier_dimensions_found_and_no_others():
    rng = np.random.default_rng(5)
    d = 96
    scale = np.ones(d)
    planted = np.array([7, 41, 88])
    scale[planted] = [12.0, 8.0, 20.0]
    X = rng.normal(size=(4000, d)) * scale + rng.normal(size=d)
    est = outlier_dimensions(X)
    assert est.value == 3
    np.testing.assert_array_equal(est.diagnostics["indices"], [88, 7, 41])  # largest first
    share = (scale[planted] ** 2).sum() / (scale**2).sum()
    assert est.diagnostics["variance_share"] == pytest.approx(share, rel=0.05)
    # a constant offset is a magnitude outlier but not a variance outlier
    Y = rng.normal(size=(2000, d))
    Y[:, 3] += 30.0
    assert outlier_dimensions(Y).value == 0
    np.testing.assert_array_equal(outlier_dimensions(Y, criterion="second_moment").diagnostics["indices"], [3])


def test_norm_outliers_find_sink_rows():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1000, 32))
    sinks = np.array([0, 128, 256])
    X[sinks] *= 25.0
    est = norm_outliers(X)
    assert sorted(est.diagnostics["indices"].tolist()) == sinks.tolist()
    assert est.value == pytest.approx(3 / 1000)
    assert est.diagnostics["norm_share"] > 0.5
    assert norm_outliers(rng.normal(size=(1000, 32))).value == 0


def test_dse_grows_with_intrinsic_dimension_and_reuses_neighbour_engine():
    rng = np.random.default_rng(7)
    d, n = 20, 200
    low = rng.normal(size=(n, 2)) @ rng.normal(size=(2, d))  # 2-d subspace
    high = rng.normal(size=(n, d))
    for kernel in ("gaussian", "knn"):
        a, b = dse(low, kernel=kernel).value, dse(high, kernel=kernel).value
        assert 0 < a < b <= np.log(n)
    est = dse(high)
    assert est.diagnostics["eigenvalues"][0] == pytest.approx(1.0)  # stochastic operator
    assert dse(high, max_samples=100).n_samples == 100


def test_dsmi_separated_classes_beat_random_labels():
    rng = np.random.default_rng(8)
    labels = np.repeat(np.arange(4), 60)
    X = rng.normal(size=(240, 10)) + 8.0 * rng.normal(size=(4, 10))[labels]
    good = dsmi(X, labels=labels).value
    shuffled = dsmi(X, labels=rng.permutation(labels)).value
    assert good > 0.5 and good > 5 * abs(shuffled)


def test_randomized_spectrum_matches_exact_head(aniso_data):
    exact = spectrum(aniso_data).diagnostics["eigenvalues"]
    approx = spectrum(aniso_data, method="randomized", n_components=4).diagnostics["eigenvalues"]
    np.testing.assert_allclose(approx, exact[:4], rtol=1e-8)


def test_torch_input_and_device_parameter(aniso_data):
    ref = spectrum(aniso_data).diagnostics["eigenvalues"]
    got = spectrum(torch.from_numpy(aniso_data), device="cpu").diagnostics["eigenvalues"]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_default_panel_and_registry_metadata():
    panel = set(registry.names())
    for name in ("spectrum", "power_law_alpha", "effective_rank", "anisotropy", "isoscore",
                 "outlier_dimensions", "common_mean_share"):
        assert registry.get(name).default_panel, name
        assert name in panel
    assert registry.get("effective_rank").streamable
    assert not registry.get("norm_outliers").streamable
    assert registry.get("dsmi").needs_labels


# ----------------------------------------------------------------------------- bad input
def test_zero_variance_columns_are_zero_eigenvalues():
    rng = np.random.default_rng(9)
    X = np.c_[rng.normal(size=(100, 4)), np.full((100, 2), 3.0)]
    ev = spectrum(X).diagnostics["eigenvalues"]
    np.testing.assert_allclose(ev[-2:], 0.0, atol=1e-12)
    assert effective_rank(X).value == pytest.approx(effective_rank(X[:, :4]).value, rel=1e-10)
    assert isoscore(X).value < isoscore(X[:, :4]).value  # unused directions lower IsoScore


@pytest.mark.parametrize("fn", [effective_rank, spectral_entropy, stable_rank, isoscore])
def test_constant_data_is_nan_with_warning(fn):
    with pytest.warns(RuntimeWarning, match="undefined here .*constant data"):
        assert np.isnan(fn(np.ones((20, 5))).value)


def test_power_law_too_few_eigenvalues_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="fewer than 3 positive eigenvalues"):
        assert np.isnan(power_law_alpha(np.random.default_rng(0).normal(size=(30, 2))).value)


@pytest.mark.parametrize("fn", [spectrum, power_law_alpha, effective_rank, spectral_entropy,
                                stable_rank, isoscore, anisotropy, common_mean_share,
                                outlier_dimensions, norm_outliers, dse])
def test_one_row_is_refused(fn):
    with pytest.raises(ValueError, match=r"needs at least 2 samples \(rows\) in 'X'; got n_samples=1"):
        fn(np.ones((1, 4)))


def test_parameter_errors():
    X = np.random.default_rng(0).normal(size=(50, 6))
    with pytest.raises(ValueError, match=r"The 'method' parameter of spectrum must be one of "
                                         r"\{'exact', 'randomized'\}. Got 'svd' instead."):
        spectrum(X, method="svd")
    with pytest.raises(ValueError, match=r"'n_components' parameter of spectrum must be an int in "
                                         r"\[1, d=6\]. Got 9 instead"):
        spectrum(X, method="randomized", n_components=9)
    with pytest.raises(ValueError, match=r"'n_components' .* when method='randomized'. Got None"):
        spectrum(X, method="randomized")
    with pytest.raises(ValueError, match=r"'rank_max' parameter of power_law_alpha must be an int "
                                         r"in \[4, inf\). Got 3 instead"):
        power_law_alpha(X, rank_min=2, rank_max=3)
    with pytest.raises(ValueError, match=r"'criterion' parameter of outlier_dimensions must be one"):
        outlier_dimensions(X, criterion="kurtosis")
    with pytest.raises(ValueError, match=r"'min_ratio' parameter of norm_outliers must be a float "
                                         r"in \[1, inf\]. Got 0.5 instead"):
        norm_outliers(X, min_ratio=0.5)
    with pytest.raises(ValueError, match=r"'kernel' parameter of dse must be one of"):
        dse(X, kernel="cosine")
    with pytest.raises(ValueError, match=r"isoscore needs at least 2 features"):
        isoscore(X[:, :1])


def test_zero_rows_refused_by_anisotropy():
    X = np.random.default_rng(0).normal(size=(10, 3))
    X[4] = 0.0
    with pytest.raises(ValueError, match=r"non-zero norm .* 1 zero row\(s\), the first at row 4"):
        anisotropy(X)


def test_identical_rows_refused_by_dse():
    with pytest.raises(ValueError, match="median pairwise distance, the default bandwidth, is 0"):
        dse(np.ones((10, 3)))


def test_eigenvalues_clipped_and_descending():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 30))  # n < d: 26 structural zeros
    ev = covariance_eigenvalues(Moments.init(30).update(X))
    assert np.all(ev >= 0) and np.all(np.diff(ev) <= 0)
    assert np.sum(ev > 1e-10 * ev[0]) == 4
