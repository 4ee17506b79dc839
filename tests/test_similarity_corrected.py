"""Finite-sample statistics of similarity measures on known answers.

The known-answer pair (issue #15): X ~ N(0, I_d), Y = rho X Q + sqrt(1 - rho^2) E with Q a
random rotation and rho = 0.6, so the population linear CKA is rho^2 = 0.36, every population
canonical correlation is 0.6 and the population Procrustes angle is arccos(0.6). Checked here:
the intervals (coverage, always around their estimate), the jackknife-corrected estimators
(error below the plug-in's, shrinking with n), the chance-adjusted permutation score (centred
on 0 for unrelated data of any width, ranking planted strengths across widths), and the
smaller conventions (pwcca side, svcca threshold, kNN on constant input, exact RSA ranks).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import rankdata

from repscope import inference, registry
from repscope.measures import similarity as sim
from repscope.measures.similarity.cka import chance_level
from repscope.measures.similarity.rsa import average_ranks

RHO = 0.6
ANGLE = math.acos(RHO)


def _rotation(d: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(d).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


_Q: dict[int, np.ndarray] = {}


def known_pair(n: int, d: int, seed: int, rho: float = RHO) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) X and Y = rho X Q + sqrt(1 - rho^2) E (population CKA rho^2, angle arccos rho)."""
    if d not in _Q:
        _Q[d] = _rotation(d)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = rho * X @ _Q[d] + math.sqrt(1 - rho * rho) * rng.standard_normal((n, d))
    return X, Y


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*overstates similarity")
        yield


# ------------------------------------------------------------------------ intervals -------
def _coverage(d: int, n: int, seeds: int) -> tuple[int, list[float]]:
    covered, values = 0, []
    for seed in range(seeds):
        res = inference.jackknife_ci("cka_linear_debiased", *known_pair(n, d, seed))
        lo, hi = res.ci
        assert lo <= res.value <= hi  # every interval contains its estimate
        assert res.params["interval"] == "delete-1" and res.n_resamples == n
        covered += lo <= RHO**2 <= hi
        values.append(res.value)
    return covered, values


def test_debiased_cka_interval_covers_the_population_value_d64():
    """95 % jackknife interval of debiased CKA over 100 seeds at n = 1,000, d = 64: measured
    97 of 100 cover 0.36 (exact delete-1 jackknife, a few seconds in all)."""
    covered, values = _coverage(64, 1000, 100)
    assert covered >= 90
    assert abs(np.mean(values) - RHO**2) < 0.002  # the estimate itself is unbiased


@pytest.mark.slow
def test_debiased_cka_interval_covers_the_population_value_d768():
    covered, values = _coverage(768, 1000, 12)
    assert covered >= 10
    assert abs(np.mean(values) - RHO**2) < 0.003


def test_delete_one_jackknife_equals_recomputing_without_each_row():
    X, Y = known_pair(40, 5, 3)
    for name in ("cka_linear", "cka_linear_debiased"):
        res = inference.jackknife_ci(name, X, Y)
        fn = registry.get(name).fn
        direct = [fn(np.delete(X, i, 0), np.delete(Y, i, 0)).value for i in range(40)]
        np.testing.assert_allclose(res.diagnostics["leave_out"], direct, rtol=1e-10, atol=1e-12)


def test_grouped_jackknife_equals_recomputing_without_each_group():
    """The downdated pair moments of each left-out group give the measure on the other rows."""
    X, Y = known_pair(90, 6, 4)
    spec = registry.get("procrustes_angular")
    p = spec.prepared
    params = spec.resolve_params(None)
    sx = p.prepare(X, inference.resolve_device(X), params, "X")
    sy = p.prepare(Y, inference.resolve_device(X), params, "Y")
    values, sizes = p.jackknife(sx, sy, params, 7, 0)
    from repscope.stats import group_labels

    labels = group_labels(p.jackknife.__self__.row_key(sx, sy), 7, seed=0)
    for k in range(7):
        keep = labels != k
        assert sizes[k] == (~keep).sum()
        assert values[k] == pytest.approx(sim.procrustes_angular(X[keep], Y[keep]).value, abs=1e-12)


def test_percentile_bootstrap_sits_beside_the_estimate_half_sampling_around_it():
    """Resampling rows with replacement duplicates rows: the percentile interval of plug-in
    CKA misses its own estimate; half-sampling (no duplicates) contains it."""
    X, Y = known_pair(400, 64, 0)
    pct = inference.bootstrap_ci("cka_linear", X, Y, n_boot=30, method="percentile")
    assert pct.ci[0] > pct.value  # the failure the issue reports
    half = inference.bootstrap_ci("cka_linear", X, Y, n_boot=30)
    assert half.params["interval"] == "half_sampling"
    assert half.ci[0] < half.value < half.ci[1]
    jack = inference.jackknife_ci("cka_linear", X, Y)
    assert half.stderr == pytest.approx(jack.stderr, rel=0.4)  # two estimates of one spread


