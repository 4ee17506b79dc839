"""DANCo, MiND_ML, MiND_KL, GeoMLE, TLE and MADA against independent computations of their papers'
definitions on small data (full distance matrices, numerical integration, brute force)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq, minimize_scalar
from scipy.spatial.distance import cdist
from scipy.special import i0, i0e, i1

from repscope.data import manifolds as M
from repscope.measures import dimension as D
from repscope.measures.dimension.danco import (
    a_inverse,
    danco_reference,
    kl_mind,
    kl_von_mises,
    neighbour_angles,
)
from repscope.neighbors import knn


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("REPSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _sorted_distances(X):
    Dm = cdist(X, X)
    np.fill_diagonal(Dm, np.inf)
    order = np.argsort(Dm, axis=1, kind="stable")
    return np.take_along_axis(Dm, order, 1), order  # (n, n) ascending, self last


@pytest.fixture(scope="module")
def small():
    X = M.nonlinear(250, 4, 9, seed=11).X
    r, order = _sorted_distances(X)
    return X, r, order


# ----------------------------------------------------------------------------- MiND_ML


def _mind_loglik(d, rho, k):  # Rozza et al. 2012: sum log(k d rho^(d-1) (1 - rho^d)^(k-1))
    return np.sum(np.log(k * d) + (d - 1) * np.log(rho) + (k - 1) * np.log(1 - rho**d))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mind_ml_maximises_the_papers_likelihood(small, k):
    X, r, _ = small
    rho = r[:, 0] / r[:, k]
    best = minimize_scalar(lambda d: -_mind_loglik(d, rho, k), bounds=(0.05, 60),
                           method="bounded", options={"xatol": 1e-10}).x
    est = D.mind_ml(X, k=k)
    assert est.value == pytest.approx(best, rel=1e-6)
    brute = 1 + int(np.argmax([_mind_loglik(d, rho, k) for d in range(1, 10)]))
    assert D.mind_ml(X, k=k, variant="MLi").value == brute
    info = -(_mind_loglik(best * 1.001, rho, k) - 2 * _mind_loglik(best, rho, k)
             + _mind_loglik(best * 0.999, rho, k)) / (best * 0.001) ** 2
    assert est.stderr == pytest.approx(1 / math.sqrt(info), rel=1e-3)


# ----------------------------------------------------------------------------- DANCo pieces


def _g(rho, k, d):
    return k * d * rho ** (d - 1) * (1 - rho**d) ** (k - 1)


@pytest.mark.parametrize("k, d1, d2", [(10, 3.0, 5.0), (10, 12.5, 11.0), (4, 2.0, 2.0),
                                       (20, 30.0, 24.0)])
def test_mind_kl_closed_form_equals_numerical_integration(k, d1, d2):
    num = quad(lambda x: _g(x, k, d1) * math.log(_g(x, k, d1) / _g(x, k, d2)), 0, 1,
               limit=400, epsabs=1e-13)[0]
    assert kl_mind(d1, d2, k) == pytest.approx(num, abs=1e-8)


@pytest.mark.parametrize("nu1, tau1, nu2, tau2", [(0.3, 2.0, 0.5, 3.5), (1.2, 15.0, 1.3, 40.0),
                                                  (-0.4, 0.5, 0.2, 0.7)])
def test_von_mises_kl_equals_numerical_integration(nu1, tau1, nu2, tau2):
    def f(t, nu, tau):
        return math.exp(tau * math.cos(t - nu)) / (2 * math.pi * i0(tau))

    num = quad(lambda t: f(t, nu1, tau1) * math.log(f(t, nu1, tau1) / f(t, nu2, tau2)),
               -math.pi, math.pi, limit=200)[0]
    assert kl_von_mises(nu1, tau1, nu2, tau2) == pytest.approx(num, rel=1e-8, abs=1e-12)


def test_a_inverse_inverts_the_bessel_ratio():
    tau = np.array([0.2, 0.8, 1.5, 3.0, 8.0, 30.0])
    eta = i1(tau) / i0(tau)
    np.testing.assert_allclose(a_inverse(eta), tau, rtol=0.03)  # Best & Fisher's approximation


def test_neighbour_angles_match_a_naive_loop(small):
    import torch

    X, r, order = small
    k = 6
    nu, tau = neighbour_angles(torch.from_numpy(X), order[:, :k], k)
    for i in (0, 17, 123):
        V = X[order[i, :k]] - X[i]
        th = [math.acos(np.clip(V[a] @ V[b] / np.linalg.norm(V[a]) / np.linalg.norm(V[b]), -1, 1))
              for a in range(k) for b in range(a + 1, k)]
        s, c = sum(map(math.sin, th)), sum(map(math.cos, th))
        assert nu[i] == pytest.approx(math.atan(s / c), rel=1e-9)  # arctan, as in the paper
        eta = math.hypot(s / len(th), c / len(th))
        assert tau[i] == pytest.approx(float(a_inverse(np.array(eta))), rel=1e-9)


def test_danco_is_the_kl_argmin_over_its_reference_balls(small):
    """The paper's definition recomputed here: MiND_MLk by a bounded search, angles by a loop,
    both KL terms by numerical integration, then the argmin over the reference dimensions."""
    X, r, order = small
    k, max_dim = 8, 9
    est = D.danco(X, k=k, max_dim=max_dim)
    rho = r[:, 0] / r[:, k]
    d_ml = minimize_scalar(lambda d: -_mind_loglik(d, rho, k), bounds=(0.05, 60),
                           method="bounded", options={"xatol": 1e-10}).x
    nus, taus = [], []
    for i in range(X.shape[0]):
        V = X[order[i, :k]] - X[i]
        U = V / np.linalg.norm(V, axis=1, keepdims=True)
        th = np.arccos(np.clip((U @ U.T)[np.triu_indices(k, 1)], -1, 1))
        nus.append(math.atan(np.sin(th).sum() / np.cos(th).sum()))
        taus.append(float(a_inverse(np.array(math.hypot(np.sin(th).mean(), np.cos(th).mean())))))
    nu, tau = float(np.mean(nus)), float(np.mean(taus))
    assert est.diagnostics["d_ml"] == pytest.approx(d_ml, rel=1e-6)
    assert est.diagnostics["nu"] == pytest.approx(nu, rel=1e-9)
    ref = danco_reference(X.shape[0], k, max_dim, 0)

    def log_vm(t, n_, t_):  # log-density; log I0 through the scaled Bessel function
        return t_ * math.cos(t - n_) - math.log(2 * math.pi) - math.log(i0e(t_)) - t_

    kl = []
    for m in range(max_dim):
        d2 = ref["d_ml"][m]
        kd = quad(lambda x, d2=d2: _g(x, k, d_ml) * math.log(_g(x, k, d_ml) / _g(x, k, d2)),
                  0, 1, limit=400)[0]
        n2, t2 = ref["nu"][m], ref["tau"][m]
        kv = quad(lambda t, n2=n2, t2=t2: math.exp(log_vm(t, nu, tau))
                  * (log_vm(t, nu, tau) - log_vm(t, n2, t2)), -math.pi, math.pi, limit=200)[0]
        kl.append(kd + kv)
    assert est.value == 1 + int(np.argmin(kl))
    np.testing.assert_allclose(est.diagnostics["kl"], kl, rtol=1e-5, atol=1e-9)


def test_danco_reads_its_reference_dimension_and_caches_it():
    from repscope.measures.dimension._calibration import reference_sample

    for m in (3, 7):
        Y = reference_sample("ball", 400, m, np.random.default_rng([5, m]))
        assert abs(D.danco(Y, max_dim=12).value - m) <= 1
    a = danco_reference(400, 10, 12, 0)
    assert a["d_ml"].shape == (12,) and not a["d_ml"].flags.writeable
    assert np.all(np.diff(a["tau"][1:]) > 0)  # angles concentrate as the dimension grows


def test_mind_kl_is_the_argmin_of_the_nearest_neighbour_kl(small):
    X, r, _ = small
    k, max_dim = 8, 9
    est = D.mind_kl(X, k=k, max_dim=max_dim)
    rho = r[:, 0] / r[:, k]
    ref = danco_reference(X.shape[0], k, max_dim, 0)["rho"]
    kl = []
    for m in range(max_dim):  # Wang-Kulkarni-Verdu, k = 1, by brute force
        b = ref[m]
        s = np.array([np.min(np.abs(np.delete(rho, i) - rho[i])) for i in range(rho.size)])
        nu = np.array([np.min(np.abs(b - x)) for x in rho])
        kl.append(np.mean(np.log(nu / s)) + math.log(b.size / (rho.size - 1)))
    np.testing.assert_allclose(est.diagnostics["kl"], kl, rtol=1e-10)
    assert est.value == 1 + int(np.argmin(kl))
    from repscope.measures.dimension._calibration import reference_sample

    Y = reference_sample("ball", 400, 6, np.random.default_rng(9))
    assert abs(D.mind_kl(Y, max_dim=12).value - 6) <= 1


# ----------------------------------------------------------------------------- GeoMLE


def _ridge_intercept(x, y, w, alpha):
    """sklearn's Ridge(alpha).fit([x, x^2], y, sample_weight=w).intercept_, by augmented
    least squares (the intercept is not penalised)."""
    F = np.column_stack([np.ones_like(x), x, x**2]) * np.sqrt(w)[:, None]
    A = np.vstack([F, np.sqrt(alpha) * np.array([[0, 1, 0], [0, 0, 1.0]])])
    b = np.concatenate([y * np.sqrt(w), [0, 0]])
    return np.linalg.lstsq(A, b, rcond=None)[0][0]


@pytest.mark.parametrize("variant", ["fast", "pointwise"])
def test_geomle_regression_of_the_papers_definition(small, variant):
    X, r, _ = small
    k1, k2, alpha = 6, 14, 5e-3
    ks = np.arange(k1, k2 + 1)
    mk = np.array([[(k - 2) / np.log(r[i, k - 1] / r[i, :k - 1]).sum() for k in ks]
                   for i in range(len(r))])  # Levina-Bickel with (k - 2), (n, K)
    R = r[:, ks - 1] / np.median(r[:, k2 - 1])
    if variant == "fast":
        sd = mk.std(0)
        ref = _ridge_intercept(R.mean(0), mk.mean(0), 1 / sd, alpha)
    else:
        ref = np.mean([_ridge_intercept(R[i], mk[i], np.sqrt(ks - 3.0), alpha)
                       for i in range(len(r))])
    est = D.geomle(X, k1=k1, k2=k2, alpha=alpha, variant=variant, n_boot=0)
    assert est.value == pytest.approx(ref, rel=1e-8)


def test_geomle_corrects_the_mle_towards_the_truth_on_a_curved_manifold():
    X, d = M.sphere(1500, 6, seed=2)
    geo, mle = D.geomle(X, n_boot=0).value, D.mle(X, n_boot=0).value
    assert abs(geo - d) < abs(mle - d)


# ----------------------------------------------------------------------------- TLE, MADA


def _exit_distance(p, e, v, q, w):
    """Distance from p (in the closed ball |x - q| <= w) along the unit direction e, through
    the point at distance v (also in the ball), to the sphere |x - q| = w."""
    f = lambda t: np.linalg.norm(p + t * e - q) - w  # noqa: E731
    return v if f(v) >= -1e-12 * w else brentq(f, v, 4 * w, xtol=1e-15, rtol=1e-15)


def test_tle_local_equals_its_geometric_definition(small):
    X, r, order = small
    k = 7
    est = D.tle(X, k=k, n_boot=0)
    for i in (2, 40, 99):
        q, nbrs = X[i], X[order[i, :k]]
        w = np.linalg.norm(nbrs[-1] - q)
        logs = []
        for a in range(k):
            for b in range(k):
                if a == b:
                    continue
                for target in (nbrs[b], 2 * q - nbrs[b]):  # the neighbour and its reflection
                    v = np.linalg.norm(target - nbrs[a])
                    e = (target - nbrs[a]) / v
                    logs.append(math.log(w * v / _exit_distance(nbrs[a], e, v, q, w) / w))
        assert est.diagnostics["local"][i] == pytest.approx(-len(logs) / sum(logs), rel=1e-7)


def test_mada_local_and_mean(small):
    X, r, _ = small
    est = D.mada(X, k=12, n_boot=0)
    ref = math.log(2) / np.log(r[:, 11] / r[:, 5])
    np.testing.assert_allclose(est.diagnostics["local"], ref, rtol=1e-10)
    assert est.value == pytest.approx(ref.mean())
    assert D.mada(X, k=12, summary="median", n_boot=0).value == pytest.approx(np.median(ref), rel=1e-2)


@pytest.mark.parametrize("name", ["mind_ml", "mind_kl", "danco", "geomle", "tle", "mada"])
def test_low_id_read_and_table_shared(name):
    X, d = M.swiss_roll(800, seed=3)
    nb = knn(X, 41)
    kw = {"n_boot": 0} if name in ("geomle", "tle", "mada") else {}
    a = getattr(D, name)(X, neighbors=nb, **kw)
    assert a == getattr(D, name)(X, **kw)  # the shared table gives the same result
    assert abs(a.value - d) <= 0.2 * d
    assert a.params["interval"] in ("sampling", "none")


# ----------------------------------------------------------------------------- caps and errors


@pytest.mark.parametrize("name, kw, msg", [
    ("ess", {"k": 65}, r"The 'k' parameter of ess must be <= 64 \(calibration cost .*\). Got 65 instead."),
    ("ess", {"n_sim": 30_000}, r"The 'n_sim' parameter of ess must be <= 20000 \(.*\). Got 30000 instead."),
    ("ess", {"k": 60, "n_sim": 3000}, r"The 'n_sim' parameter of ess must be <= 2519 \(calibration work .* at k=60, max_dim=64.*\). Got 3000"),
    ("danco", {"k": 31}, r"The 'k' parameter of danco must be <= 30 \(.*\). Got 31 instead."),
    ("danco", {"max_dim": 257}, r"The 'max_dim' parameter of danco must be <= 256 \(.*\). Got 257"),
    ("tle", {"k": 201}, r"The 'k' parameter of tle must be <= 200 \(.*\). Got 201 instead."),
    ("correlation_dimension", {"max_samples": 60_000}, r"The 'max_samples' parameter of correlation_dimension must be <= 50000"),
    ("intrinsic_dimension", {"max_samples": 50_001}, r"The 'max_samples' parameter of intrinsic_dimension must be <= 50000"),
    ("mind_ml", {"variant": "ML"}, r"'variant' parameter of mind_ml must be one of \{'MLk', 'MLi'\}"),
    ("geomle", {"k1": 50}, r"The 'k1' parameter of geomle must be an int in \[4, k2=40\). Got 50"),
])
def test_caps_and_parameter_errors_are_one_line(name, kw, msg):
    X = M.sphere(300, 2, seed=0).X
    with pytest.raises(ValueError, match=msg) as err:
        getattr(D, name)(X, **kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mind_ml", "mind_kl", "danco", "geomle", "tle", "mada"])
def test_bad_arrays(name):
    fn = getattr(D, name)
    X = M.sphere(60, 2, seed=0).X
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(bad)
    with pytest.raises(ValueError, match="constant data"):
        fn(np.ones((60, 3)))


# ----------------------------------------------------------------------------- decisions on evidence


def test_gride_default_scale_is_the_least_biased_on_reference_data():
    """docs/dimension.md: on uniform balls, cubes and Gaussians GRIDE reads lower at larger n1,
    so n1 = 1 (the anchors' choice) is the default."""
    from repscope.measures.dimension._calibration import reference_sample

    for fam in ("ball", "cube", "gaussian"):
        Y = reference_sample(fam, 1500, 10, np.random.default_rng([7, len(fam)]))
        nb = knn(Y, 32)
        g1, g4 = (D.gride(Y, n1=n1, neighbors=nb).value for n1 in (1, 4))
        assert D.gride(Y, neighbors=nb).params["n1"] == 1
        assert g4 < g1 < 10.5, (fam, g1, g4)


def test_pca_reads_one_on_the_paraboloids_because_one_coordinate_dominates():
    X, _ = M.paraboloid(1000, 9, seed=0)
    est = D.pca(X, n_boot=0)
    assert est.value == 1 and est.diagnostics["explained_variance_ratio"][0] > 0.95
    Z = (X - X.mean(0)) / X.std(0)  # standardised: every coordinate counts
    assert D.pca(Z, n_boot=0).value > 5


def test_pca_noise_on_isotropic_data_reads_zero_and_says_why():
    X, _ = M.sphere(2000, 10, seed=0)  # round: all 11 covariance eigenvalues equal
    with pytest.warns(RuntimeWarning, match=r"pca_noise: no eigenvalue stands above the "
                                            r"Marchenko-Pastur edge .* not dimension 0"):
        assert D.pca_noise(X, n_boot=0).value == 0
    assert D.participation_ratio(X, n_boot=0).value > 10


def test_every_id_result_says_what_its_interval_covers():
    from repscope import registry

    X = M.sphere(200, 2, seed=1).X
    for spec in registry.specs():  # intrinsic_dimension: tests/test_id_recommended.py
        if spec.family not in ("dimension", "local_dimension") or spec.name == "intrinsic_dimension":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = spec.fn(X)
        want = "none" if est.ci is None and est.stderr is None else "sampling"
        assert est.params["interval"] == want, spec.name
