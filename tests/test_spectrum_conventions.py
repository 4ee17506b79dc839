"""Paper conventions beside repscope's defaults, and the finite-sample check of spectral results."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from repscope import registry
from repscope.measures.dimension import participation_ratio
from repscope.measures.spectrum import (
    FiniteSampleWarning,
    effective_rank,
    effective_rank_uncentred,
    isoscore,
    measures_from_batches,
    power_law_alpha,
    spectral_entropy,
    spectrum,
    stable_rank,
    von_neumann_entropy,
)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "spectral_conventions.py"


def _bench():
    spec = importlib.util.spec_from_file_location("spectral_conventions", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------- VNE (Kim et al.)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("shape", [(300, 20), (15, 40)])
def test_von_neumann_entropy_is_kims_vne(shape):
    """Kim et al. 2023: normalise rows, rho = Z^T Z / n (uncentred), -sum lambda log lambda."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=shape) * np.geomspace(3, 0.3, shape[1]) + 1.5
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(Z.T @ Z / len(Z)).clip(0)
    est = von_neumann_entropy(X)
    assert est.value == pytest.approx(_entropy(lam), rel=1e-10)
    assert est.params["convention"] == "kim2023"
    assert est.diagnostics["eigenvalues"].sum() == pytest.approx(1.0)
    # invariant to rescaling each row, not to translation (unlike spectral_entropy)
    assert von_neumann_entropy(X * rng.uniform(0.1, 10, size=(len(X), 1))).value == pytest.approx(
        est.value, rel=1e-10)
    assert abs(von_neumann_entropy(X + 5.0).value - est.value) > 0.05
    assert spectral_entropy(X + 5.0).value == pytest.approx(spectral_entropy(X).value, rel=1e-9)


def test_von_neumann_entropy_refuses_zero_rows():
    X = np.random.default_rng(0).normal(size=(10, 4))
    X[3] = 0
    with pytest.raises(ValueError, match=r"von_neumann_entropy needs rows with non-zero norm .* "
                                         r"1 zero row\(s\), the first at row 3"):
        von_neumann_entropy(X)


# ----------------------------------------------------------------------------- erank (Roy & Vetterli)
def test_effective_rank_uncentred_is_roy_vetterli_on_the_matrix_as_given():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 30)) * np.geomspace(2, 0.1, 30) + rng.normal(size=30)
    s = np.linalg.svd(X, compute_uv=False)
    est = effective_rank_uncentred(X)
    assert est.value == pytest.approx(np.exp(_entropy(s / s.sum())), rel=1e-9)
    assert est.params["convention"] == "roy_vetterli2007"
    assert effective_rank(X).params["convention"] == "centred"
    Xc = X - X.mean(0)
    assert effective_rank_uncentred(Xc).value == pytest.approx(effective_rank(X).value, rel=1e-9)
    # streamable from the same Moments, in any batch sizes
    acc = registry.get("effective_rank_uncentred").accumulator(30)
    for lo in range(0, 200, 37):
        acc = acc.update(X[lo:lo + 37])
    assert acc.compute().value == pytest.approx(est.value, rel=1e-10)


def test_documented_convention_numbers():
    """The numbers in docs/spectrum.md's conventions table (benchmarks/spectral_conventions.py)."""
    cv = _bench().convention_values()
    assert cv["spectral_entropy"] == pytest.approx(3.373, abs=5e-3)
    assert cv["von_neumann_entropy"] == pytest.approx(1.781, abs=5e-3)
    assert cv["effective_rank"] == pytest.approx(54.82, abs=0.01)
    assert cv["effective_rank_uncentred"] == pytest.approx(42.88, abs=0.01)
    assert cv["nc2_equinorm_ddof0"] == pytest.approx(0.1610, abs=5e-4)
    assert cv["nc2_equinorm_ddof1"] == pytest.approx(cv["nc2_equinorm_ddof0"] * np.sqrt(10 / 9),
                                                     rel=1e-12)


# ----------------------------------------------------------------------------- finite sample
FS = {
    "spectrum": spectrum, "power_law_alpha": power_law_alpha, "effective_rank": effective_rank,
    "effective_rank_uncentred": effective_rank_uncentred, "spectral_entropy": spectral_entropy,
    "stable_rank": stable_rank, "isoscore": isoscore, "von_neumann_entropy": von_neumann_entropy,
    "participation_ratio": lambda X: participation_ratio(X, n_boot=0),
}


@pytest.mark.parametrize("name", list(FS))
def test_finite_sample_warning_recorded_and_raised(name):
    rng = np.random.default_rng(2)
    with pytest.warns(FiniteSampleWarning, match=rf"{name}: n=30 rows, d=60 features; n <= d"):
        est = FS[name](rng.normal(size=(30, 60)))
    rec = est.diagnostics
    assert rec["finite_sample_biased"] and rec["finite_sample_rank_deficient"]
    assert rec["finite_sample_d"] == 60 and est.n_samples == 30
    # n > d but few rows per effective dimension: still flagged, with the PR bias estimate
    with pytest.warns(FiniteSampleWarning, match=r"rows per effective dimension"):
        rec = FS[name](rng.normal(size=(150, 60))).diagnostics
    assert not rec["finite_sample_rank_deficient"] and rec["finite_sample_rows_per_dim"] < 10
    assert rec["finite_sample_pr_bias"] == pytest.approx(rec["finite_sample_effective_dim"] / 150)
    # plenty of rows: recorded, silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", FiniteSampleWarning)
        rec = FS[name](rng.normal(size=(400, 8))).diagnostics
    assert not rec["finite_sample_biased"] and rec["finite_sample_rows_per_dim"] > 10


def test_streamed_results_carry_the_check():
    X = np.random.default_rng(3).normal(size=(40, 50))
    with pytest.warns(FiniteSampleWarning):
        out = measures_from_batches(["isoscore", "effective_rank"], [X[:20], X[20:]])
    assert out["isoscore"].diagnostics["finite_sample_rank_deficient"]


def test_isotropic_bias_matches_the_participation_ratio_law():
    """For Gaussian rows PR_hat ~ PR / (1 + PR / n); IsoScore is exactly (PR - 1) / (d - 1),
    so isotropic data at n = d / 2 reads IsoScore ~ 1/3 (documented and in the warning)."""
    d = 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiniteSampleWarning)
        iso, alpha, pr5 = [], [], []
        for s in range(4):
            rng = np.random.default_rng(10 + s)
            X = rng.normal(size=(d // 2, d))
            iso.append(isoscore(X).value)
            alpha.append(power_law_alpha(X).value)
            pr = participation_ratio(X, n_boot=0).value
            assert iso[-1] == pytest.approx((pr - 1) / (d - 1), rel=1e-10)
            pr5.append(participation_ratio(rng.normal(size=(5 * d, d)), n_boot=0).value)
    assert np.mean(iso) == pytest.approx((d / 3 - 1) / (d - 1), abs=0.01)  # 0.32
    assert np.mean(alpha) == pytest.approx(0.84, abs=0.08)  # true 0
    assert np.mean(pr5) == pytest.approx(d / (1 + d / (5 * d)), rel=0.02)  # 83.3, true 100