@pytest.mark.parametrize("name", ["cka_linear", "cka_linear_debiased", "cca_mean", "svcca",
                                  "pwcca", "procrustes_angular", "procrustes_euclidean",
                                  "shape_alpha", "mutual_knn", "rsa", "knn_jaccard"])
def test_every_interval_contains_its_estimate(name):
    X, Y = known_pair(80, 4, 1)
    for res in (inference.jackknife_ci(name, X, Y, groups=8),
                inference.bootstrap_ci(name, X, Y, n_boot=12, seed=1)):
        lo, hi = res.ci
        assert lo <= res.value <= hi and res.stderr > 0, (name, res.params["interval"])


@pytest.mark.parametrize("name", ["cca_mean_jackknife", "procrustes_angular_jackknife",
                                  "shape_alpha_jackknife"])
def test_corrected_measures_carry_an_interval_around_their_value(name):
    X, Y = known_pair(300, 8, 2)
    res = registry.get(name).fn(X, Y)
    lo, hi = res.ci
    assert lo <= res.value <= hi and res.stderr > 0
    assert res.diagnostics["bias_estimate"] == pytest.approx(
        res.diagnostics["plugin"] - res.diagnostics["unclipped"])


def test_corrected_measures_do_not_depend_on_row_order():
    X, Y = known_pair(200, 8, 5)
    perm = np.random.default_rng(0).permutation(200)
    for name in ("cca_mean_jackknife", "procrustes_angular_jackknife"):
        fn = registry.get(name).fn
        assert fn(X[perm], Y[perm]).value == pytest.approx(fn(X, Y).value, abs=1e-10)


# ------------------------------------------------------------- corrected estimators -------
def _errors(fn, plug, target, n, d, seeds):
    e_fix = np.array([fn(*known_pair(n, d, s)).value - target for s in range(seeds)])
    e_plug = np.array([plug(*known_pair(n, d, s)).value - target for s in range(seeds)])
    return e_fix, e_plug


def _rmse(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(e**2)))


def test_corrected_procrustes_converges_and_beats_the_plugin_d64():
    """Measured (6 seeds): plug-in mean error -0.032, -0.013, -0.009 at n = 640, 1280, 2560;
    corrected RMS error 0.0032, 0.0041, 0.0011 (sampling noise dominates), 0.0013 at 5120."""
    rmse = []
    for n in (640, 1280, 2560, 10240):
        fix, plug = _errors(sim.procrustes_angular_jackknife, sim.procrustes_angular, ANGLE,
                            n, 64, 6)
        rmse.append(_rmse(fix))
        if 64 / n >= 0.05:
            assert abs(fix.mean()) < abs(plug.mean()) / 2
            assert _rmse(fix) < _rmse(plug) / 2
    assert rmse[2] < min(rmse[:2]) and rmse[3] < rmse[2]  # shrinks with n (4x steps)


@pytest.mark.slow
def test_corrected_procrustes_converges_and_beats_the_plugin_d768():
    """Measured: plug-in -0.135, -0.066 at n = 2000, 4000; corrected +0.010, +0.002."""
    errs = []
    for n in (2000, 4000):
        fix, plug = _errors(sim.procrustes_angular_jackknife, sim.procrustes_angular, ANGLE,
                            n, 768, 1)
        assert abs(fix[0]) < abs(plug[0]) / 5
        errs.append(abs(fix[0]))
    assert errs[1] < errs[0]


def test_corrected_cca_beats_the_plugin_at_n1000():
    """Measured (8 seeds, d = 64): plug-in +0.0086, corrected -0.0033 (the jackknife removes
    the 1/n term; the (d/n)^2 term it leaves is over-corrected)."""
    fix, plug = _errors(sim.cca_mean_jackknife, sim.cca_mean, RHO, 1000, 64, 8)
    assert plug.mean() > 0.005
    assert abs(fix.mean()) < abs(plug.mean()) / 2 and _rmse(fix) < _rmse(plug)


