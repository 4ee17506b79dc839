"""Pairwise similarity measures: invariances, identities, symmetry, naive references, guards."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist

from repscope import registry
from repscope.measures import similarity as sim
from repscope.results import from_json

SIM = registry.names(family="similarity")
DISTANCES = [n for n in SIM if registry.get(n).higher_is_better is False]
# Approximate estimators checked separately (bias bound), not against exact identities.
APPROX = {"shape_mom"}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(120, 6))
    X = Z * np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.5])  # (120, 6)
    Y = Z[:, :5] @ rng.normal(size=(5, 5)) + 0.6 * rng.normal(size=(120, 5))  # (120, 5)
    return X, Y


def _orth(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


TRANSFORMS = {
    "rotation": lambda A, s: A @ _orth(A.shape[1], s),
    "translation": lambda A, s: A + np.random.default_rng(s).normal(size=A.shape[1]) * 5,
    "scale": lambda A, s: A * 3.7,
    "permutation": lambda A, s: A[:, np.random.default_rng(s).permutation(A.shape[1])],
    "invertible_linear": lambda A, s: A @ (np.random.default_rng(s).normal(size=(A.shape[1],) * 2)
                                            + 2 * np.eye(A.shape[1])),
    "per_feature_scale": lambda A, s: A * np.random.default_rng(s).uniform(0.2, 5, A.shape[1]),
}


def _value(name, X, Y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return registry.get(name)(X, Y, **kw).value


@pytest.mark.parametrize("name", SIM)
def test_declared_invariances_hold_to_1e10(name, data):
    X, Y = data
    base = _value(name, X, Y)
    for inv in registry.get(name).invariances:
        Xt, Yt = TRANSFORMS[inv](X, 1), TRANSFORMS[inv](Y, 2)
        assert _value(name, Xt, Yt) == pytest.approx(base, abs=1e-10, rel=1e-10), inv


# Transformations that must visibly change the value (declared non-invariances).
NON_INVARIANT = [
    ("cka_linear", "per_feature_scale"), ("cka_linear", "invertible_linear"),
    ("cka_linear_debiased", "invertible_linear"), ("cka_rbf", "per_feature_scale"),
    ("svcca", "invertible_linear"), ("pwcca", "rotation"),
    ("procrustes_angular", "invertible_linear"), ("procrustes_euclidean", "scale"),
    ("shape_alpha", "scale"), ("rsa", "per_feature_scale"),
    ("mutual_knn", "invertible_linear"), ("relative_representations", "per_feature_scale"),
]


@pytest.mark.parametrize(("name", "inv"), NON_INVARIANT)
def test_declared_non_invariances_change_the_value(name, inv, data):
    X, Y = data
    assert inv not in registry.get(name).invariances
    assert abs(_value(name, TRANSFORMS[inv](X, 3), Y) - _value(name, X, Y)) > 1e-3


@pytest.mark.parametrize("name", sorted(set(SIM) - APPROX))
def test_identity_gives_the_extreme_value(name, data):
    X, _ = data
    expected = 0.0 if name in DISTANCES else 1.0
    assert _value(name, X, X) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("name", [n for n in SIM if registry.get(n).symmetric])
def test_symmetric_where_claimed(name, data):
    X, Y = data
    assert _value(name, X, Y) == pytest.approx(_value(name, Y, X), abs=1e-10)


def test_pwcca_is_not_symmetric(data):
    X, Y = data
    assert not registry.get("pwcca").symmetric
    assert abs(_value("pwcca", X, Y) - _value("pwcca", Y, X)) > 1e-4


@pytest.mark.parametrize("name", SIM)
def test_bad_inputs_are_refused(name, data):
    X, Y = data
    fn = registry.get(name)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(bad, Y)
    with pytest.raises(TypeError, match="floating-point dtype"):
        fn(X.astype(int), Y)
    with pytest.raises(ValueError, match="same number of rows"):
        fn(X, Y[:-1])
    est = fn(X.astype(np.float32), Y.astype(np.float32))
    assert from_json(est.to_json()) == est
    assert est.diagnostics["n_effective"] == X.shape[0]


# ------------------------------------------------------------------ naive references -------
def _centre(A):
    return A - A.mean(0)


def _gram_cka(K, L):
    n = K.shape[0]
    H = np.eye(n) - 1 / n

    def hsic(A, B):
        return np.trace(A @ H @ B @ H)

    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def test_linear_cka_matches_gram_form(data):
    X, Y = data
    assert sim.cka_linear(X, Y).value == pytest.approx(_gram_cka(X @ X.T, Y @ Y.T), abs=1e-12)


def _hsic_u(K, L):
    """Song et al. (2012), eq. (5), on raw (uncentred) Gram matrices."""
    n = K.shape[0]
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    t = np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
    t -= 2 / (n - 2) * one @ K @ L @ one
    return t / (n * (n - 3))


def test_debiased_cka_matches_unbiased_hsic_on_raw_grams(data):
    X, Y = data
    X = X + 4.0  # the naive reference does not centre: checks translation invariance too
    K, L = X @ X.T, Y @ Y.T
    ref = _hsic_u(K, L) / math.sqrt(_hsic_u(K, K) * _hsic_u(L, L))
    assert sim.cka_linear_debiased(X, Y).value == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("n", [32, 256])
def test_debiased_cka_of_independent_gaussians_is_near_zero(n):
    rng = np.random.default_rng(n)
    biased, debiased = [], []
    for _ in range(8):
        X, Y = rng.normal(size=(n, 64)), rng.normal(size=(n, 64))
        biased.append(sim.cka_linear(X, Y).value)
        debiased.append(sim.cka_linear_debiased(X, Y).value)
    assert abs(np.mean(debiased)) < 0.03
    assert np.mean(biased) > 0.15  # the biased estimator is far from its population value 0


def test_rbf_cka_matches_gram_form_and_nystroem_converges(data):
    X, Y = data
    est = sim.cka_rbf(X, Y, block_size=7)  # odd block size exercises the blockwise sums

    def gram(A, sigma):
        D2 = ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
        return np.exp(-D2 / (2 * sigma**2))

    sx = np.median(pdist(X))
    sy = np.median(pdist(Y))
    assert est.diagnostics["sigma_x"] == pytest.approx(sx)
    assert est.value == pytest.approx(_gram_cka(gram(X, sx), gram(Y, sy)), abs=1e-10)
    full = sim.cka_rbf_nystroem(X, Y, n_landmarks=X.shape[0])
    assert full.value == pytest.approx(est.value, abs=1e-8)
    approx = sim.cka_rbf_nystroem(X, Y, n_landmarks=40)
    assert approx.diagnostics["approximate"] is True
    assert approx.value == pytest.approx(est.value, abs=0.05)


def _qr_cca(X, Y):
    qx, _ = np.linalg.qr(_centre(X))
    qy, _ = np.linalg.qr(_centre(Y))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def test_cca_family_matches_qr_reference(data):
    X, Y = data
    rho = _qr_cca(X, Y)
    est = sim.cca_mean(X, Y)
    np.testing.assert_allclose(est.diagnostics["correlations"], rho, atol=1e-10)
    assert est.value == pytest.approx(rho.mean(), abs=1e-10)
    # SVCCA = mean CCA between the top principal subspaces
    U, S, Vt = np.linalg.svd(_centre(X), full_matrices=False)
    k = int(np.searchsorted(np.cumsum(S**2) / np.sum(S**2), 0.9)) + 1
    Uy, Sy, _ = np.linalg.svd(_centre(Y), full_matrices=False)
    ky = int(np.searchsorted(np.cumsum(Sy**2) / np.sum(Sy**2), 0.9)) + 1
    ref = _qr_cca(U[:, :k] * S[:k], Uy[:, :ky] * Sy[:ky]).mean()
    assert sim.svcca(X, Y, variance_kept=0.9).value == pytest.approx(ref, abs=1e-10)


def test_pwcca_matches_morcos_weighting(data):
    X, Y = data
    qx, _ = np.linalg.qr(_centre(X))
    qy, _ = np.linalg.qr(_centre(Y))
    U, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    H = qx @ U  # canonical variates of X
    w = np.abs(H.T @ _centre(X)).sum(1)
    assert sim.pwcca(X, Y).value == pytest.approx(np.sum(w / w.sum() * rho), abs=1e-10)


def test_procrustes_matches_scipy(data):
    X, Y = data
    Xc, Yc = _centre(X), np.hstack([_centre(Y), np.zeros((X.shape[0], 1))])  # zero padding
    R, _ = orthogonal_procrustes(Yc, Xc)
    resid = np.sum((Xc - Yc @ R) ** 2)
    assert sim.procrustes_euclidean(X, Y).value == pytest.approx(math.sqrt(resid / 120), abs=1e-10)
    nx, ny = np.linalg.norm(Xc), np.linalg.norm(Yc)
    cos = np.trace(Xc.T @ Yc @ R) / (nx * ny)
    assert sim.procrustes_angular(X, Y).value == pytest.approx(math.acos(cos), abs=1e-10)


def test_shape_alpha_interpolates_between_cca_and_procrustes(data):
    X, Y = data
    assert sim.shape_alpha(X, Y, alpha=1.0).value == pytest.approx(
        sim.procrustes_angular(X, Y).value, abs=1e-10)
    # alpha = 0: angle between the whitened representations, arccos(mean CCA)
    assert sim.shape_alpha(X, Y, alpha=0.0).value == pytest.approx(
        math.acos(np.sum(_qr_cca(X, Y)) / math.sqrt(6 * 5)), abs=1e-10)
    with pytest.raises(ValueError, match=r"'alpha' parameter of shape_alpha must be a float in \[0, 1\]"):
        sim.shape_alpha(X, Y, alpha=1.5)


def test_shape_moment_estimator_has_lower_bias_than_plugin():
    rng = np.random.default_rng(7)
    d, n, c = 10, 30, 0.6  # population Procrustes similarity = c (isotropic, Sigma_xy = c I)
    mom, plug = [], []
    for _ in range(30):
        Z = rng.normal(size=(n, d))
        Y = c * Z + math.sqrt(1 - c * c) * rng.normal(size=(n, d))
        est = sim.shape_mom(Z, Y)
        mom.append(est.diagnostics["unclipped"])
        plug.append(est.plugin)
    bias_mom, bias_plug = abs(np.mean(mom) - c), abs(np.mean(plug) - c)
    assert bias_plug > 0.05
    assert bias_mom < 0.6 * bias_plug
    assert bias_mom < est.bias_bound + 3 * np.std(mom) / math.sqrt(len(mom))


def test_cycle_moments_match_brute_force():
    rng = np.random.default_rng(3)
    from itertools import combinations

    from repscope.measures.similarity.shape import cycle_moments

    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    ref = 0.0
    for i1, i2, i3, i4 in combinations(range(7), 4):
        ref += (Y[i1] @ Y[i2]) * (X[i2] @ X[i3]) * (Y[i3] @ Y[i4]) * (X[i4] @ X[i1])
    got = cycle_moments(X, Y, 2)
    assert got[1] == pytest.approx(ref / math.comb(7, 4), rel=1e-12)
    pairs = [(Y[a] @ Y[b]) * (X[b] @ X[a]) for a, b in combinations(range(7), 2)]
    assert got[0] == pytest.approx(np.mean(pairs), rel=1e-12)


@pytest.mark.parametrize(("rdm", "metric"), [("euclidean", "euclidean"),
                                              ("correlation", "correlation"),
                                              ("cosine", "cosine")])
@pytest.mark.parametrize("compare", ["pearson", "spearman", "kendall"])
def test_rsa_matches_pdist_reference(data, rdm, metric, compare):
    X, Y = data
    a, b = pdist(X, metric), pdist(Y, metric)
    ref = {"pearson": stats.pearsonr, "spearman": stats.spearmanr,
           "kendall": stats.kendalltau}[compare](a, b).statistic
    assert sim.rsa(X, Y, rdm=rdm, compare=compare, block_size=17).value == pytest.approx(ref, abs=1e-10)


def test_rsa_subsamples_pairs_beyond_max_pairs(data):
    X, Y = data
    exact = sim.rsa(X, Y)
    sub = sim.rsa(X, Y, max_pairs=3000, seed=1)
    assert exact.diagnostics["exact"] and not sub.diagnostics["exact"]
    assert sub.diagnostics["pairs_used"] == 3000
    assert sub.value == pytest.approx(exact.value, abs=0.05)


def test_neighbourhood_measures_match_sklearn(data):
    from sklearn.neighbors import NearestNeighbors

    X, Y = data
    k = 7
    nx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    ny = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)[:, 1:]
    inter = np.array([len(set(a) & set(b)) for a, b in zip(nx, ny, strict=True)])
    assert sim.mutual_knn(X, Y, k=k).value == pytest.approx(np.mean(inter / k))
    jac = sim.knn_jaccard(X, Y, k=k)
    np.testing.assert_allclose(jac.diagnostics["local"], inter / (2 * k - inter))
    with pytest.raises(ValueError, match=r"'k' parameter of mutual_knn must be an int in \[1, n_samples=120\)"):
        sim.mutual_knn(X, Y, k=120)


def test_relative_representations_matches_loop(data):
    X, Y = data
    est = sim.relative_representations(X, Y, n_anchors=10, seed=3)
    anchors = est.diagnostics["anchors"]

    def rel(A):
        A = _centre(A)
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        return A @ A[anchors].T

    Rx, Ry = rel(X), rel(Y)
    cos = np.sum(Rx * Ry, 1) / (np.linalg.norm(Rx, axis=1) * np.linalg.norm(Ry, axis=1))
    assert est.value == pytest.approx(cos.mean(), abs=1e-12)


# --------------------------------------------------------------------------- streaming ------
def test_linear_cka_streams_in_random_batches_and_merges(data):
    X, Y = data
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(np.arange(1, 120), size=6, replace=False))
    parts = [sim.LinearCKAAccumulator.init(6, 5).update(x, y)
             for x, y in zip(np.split(X, cuts), np.split(Y, cuts), strict=True)]
    left = parts[0]
    for p in parts[1:]:
        left = left.merge(p)
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = p.merge(right)
    batch = sim.cka_linear(X, Y).value
    assert left.compute().value == pytest.approx(batch, abs=1e-12)
    assert right.compute().value == pytest.approx(batch, abs=1e-12)
    assert sim.cka_linear(X, Y, batch_size=13).value == pytest.approx(batch, abs=1e-12)
    assert registry.get("cka_linear").streamable


def test_torch_input_gives_same_value(data):
    X, Y = data
    for name in ("cka_linear", "cca_mean", "procrustes_angular", "mutual_knn", "rsa"):
        assert _value(name, torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(
            _value(name, X, Y), abs=1e-10)


# ------------------------------------------------------------------------- guard rails ------
def test_cca_refuses_n_not_above_d():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 30)), rng.normal(size=(20, 5))
    for fn in (sim.cca_mean, sim.pwcca):
        with pytest.raises(ValueError, match=r"needs more samples than features \(n_samples=20 <= 30 for 'X'\)"):
            fn(X, Y)
    with pytest.warns(UserWarning, match="equal 1 by construction"):
        sim.svcca(X, Y)


def test_debiased_hsic_needs_four_rows():
    X = np.arange(6.0).reshape(3, 2) ** 2
    with pytest.raises(ValueError, match="needs at least 4 samples"):
        sim.cka_linear_debiased(X, X)


def test_zero_variance_columns_warn_and_constant_input_is_refused(data):
    X, Y = data
    Xz = X.copy()
    Xz[:, 2] = 1.5
    with pytest.warns(UserWarning, match="1 of 6 columns of 'X' have zero variance"):
        est = sim.cca_mean(Xz, Y)
    assert est.diagnostics["n_zero_variance_x"] == 1
    assert est.diagnostics["rank_x"] == 5
    const = np.ones_like(X)
    for name in ("cka_linear", "cka_linear_debiased", "cca_mean", "procrustes_angular", "cka_rbf"):
        with pytest.raises(ValueError, match="zero variance"):
            _value(name, const, Y)


def test_rsa_guards(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"'rdm' parameter of rsa must be one of \{'euclidean', 'correlation', 'cosine'\}"):
        sim.rsa(X, Y, rdm="manhattan")
    Xc = X.copy()
    Xc[4] = 2.0
    with pytest.raises(ValueError, match="1 row\\(s\\) of 'X' are constant"):
        sim.rsa(Xc, Y, rdm="correlation")


# -------------------------------------------------------------- ReSi-style grounding --------
def _layer_chain(n_layers=5, n=120, d=12, seed=0):
    """Each layer is a random rotation of the previous one plus fresh noise."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(size=(n, d)) * np.linspace(2, 0.5, d)]
    for _ in range(n_layers - 1):
        layers.append(layers[-1] @ _orth(d, int(rng.integers(1 << 30))) + 0.45 * rng.normal(size=(n, d)))
    return {f"layer{i}": A for i, A in enumerate(layers)}


def test_similarity_decreases_with_layer_distance():
    from repscope.measures.similarity import similarity_matrix

    reps = _layer_chain()
    m = len(reps)
    gap = np.abs(np.subtract.outer(np.arange(m), np.arange(m)))
    off = ~np.eye(m, dtype=bool)
    skip = {"pwcca"}  # rotation-dependent weights: no monotone law for rotated chains
    fast = {"cka_rbf_nystroem": {"n_landmarks": 40}, "shape_mom": {"n_moments": 3}}
    for name in sorted(set(SIM) - skip):
        M = similarity_matrix(reps, name, params=fast.get(name), diagonal=False).values
        sign = 1 if registry.get(name).higher_is_better else -1
        rho = stats.spearmanr(gap[off], sign * M[off]).statistic
        assert rho < -0.9, (name, rho)
