"""Neural-collapse measures and linear probes: limits, references, random labels, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.measures.classes import (
    check_labels,
    linear_probe,
    nc1,
    nc2_equiangularity,
    nc2_equinorm,
    nc3,
    nc4,
)
from repscope.measures.spectrum import dsmi

C, D, PER = 4, 10, 50


def _simplex_etf(C: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(C, d) simplex equiangular tight frame: equal norms, pairwise cosine -1/(C-1)."""
    U = np.linalg.qr(rng.normal(size=(d, C)))[0]  # (d, C) orthonormal columns
    return (np.eye(C) - 1.0 / C) @ U.T * np.sqrt(C / (C - 1))


@pytest.fixture(scope="module")
def collapsed():
    rng = np.random.default_rng(0)
    M = 5.0 * _simplex_etf(C, D, rng) + 2.0  # class means, shifted globally
    labels = np.repeat(np.arange(C), PER)
    return M[labels], labels, M


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(C), PER)
    X = rng.normal(size=(C * PER, D)) + 4.0 * _simplex_etf(C, D, rng)[labels]
    return X, labels


def test_perfect_collapse_gives_the_limits(collapsed):
    X, labels, M = collapsed
    assert nc1(X, labels=labels).value == pytest.approx(0.0, abs=1e-12)
    assert nc2_equinorm(X, labels=labels).value == pytest.approx(0.0, abs=1e-12)
    est = nc2_equiangularity(X, labels=labels)
    assert est.value == pytest.approx(0.0, abs=1e-12)
    assert est.diagnostics["max_angle"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(est.diagnostics["cosines"], -1 / (C - 1), atol=1e-12)
    W = 3.0 * (M - M.mean(0))  # a classifier self-dual to the means
    assert nc3(X, labels=labels, weights=W).value == pytest.approx(0.0, abs=1e-12)
    assert nc4(X, labels=labels, weights=W).value == 0.0
    assert linear_probe(X + 1e-3 * np.random.default_rng(2).normal(size=X.shape),
                        labels=labels).value == 1.0


def test_random_labels_give_large_values(noisy):
    X, labels = noisy
    shuffled = np.random.default_rng(3).permutation(labels)
    assert nc1(X, labels=labels).value < 0.5
    assert nc1(X, labels=shuffled).value > 10 * nc1(X, labels=labels).value
    assert nc1(X, labels=shuffled).value > 5
    assert nc2_equinorm(X, labels=shuffled).value > nc2_equinorm(X, labels=labels).value
    assert nc2_equiangularity(X, labels=shuffled).value > nc2_equiangularity(X, labels=labels).value
    assert nc4(X, labels=shuffled).value > nc4(X, labels=labels).value
    assert nc3(X, labels=labels).value < nc3(X, labels=shuffled).value


def test_nc1_matches_naive_reference(noisy):
    X, labels = noisy
    mu_g = X.mean(0)
    means = np.stack([X[labels == c].mean(0) for c in range(C)])
    sw = sum(np.outer(x - means[y], x - means[y]) for x, y in zip(X, labels, strict=True)) / len(X)
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in means) / C
    ref = np.trace(sw @ np.linalg.pinv(sb)) / C
    assert nc1(X, labels=labels).value == pytest.approx(ref, rel=1e-8)
    norms = np.linalg.norm(means - mu_g, axis=1)
    assert nc2_equinorm(X, labels=labels).value == pytest.approx(norms.std() / norms.mean(), rel=1e-10)