def test_corrected_cca_refuses_where_no_correction_applies():
    """d = 768 at n = 1,000 (and 260 at 500): r_x + r_y > n, so canonical correlations equal to 1 appear in the
    left-out fits and the bias is not a smooth function of 1/n."""
    X, Y = known_pair(500, 260, 0)  # the same ratio, smaller
    with pytest.raises(ValueError, match=r"cca_mean_jackknife needs the retained dimensions "
                                         r"of both sides \(520 in total\) below"):
        sim.cca_mean_jackknife(X, Y)


def test_shape_mom_does_not_depend_on_row_order_and_is_fast_at_small_n():
    X, Y = known_pair(200, 30, 6)
    perm = np.random.default_rng(1).permutation(200)
    assert sim.shape_mom(X[perm], Y[perm]).value == pytest.approx(sim.shape_mom(X, Y).value,
                                                                  rel=1e-12)
    Xw, Yw = known_pair(200, 768, 0)
    assert 0.0 <= sim.shape_mom(Xw, Yw).value <= 1.0  # Gram path: n x n products, not d x d


# ------------------------------------------------------------------- bias warnings --------
@pytest.mark.parametrize(("name", "key"), [("cka_linear", "chance_level"),
                                           ("cca_mean", "chance_level"),
                                           ("procrustes_angular", "chance_level"),
                                           ("shape_alpha", "chance_level")])
