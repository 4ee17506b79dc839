"""DSE and DSMI against Liao et al. (2023): the reference settings, log k on separated clusters,
DSMI about 0 on independent labels, the default bandwidth, and the parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repscope.measures.spectrum import dse, dse_liao2023, dsmi, dsmi_liao2023


def _reference_dse(X: np.ndarray, sigma: float = 10.0, t: int = 1) -> float:
    """The reference code's steps (dse_dsmi 1.1), written out: Gaussian kernel with its
    1 / (sigma sqrt(2 pi)) factor, Deg^-1/2 G Deg^-1/2, |eigenvalues|^t, + eps, log2."""
    D = np.sqrt(np.maximum(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1), 0))
    G = np.exp(-(D**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    deg = 1 / np.sqrt(G.sum(1))
    ev = np.abs(np.linalg.eigvalsh(deg[:, None] * G * deg[None, :])) ** t
    p = ev / ev.sum() + np.finfo(float).eps
    return float(-(p * np.log2(p)).sum())


def _clusters(k: int, per: int, spread: float, distance: float, seed: int = 0, d: int = 10):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, d))
    C *= distance / np.linalg.norm(C, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), per)
    return C[y] + spread * rng.normal(size=(k * per, d)), y


# ----------------------------------------------------------------------------- reference settings
@pytest.mark.parametrize("t", [1, 2])
def test_dse_liao2023_matches_the_reference_formula(t):
    rng = np.random.default_rng(0)
    for X in (rng.uniform(size=(150, 32)), 4.0 * rng.normal(size=(120, 8))):
        est = dse_liao2023(X, t=t)
        # the reference adds eps to each of the n probabilities: about n eps log2(1/eps) bits
        assert est.value == pytest.approx(_reference_dse(X, t=t), abs=1e-10)
    assert est.params["convention"] == "liao2023"
    assert (est.params["kernel"], est.params["density_alpha"], est.params["unit"]) == (
        "gaussian", 0.0, "bits")


@pytest.mark.parametrize("k", [2, 5, 10])
def test_liao_settings_read_log2_k_on_separated_clusters(k):
    """Clusters much tighter than sigma = 10 and much farther apart: k blocks of rank ~1."""
    X, _ = _clusters(k, per=20, spread=0.05, distance=300.0)
    assert dse_liao2023(X).value == pytest.approx(np.log2(k), abs=0.02)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_default_reads_log_k_on_separated_clusters(k):
    """Separated clusters are separate pieces of the k-NN graph: the bandwidth is taken within
    them, eigenvalue 1 has multiplicity k, and DSE -> log k once the within-cluster modes have
    decayed. At t = 1 the within-cluster entropy adds to log k."""
    X, _ = _clusters(k, per=50, spread=0.5, distance=100.0)
    est = dse(X, t=10)
    assert est.value == pytest.approx(np.log(k), abs=0.01)
    assert est.diagnostics["n_components"] == k
    assert est.diagnostics["n_unit_eigenvalues"] == k
    assert dse(X).value > np.log(k) + 0.5
    assert dse(X, unit="bits", t=10).value == pytest.approx(np.log2(k), abs=0.015)
    # the plain median heuristic spans the clusters: they merge and DSE collapses to 0
    assert dse(X, sigma="median", t=10).value < 0.01


def test_clusters_vs_noise_order_is_stable_across_t():
    X, _ = _clusters(5, per=50, spread=0.5, distance=100.0)
    N = np.random.default_rng(5).uniform(size=X.shape)
    ts = (1, 2, 3, 5, 10)
    assert all(dse(X, t=t).value > dse(N, t=t).value + 0.1 for t in ts)
    # with the plain median heuristic the order flips between t = 1 and t = 2
    med = [dse(X, sigma="median", t=t).value - dse(N, sigma="median", t=t).value for t in ts[:2]]
    assert med[0] < 0 < med[1]


def test_default_bandwidth_is_the_median_heuristic_on_data_in_one_piece():
    X = np.random.default_rng(1).normal(size=(150, 6))
    est = dse(X)
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    assert est.diagnostics["bandwidth"] == pytest.approx(np.median(D[~np.eye(150, dtype=bool)]),
                                                         rel=1e-12)
    assert est.diagnostics["n_components"] == 1
    assert est.value == dse(X, sigma="median").value
    assert dse(X, sigma=est.diagnostics["bandwidth"]).value == pytest.approx(est.value, rel=1e-12)


def test_adaptive_kernel_is_scale_free_and_handles_duplicates():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 5))
    a = dse(X, kernel="adaptive")
    assert a.diagnostics["bandwidth_rule"] == "self_tuning"
    assert dse(7.5 * X + 3.0, kernel="adaptive").value == pytest.approx(a.value, rel=1e-9)
    Xd = np.r_[X, np.repeat(X[:3], 15, axis=0)]  # rows with more than k duplicates
    assert np.isfinite(dse(Xd, kernel="adaptive").value)


# ----------------------------------------------------------------------------- DSMI
@pytest.mark.parametrize("C", [2, 10, 50])
def test_dsmi_is_about_zero_on_independent_labels(C):
    """Matched n: the full-minus-conditional form read 0.03 / 0.21 / 0.65 nats here."""
    vals = []
    for s in range(3):
        rng = np.random.default_rng(300 + s)
        X, y = rng.uniform(size=(400, 10)), rng.integers(0, C, 400)
        est = dsmi(X, labels=y, seed=s)
        assert abs(est.value) < 0.03  # about 5 sd of the estimator here
        vals.append(est.value)
    assert abs(np.mean(vals)) < 0.015


def test_dsmi_is_positive_on_informative_labels_and_reaches_log_c():
    X, y = _clusters(4, per=60, spread=1.0, distance=20.0, seed=8)
    est = dsmi(X, labels=y)
    assert est.value > 0.5
    assert est.params["n_repeats"] == 5
    assert dsmi(X, labels=y, t=20).value == pytest.approx(np.log(4), abs=0.02)  # the true MI
    shuffled = np.random.default_rng(9).permutation(y)
    assert abs(dsmi(X, labels=shuffled).value) < 0.05
    ref = dsmi_liao2023(X / 4, labels=y)  # sigma = 10 in data units: clusters 5 apart
    assert ref.value > 0.5 and ref.params["unit"] == "bits"


def test_dsmi_monte_carlo_error_is_calibrated():
    """baseline_mc_stderr describes the spread over the random baseline subsets (seed)."""
    rng = np.random.default_rng(4)
    X, y = rng.uniform(size=(240, 6)), rng.integers(0, 6, 240)
    runs = [dsmi(X, labels=y, seed=s) for s in range(12)]
    sd = np.std([r.value for r in runs], ddof=1)
    se = np.mean([r.diagnostics["baseline_mc_stderr"] for r in runs])
    assert 0.5 < sd / se < 2.0


# ----------------------------------------------------------------------------- parameters
def test_parameter_errors():
    X = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(ValueError, match=r"The 'sigma' parameter of dse must be None with "
                                         r"kernel='adaptive' \(it is the bandwidth of "
                                         r"kernel='gaussian' only\). Got 1.0 instead."):
        dse(X, kernel="adaptive", sigma=1.0)
    with pytest.raises(ValueError, match=r"The 'sigma' parameter of dse must be one of "
                                         r"\{'median'\}. Got 'mean' instead."):
        dse(X, sigma="mean")
    with pytest.raises(ValueError, match=r"The 'unit' parameter of dsmi must be one of"):
        dsmi(X, labels=np.arange(40) % 2, unit="dits")
    with pytest.raises(ValueError, match=r"The 'n_repeats' parameter of dsmi must be an int in "
                                         r"\[1, inf\). Got 0 instead."):
        dsmi(X, labels=np.arange(40) % 2, n_repeats=0)
    with pytest.raises(ValueError, match=r"The 'sigma' parameter of dse_liao2023 must be a float"):
        dse_liao2023(X, sigma=-1.0)


def test_device_parameter_runs_on_cpu():
    X = np.random.default_rng(0).normal(size=(60, 4))
    assert dse(torch.from_numpy(X), device="cpu").value == pytest.approx(dse(X).value, rel=1e-12)
