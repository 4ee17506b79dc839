import numpy as np
import pytest

from repscope.stats import Moments, bootstrap


def test_streaming_equals_batch_in_random_batches():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(503, 7)) * rng.uniform(0.1, 10, size=7) + 100.0
    cuts = np.sort(rng.choice(np.arange(1, 503), size=9, replace=False))
    state = Moments.init(7)
    for part in np.split(X, cuts):
        state = state.update(part)
    np.testing.assert_allclose(state.covariance(), np.cov(X, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.mean, X.mean(0), rtol=1e-12)
    assert state.n == 503


def test_merge_associative_and_commutative():
    rng = np.random.default_rng(1)
    a, b, c = (Moments.init(3).update(rng.normal(size=(n, 3))) for n in (5, 40, 17))
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    np.testing.assert_allclose(left.m2, right.m2, rtol=1e-12)
    np.testing.assert_allclose(a.merge(b).m2, b.merge(a).m2, rtol=1e-12)
    assert Moments.init(3).merge(a) is a


def test_errors():
    with pytest.raises(ValueError, match=r"shape \(b, 3\); got \(4, 2\)"):
        Moments.init(3).update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="more than ddof=1 rows; got n_samples=1"):
        Moments.init(2).update(np.zeros((1, 2))).covariance()
    with pytest.raises(ValueError, match="merge Moments of d=2 with d=3"):
        Moments.init(2).merge(Moments.init(3))


def test_bootstrap_stderr_of_mean_matches_theory():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    se, (lo, hi), reps = bootstrap(lambda idx: x[idx].mean(), 400, n_boot=500, seed=3)
    assert abs(se - x.std(ddof=1) / 20) < 0.01
    assert lo < x.mean() < hi and reps.shape == (500,)
    se2, _, _ = bootstrap(lambda idx: x[idx].mean(), 400, n_boot=500, seed=3)
    assert se == se2