def test_plugins_warn_when_their_chance_level_is_large(name, key):
    X, Y = known_pair(200, 40, 0)
    with pytest.warns(UserWarning, match=rf"{name}: the plug-in estimate overstates similarity "
                                         r"at n_samples=200"):
        res = registry.get(name).fn(X, Y)
    assert res.diagnostics[key] > 0.05
    Xb, Yb = known_pair(4000, 3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        registry.get(name).fn(Xb, Yb)  # d / n small: no warning


def test_cka_chance_level_is_the_permutation_mean():
    """E[CKA] under a random pairing is tr Sxx tr Syy / ((n - 1) ||Sxx|| ||Syy||) exactly."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 12)) * np.linspace(0.2, 3, 12)
    Y = rng.standard_normal((60, 7))
    res = inference.permutation_test("cka_linear", X, Y, n_perm=3000, seed=1)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy = Xc.T @ Xc, Yc.T @ Yc
    exact = chance_level(np.trace(Sxx), np.trace(Syy), np.sum(Sxx**2), np.sum(Syy**2), 60)
    assert res.null_mean == pytest.approx(exact, abs=4 * res.null_std / math.sqrt(3000))
    assert sim.cka_linear(X, Y).diagnostics["chance_level"] == pytest.approx(exact, rel=1e-12)


# ---------------------------------------------------------------- calibrated scores -------
def test_adjusted_scores_are_centred_on_zero_for_unrelated_data_of_any_width():
    """Independent X, Y at n = 300: plug-in CKA reads ~0.2, 0.5, 0.7 at widths 64, 256,
    768; the adjusted score is 0 on average at every width."""
    rng = np.random.default_rng(3)
    for d, plug_min in ((64, 0.15), (256, 0.4), (768, 0.6)):
        adj, plug = [], []
        for seed in range(8):
            X, Y = rng.standard_normal((300, d)), rng.standard_normal((300, d))
            res = inference.permutation_test("cka_linear", X, Y, n_perm=10, seed=seed)
            adj.append(res.adjusted)
            plug.append(res.value)
        assert np.mean(plug) > plug_min
        assert abs(np.mean(adj)) < 0.02 and abs(np.mean(adj)) < 4 * np.std(adj) / math.sqrt(8)


def test_adjusted_scores_rank_planted_strengths_regardless_of_width():
    """Strong sharing in a narrow layer, weak in a wide one: the plug-in ranks the wide pair
    first (its chance level dominates); the adjusted score ranks by the planted strength."""
    pairs = {(64, 0.7): None, (256, 0.55): None, (768, 0.4): None}
    for d, rho in pairs:
        X, Y = known_pair(600, d, 0, rho=rho)
        pairs[(d, rho)] = inference.permutation_test("cka_linear", X, Y, n_perm=10, seed=0)
    by_adj = sorted(pairs, key=lambda k: -pairs[k].adjusted)
    by_plug = sorted(pairs, key=lambda k: -pairs[k].value)
    assert [rho for _, rho in by_adj] == [0.7, 0.55, 0.4]
    assert by_plug[0] == (768, 0.4)  # the failure the calibrated score fixes
    for (_, rho), res in pairs.items():
        assert res.adjusted == pytest.approx(rho**2, abs=0.05)  # population CKA, any width


def test_batched_null_matches_per_draw_in_mixed_precision():
    X, Y = known_pair(300, 20, 7)
    fast = inference.permutation_test("cka_linear", X, Y, n_perm=25, seed=2,
                                      params={"precision": "mixed"})
    spec = registry.get("cka_linear")
    slow = inference.permutation_test(spec.fn, X, Y, n_perm=25, seed=2,
                                      params={"precision": "mixed"})
    np.testing.assert_allclose(fast.diagnostics["null"], slow.diagnostics["null"], rtol=1e-6)


def test_adjusted_score_for_a_distance_uses_its_lower_bound():
    X, Y = known_pair(300, 8, 1)
    res = inference.permutation_test("procrustes_angular", X, Y, n_perm=20)
    assert res.adjusted == pytest.approx((res.null_mean - res.value) / res.null_mean)
    assert 0 < res.adjusted < 1


# ----------------------------------------------------------------- smaller faults ---------
@pytest.mark.parametrize("name", ["mutual_knn", "knn_jaccard"])
def test_knn_overlaps_refuse_constant_input(name):
    X = np.ones((50, 4))
    Y = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(ValueError, match=rf"{name}.*'X'"):
        registry.get(name).fn(X, Y)


def test_svcca_refuses_when_kept_components_span_every_direction():
    """n < d with (nearly) all variance kept: every canonical correlation would be 1."""
    X, Y = known_pair(30, 40, 0)
    with pytest.raises(ValueError, match=r"svcca needs more samples than kept components plus "
                                         r"one \(n_samples=30, 29 retained for 'X'\)"):
        sim.svcca(X, Y, variance_kept=0.999999)
    with pytest.warns(UserWarning, match=r"canonical correlation\(s\) equal 1 by construction"):
        assert sim.svcca(X, Y).value < 1.0  # fewer kept: a value, with the overlap warned


def test_svcca_threshold_conventions_match_a_direct_reference():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 12)) * np.geomspace(3, 0.05, 12)
    Y = X @ rng.standard_normal((12, 10)) + 0.5 * rng.standard_normal((400, 10))
    for by, kept in (("variance", 0.9), ("singular_values", 0.9)):
        res = sim.svcca(X, Y, variance_kept=kept, threshold_on=by)
        s = np.linalg.svd(X - X.mean(0), compute_uv=False)
        mass = s**2 if by == "variance" else s
        r = int(np.searchsorted(np.cumsum(mass) / mass.sum(), kept)) + 1
        assert res.diagnostics["rank_x"] == r
        assert res.params["threshold_on"] == by
    assert (sim.svcca(X, Y, variance_kept=0.9, threshold_on="singular_values")
            .diagnostics["rank_x"] > sim.svcca(X, Y, variance_kept=0.9).diagnostics["rank_x"])


def test_pwcca_weight_side_is_a_recorded_choice():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 8))
    Y = X[:, :5] @ rng.standard_normal((5, 5)) + 0.7 * rng.standard_normal((300, 5))
    on_x, on_y = sim.pwcca(X, Y, weights="x"), sim.pwcca(X, Y, weights="y")
    smaller = sim.pwcca(X, Y, weights="smaller")  # Morcos et al.'s code: the narrower side
    assert smaller.params["weights_from"] == "y" and smaller.value == pytest.approx(on_y.value)
    assert on_y.value == pytest.approx(sim.pwcca(Y, X, weights="x").value, rel=1e-10)
    assert abs(on_x.value - on_y.value) > 1e-3


def test_exact_rsa_ranks_equal_scipy_with_ties():
    v = np.r_[np.arange(50.0), np.arange(20.0), [7.0] * 5, np.random.default_rng(0).random(30)]
    np.testing.assert_array_equal(average_ranks(v), rankdata(v))
    assert registry.get("rsa").defaults["max_pairs"] >= 4_000_000  # exact up to n = 2,828


def test_nystroem_reports_and_warns_about_its_approximation_error():
    X, Y = known_pair(600, 64, 3)
    with pytest.warns(UserWarning, match=r"cka_rbf_nystroem: with n_landmarks=16 the "
                                         r"approximation differs from exact RBF CKA by"):
        coarse = sim.cka_rbf_nystroem(X, Y, n_landmarks=16)
    assert coarse.diagnostics["approximation_error"] > 0.01
    assert coarse.params["n_landmarks"] == 16 and coarse.diagnostics["approximate"]
    Xs, Ys = X[:200], Y[:200]
    full = sim.cka_rbf_nystroem(Xs, Ys, n_landmarks=200)  # every row a landmark: exact
    assert full.diagnostics["approximation_error"] < 1e-8
    assert full.value == pytest.approx(sim.cka_rbf(Xs, Ys).value, abs=1e-8)