def test_nc3_nc4_with_given_weights_reference(noisy):
    X, labels = noisy
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(C, D)), rng.normal(size=C)
    Mc = np.stack([X[labels == c].mean(0) for c in range(C)]) - X.mean(0)
    ref3 = np.linalg.norm(W / np.linalg.norm(W) - Mc / np.linalg.norm(Mc)) ** 2
    assert nc3(X, labels=labels, weights=W).value == pytest.approx(ref3, rel=1e-10)
    means = Mc + X.mean(0)
    ncc = np.argmin(((X[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    ref4 = np.mean(np.argmax(X @ W.T + b, axis=1) != ncc)
    est = nc4(X, labels=labels, weights=W, bias=b)
    assert est.value == pytest.approx(ref4)
    assert est.diagnostics["classifier"] == "given"
    assert nc4(X, labels=labels).diagnostics["classifier"] == "logistic_regression"


def test_labels_can_be_strings_and_two_classes():
    rng = np.random.default_rng(5)
    labels = np.array(["cat", "dog"] * 40)
    X = rng.normal(size=(80, 5)) + 3.0 * (labels == "dog")[:, None]
    assert nc1(X, labels=labels).value < 1
    assert nc2_equiangularity(X, labels=labels).value == pytest.approx(0.0, abs=1e-12)
    assert nc4(X, labels=labels).value < 0.1  # binary fitted classifier expanded to (2, d)
    assert linear_probe(X, labels=labels).value > 0.9


def test_linear_probe_selectivity_and_determinism(noisy):
    X, labels = noisy
    est = linear_probe(X, labels=labels, seed=3)
    assert est.value > 0.95
    assert est.diagnostics["control_accuracy"] < 0.45  # chance is 0.25
    assert est.diagnostics["selectivity"] == pytest.approx(est.value - est.diagnostics["control_accuracy"])
    assert est.diagnostics["fold_accuracies"].shape == (5,)
    assert est.stderr >= 0
    assert linear_probe(X, labels=labels, seed=3) == est
    rnd = linear_probe(X, labels=labels, control="random")
    assert rnd.diagnostics["control_accuracy"] < 0.45
    noise = linear_probe(np.random.default_rng(6).normal(size=X.shape), labels=labels)
    assert noise.value < 0.45


def test_dsmi_uses_the_same_label_checks():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=r"'labels' parameter of dsmi must contain at least 2 classes"):
        dsmi(X, labels=np.zeros(20))


# ----------------------------------------------------------------------------- bad input
FNS = [nc1, nc2_equinorm, nc2_equiangularity, nc3, nc4, linear_probe]


@pytest.mark.parametrize("fn", FNS, ids=[f.__name__ for f in FNS])
def test_label_errors(fn):
    X = np.random.default_rng(0).normal(size=(30, 4))
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"The 'labels' parameter of {name} must have one label "
                                         rf"per row of X \(n_samples=30\). Got 29 labels instead."):
        fn(X, labels=np.arange(29) % 3)
    with pytest.raises(ValueError, match=rf"The 'labels' parameter of {name} must contain at least "
                                         rf"2 classes. Got 1 class\(es\): \[7\]"):
        fn(X, labels=np.full(30, 7))
    with pytest.raises(ValueError, match=rf"'labels' parameter of {name} contains NaN"):
        fn(X, labels=np.where(np.arange(30) == 4, np.nan, np.arange(30) % 2))
    with pytest.raises(ValueError, match=r"must be a 1-D array with one label per row"):
        fn(X, labels=np.zeros((30, 2)))
    with pytest.raises(ValueError, match=r"needs at least 2 samples \(rows\) in 'X'; got n_samples=1"):
        fn(X[:1], labels=np.zeros(1))


def test_other_errors_and_degenerate_cases():
    rng = np.random.default_rng(0)
    X, labels = rng.normal(size=(30, 4)), np.arange(30) % 3
    with pytest.raises(ValueError, match=r"'weights' parameter of nc3 must be classifier weights of "
                                         r"shape \(n_classes, n_features\)=\(3, 4\). Got shape \(4, 3\)"):
        nc3(X, labels=labels, weights=np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"'bias' parameter of nc4 must have shape \(n_classes,\)=\(3,\)"):
        nc4(X, labels=labels, weights=np.ones((3, 4)), bias=np.ones(4))
    with pytest.raises(ValueError, match=r"linear_probe needs at least folds=5 rows per class .* "
                                         r"class 2.0 has 2"):
        linear_probe(X, labels=np.r_[np.zeros(14), np.ones(14), [2, 2]])
    with pytest.raises(ValueError, match=r"'control' parameter of linear_probe must be one of"):
        linear_probe(X, labels=labels, control="permute")
    with pytest.raises(ValueError, match="needs class labels"):
        check_labels(None, 30, "nc1")
    same_means = np.r_[X, X]  # both classes have identical rows: equal class means
    with pytest.warns(RuntimeWarning, match="nc1 is undefined here"):
        assert np.isnan(nc1(same_means, labels=np.r_[np.zeros(30), np.ones(30)]).value)
    # a zero-variance column is just a zero direction: finite values
    Z = np.c_[X, np.ones(30)]
    assert np.isfinite(nc1(Z, labels=labels).value)
