"""Evaluation metrics of sparse dictionaries against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from repscope.dictionaries import evaluate as ev
from repscope.dictionaries.inspect import compare_datasets, feature_stats, quantile_samples
from repscope.dictionaries.sae import TopKSAE
from repscope.results import from_json


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 7)) * np.arange(1, 8) + 3.0
    X_hat = X + rng.standard_normal(X.shape) * 0.7
    return X, X_hat


def test_fvu_is_complement_of_variance_weighted_r2(data):
    X, X_hat = data
    expected = 1 - r2_score(X, X_hat, multioutput="variance_weighted")
    assert ev.fvu(X, X_hat) == pytest.approx(expected, rel=1e-12)


def test_fvu_extremes(data):
    X, _ = data
    mean_recon = np.broadcast_to(X.mean(0), X.shape)
    assert ev.fvu(X, mean_recon) == pytest.approx(1.0, rel=1e-12)
    assert ev.fvu(X, X) == 0.0


def test_fvu_constant_columns_error():
    X = np.ones((5, 3))
    with pytest.raises(ValueError, match="zero total variance"):
        ev.fvu(X, X)


def test_mse_cosine_shrinkage_closed_forms(data):
    X, X_hat = data
    assert ev.mse(X, X_hat) == pytest.approx(np.mean((X - X_hat) ** 2))
    cos = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(X, X_hat, strict=True)])
    assert ev.cosine(X, X_hat) == pytest.approx(cos, rel=1e-12)
    assert ev.shrinkage(X, 0.5 * X) == pytest.approx(0.5)
    assert ev.shrinkage(X, X) == pytest.approx(1.0)


def test_shape_mismatch_error(data):
    X, X_hat = data
    with pytest.raises(ValueError, match="same shape"):
        ev.fvu(X, X_hat[:, :3])


def test_sparsity_metrics():
    Z = np.array([[0, 1.0, 0, 0], [2.0, 1.0, 0, 0], [0, 3.0, 0, 0], [0, 1.0, 0, 0.1]])
    assert ev.l0(Z).tolist() == [1, 2, 1, 2]
    freq = ev.firing_frequency(Z)
    assert freq.tolist() == [0.25, 1.0, 0.0, 0.25]
    assert ev.dead_fraction(freq) == 0.25
    assert ev.dense_fraction(freq, 0.5) == 0.25
    counts, edges = ev.feature_density_histogram(freq, bins=8)
    assert counts.sum() == 3 and edges[-1] == 0.0


def test_decoder_max_cosine_and_recovery():
    W = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0.6, 0.8]])
    assert ev.decoder_max_cosine(W, block=2).tolist() == pytest.approx([0.0, 0.6, 0.6])
    assert ev.mean_max_cosine(W, -3 * W) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero row"):
        ev.decoder_max_cosine(np.zeros((2, 3)))


def test_hungarian_stability_recovers_permutation():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((20, 10))
    perm = rng.permutation(20)
    score, ia, ib = ev.match_dictionaries(A, 2 * A[perm])
    assert score == pytest.approx(1.0)
    assert np.array_equal(perm[ib], ia)
    other, _, _ = ev.match_dictionaries(A, rng.standard_normal((20, 10)))
    assert other < 0.8


@pytest.fixture(scope="module")
def small_sae() -> TopKSAE:
    torch.manual_seed(0)
    return TopKSAE(6, 24, k=3, seed=1).eval()


def test_evaluate_sae_matches_plain_functions(small_sae):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((257, 6)).astype(np.float32)
    res = ev.evaluate_sae(small_sae, X, batch_size=50)
    with torch.no_grad():
        Z = small_sae.encode(torch.from_numpy(X))
        X_hat = small_sae.decode(Z).numpy()
    assert res.value == pytest.approx(ev.fvu(X, X_hat), rel=1e-6)
    assert res.mse == pytest.approx(ev.mse(X, X_hat), rel=1e-6)
    assert res.cosine == pytest.approx(ev.cosine(X, X_hat), rel=1e-6)
    assert res.l0_mean == pytest.approx(3.0)
    assert res.dead_fraction == ev.dead_fraction(ev.firing_frequency(Z.numpy()))
    assert from_json(res.to_json()) == res


def test_feature_stats_match_brute_force(small_sae):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 6)).astype(np.float32)
    stats = feature_stats(small_sae, X, top_k=5, n_random=10, batch_size=64)
    Z = small_sae.encode(torch.from_numpy(X)).detach().numpy()
    assert np.array_equal(stats.count, (Z > 0).sum(0))
    for j in range(Z.shape[1]):
        order = np.argsort(-Z[:, j], kind="stable")[:5]
        live = Z[order, j] > 0
        assert np.allclose(stats.top_values[j][live], Z[order, j][live])
        rows = stats.sample_rows[j][stats.sample_rows[j] >= 0]
        assert len(rows) == min(10, (Z[:, j] > 0).sum()) and (Z[rows, j] > 0).all()
    # the reservoir sample does not depend on the batch size
    again = feature_stats(small_sae, X, top_k=5, n_random=10, batch_size=500)
    assert np.array_equal(np.sort(again.top_rows, 1), np.sort(stats.top_rows, 1))
    q = quantile_samples(stats, int(np.argmax(stats.count)), n_bins=3, per_bin=2)
    assert len(q) == 3 and q[0]["low"] <= q[-1]["high"]


def test_compare_datasets_finds_planted_difference(small_sae):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((2000, 6)).astype(np.float32)
    B = A.copy()
    B[:, 0] += 2.0  # shifts which latents fire
    a = feature_stats(small_sae, A, n_random=0)
    b = feature_stats(small_sae, B, n_random=0)
    df = compare_datasets(a, b)
    assert df["significant"].any()
    same = compare_datasets(a, a)
    assert not same["significant"].any() and np.allclose(same["p"], 1.0)
    assert (df["q"] >= df["p"] - 1e-15).all()


def test_semi_nmf_objective_monotone_and_recovers_nonnegative_factors():
    from repscope.dictionaries.nmf import semi_nmf, semi_nmf_codes

    rng = np.random.default_rng(5)
    D = rng.standard_normal((6, 12))  # mixed-sign directions
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = rng.exponential(1.0, (400, 6)) * (rng.random((400, 6)) < 0.4)  # sparse, non-negative
    X = Z @ D
    fit = semi_nmf(X, k=6, n_iter=300, seed=0)
    assert (fit.H >= 0).all()
    assert (np.diff(fit.objective) <= 1e-9 * fit.objective[:-1]).all()
    assert ev.fvu(X, fit.H @ fit.W) < 0.02
    assert ev.mean_max_cosine(D, fit.W) > 0.9
    H_new = semi_nmf_codes(X[:20], fit.W, n_iter=300)
    assert (H_new >= 0).all() and ev.fvu(X[:20], H_new @ fit.W) < 0.05
    with pytest.raises(ValueError, match=r"The 'k' parameter of semi_nmf must be an int in \[1, n_samples=400\]"):
        semi_nmf(X, k=401)


def test_feature_page_without_token_metadata(small_sae, tmp_path):
    import pandas as pd

    from repscope.dictionaries.page import feature_page

    X = np.random.default_rng(6).standard_normal((60, 6)).astype(np.float32)
    stats = feature_stats(small_sae, X, top_k=3, n_random=4)
    meta = pd.DataFrame({"doc_id": np.arange(60), "text": [f"document <{i}>" for i in range(60)]})
    page = feature_page(tmp_path / "p.html", stats, meta=meta, n_features=2).read_text()
    assert page.count('class="card"') == 2 and "document &lt;" in page
    bare = feature_page(tmp_path / "q.html", stats, features=[0, 1]).read_text()
    assert "Latent 0" in bare and "Latent 1" in bare
