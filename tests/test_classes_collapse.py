"""Neural-collapse numerics: rotation invariance, imbalanced simplices, the reference conventions.

Known answers from Papyan, Han and Donoho (2020, PNAS) and their reference code: the global
mean is the mean of the class means, ``Sigma_B^+`` is truncated to rank ``C - 1``
(``svds(Sb, k=C-1)``) and the equinorm uses the sample standard deviation (``torch.std``).
"""

from __future__ import annotations

import numpy as np
import pytest

from repscope.measures.classes import nc1, nc2_equiangularity, nc2_equinorm, nc3, nc4


def _etf(C: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(C, d) unit-norm simplex equiangular tight frame (pairwise cosine -1/(C-1))."""
    U = np.linalg.qr(rng.normal(size=(d, C)))[0]  # (d, C)
    return (np.eye(C) - 1.0 / C) @ U.T * np.sqrt(C / (C - 1))


def _paper_nc1(X: np.ndarray, y: np.ndarray, C: int) -> float:
    """``tr(Sigma_W Sigma_B^-1) / C`` as in the reference: d x d matrices, top C-1 eigenpairs."""
    M = np.stack([X[y == c].mean(0) for c in range(C)])  # (C, d)
    mu_g = M.mean(0)
    Sw = sum(np.outer(x - M[c], x - M[c]) for x, c in zip(X, y, strict=True)) / len(X)
    Sb = (M - mu_g).T @ (M - mu_g) / C
    lam, V = np.linalg.eigh(Sb)
    lam, V = lam[-(C - 1):], V[:, -(C - 1):]
    return float(np.trace(Sw @ V @ np.diag(1 / lam) @ V.T) / C)


@pytest.fixture(scope="module")
def etf10():
    rng = np.random.default_rng(0)
    C, d, per = 10, 16, 20
    y = np.repeat(np.arange(C), per)
    M = _etf(C, d, rng)
    X = M[y] + 0.01 * rng.normal(size=(C * per, d))  # (n, d) collapsed up to small noise
    return X, y, M


def _all(X, y, W):
    return np.array([nc1(X, labels=y).value, nc2_equinorm(X, labels=y).value,
                     nc2_equiangularity(X, labels=y).value, nc3(X, labels=y, weights=W).value,
                     nc4(X, labels=y, weights=W).value])


def test_nc1_to_nc4_invariant_under_50_rotations(etf10):
    """The pseudo-inverse of the rank-(C-1) Sigma_B no longer picks up rounding-level
    eigenvalues (with np.linalg.pinv's default cutoff, 1 of 50 rotations of this data read
    6.6e10: benchmarks/spectral_conventions.py, section 5)."""
    X, y, M = etf10
    W = 2.0 * M + 0.05 * np.random.default_rng(1).normal(size=M.shape)  # a classifier near the means
    ref = _all(X, y, W)
    assert ref[0] == pytest.approx(_paper_nc1(X, y, 10), rel=1e-9)
    assert ref[0] == pytest.approx(7.7e-4, rel=0.05)  # about sigma^2 (C-1)^2 / C = 8.1e-4
    rng = np.random.default_rng(2)
    for _ in range(50):
        Q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
        np.testing.assert_allclose(_all(X @ Q, y, W @ Q), ref, rtol=1e-9, atol=1e-15)


def test_nc1_matches_the_reference_formula_on_noisy_and_rank_limited_data():
    rng = np.random.default_rng(3)
    C, per = 6, 30
    y = np.repeat(np.arange(C), per)
    X = rng.normal(size=(C * per, 12)) + 3.0 * rng.normal(size=(C, 12))[y]
    est = nc1(X, labels=y)
    assert est.value == pytest.approx(_paper_nc1(X, y, C), rel=1e-9)
    assert est.diagnostics["between_rank"] == C - 1
    # d < C - 1: Sigma_B has rank d; the pseudo-inverse keeps exactly those d directions
    Z = rng.normal(size=(C * per, 3)) + 3.0 * rng.normal(size=(C, 3))[y]
    est = nc1(Z, labels=y)
    M = np.stack([Z[y == c].mean(0) for c in range(C)])
    Sw = (Z - M[y]).T @ (Z - M[y]) / len(Z)
    Sb = (M - M.mean(0)).T @ (M - M.mean(0)) / C
    assert est.diagnostics["between_rank"] == 3
    assert est.value == pytest.approx(np.trace(Sw @ np.linalg.inv(Sb)) / C, rel=1e-9)


def test_collapse_detected_on_imbalanced_simplices():
    """Centring on the mean of ALL rows (pulled towards the big classes) read 0.22 / 0.32 / 0.17
    here; centring on the mean of the class means (the definition) reads collapse."""
    rng = np.random.default_rng(4)
    C, d = 5, 12
    y = np.repeat(np.arange(C), [10, 20, 40, 80, 160])
    M = _etf(C, d, rng) + 4.0  # offset: the global position must not matter
    X = M[y] + 0.01 * rng.normal(size=(y.size, d))
    W = M - M.mean(0)
    assert nc2_equinorm(X, labels=y).value < 0.005
    assert nc2_equiangularity(X, labels=y).value < 0.005
    assert nc3(X, labels=y, weights=W).value < 1e-4
    assert nc1(X, labels=y).value == pytest.approx(_paper_nc1(X, y, C), rel=1e-9)
    # the row-mean centring this replaces, computed independently
    Mc = np.stack([X[y == c].mean(0) for c in range(C)]) - X.mean(0)
    norms = np.linalg.norm(Mc, axis=1)
    assert norms.std() / norms.mean() > 0.1
    # exact simplex: exactly collapsed
    assert nc2_equinorm(M[y], labels=y).value == pytest.approx(0.0, abs=1e-12)
    assert nc2_equiangularity(M[y], labels=y).value == pytest.approx(0.0, abs=1e-12)


def test_equinorm_ddof_is_the_reference_convention():
    rng = np.random.default_rng(5)
    C = 7
    y = np.repeat(np.arange(C), 25)
    X = rng.normal(size=(y.size, 9)) + 2.0 * rng.normal(size=(C, 9))[y]
    M = np.stack([X[y == c].mean(0) for c in range(C)])
    norms = np.linalg.norm(M - M.mean(0), axis=1)
    e0, e1 = nc2_equinorm(X, labels=y), nc2_equinorm(X, labels=y, ddof=1)
    assert e0.params == {"ddof": 0} and e1.params == {"ddof": 1}
    assert e1.value == pytest.approx(np.std(norms, ddof=1) / norms.mean(), rel=1e-12)
    assert e1.value == pytest.approx(e0.value * np.sqrt(C / (C - 1)), rel=1e-12)
    with pytest.raises(ValueError, match=r"The 'ddof' parameter of nc2_equinorm must be one of "
                                         r"\{0, 1\}. Got 2 instead."):
        nc2_equinorm(X, labels=y, ddof=2)


@pytest.mark.parametrize("offset", [0.0, 1e3])
@pytest.mark.parametrize("fn", [nc1, nc2_equinorm, nc2_equiangularity, nc3, nc4])
def test_constant_data_is_nan_with_a_warning_not_a_perfect_score(fn, offset):
    X = np.full((40, 5), 0.3 + offset)
    y = np.arange(40) % 4
    kw = {"weights": np.eye(4, 5)} if fn in (nc3, nc4) else {}
    with pytest.warns(RuntimeWarning, match=rf"{fn.__name__} is undefined here \(.*equal"):
        assert np.isnan(fn(X, labels=y, **kw).value)


def test_nc4_constant_data_with_a_fitted_classifier_is_nan():
    with pytest.warns(RuntimeWarning, match="nc4 is undefined here"):
        assert np.isnan(nc4(np.ones((30, 4)), labels=np.arange(30) % 3).value)


def test_tiny_separations_on_a_large_offset_are_still_measured():
    """The 'means coincide' test is relative to rounding, not to the offset."""
    rng = np.random.default_rng(6)
    y = np.repeat(np.arange(3), 20)
    X = 1e3 + 1e-6 * (rng.normal(size=(60, 4)) + 5.0 * rng.normal(size=(3, 4))[y])
    assert np.isfinite(nc1(X, labels=y).value)
    assert 0 <= nc4(X, labels=y, weights=rng.normal(size=(3, 4))).value <= 1
