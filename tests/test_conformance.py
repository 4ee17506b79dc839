"""The conformance suite every registered measure must pass (cf. scikit-learn's
``parametrize_with_checks``): validation, determinism, precision, serialisation, invariances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import ortho_group

from repscope import registry
from repscope.results import Estimate, from_json

SPECS = registry.specs()
IDS = [s.name for s in SPECS]
N, DX, DY = 80, 6, 5


def _data(dtype=np.float64):
    rng = np.random.default_rng(1234)
    labels = np.repeat(np.arange(3), N // 3 + 1)[:N]
    centers = rng.normal(scale=3.0, size=(3, DX))
    X = centers[labels] + rng.normal(size=(N, DX)) * np.linspace(2.0, 0.5, DX)  # (n, dx)
    Y = X @ rng.normal(size=(DX, DY)) + 0.5 * rng.normal(size=(N, DY))  # (n, dy)
    return X.astype(dtype), Y.astype(dtype), labels


def _extra(spec, X, labels):
    kw = {}
    if spec.needs_labels:
        kw["labels"] = labels
    if "weights" in spec.defaults and spec.family == "classes":
        kw["weights"] = np.random.default_rng(7).normal(size=(3, X.shape[-1]))
    return kw


def _call(spec, X, Y=None, labels=None):
    kw = _extra(spec, X, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.kind == "pair":
            return spec.fn(X, Y, **kw)
        return spec.fn(X, **kw)


def test_registry_is_populated():
    assert len(SPECS) > 0, "no measure registered"
    for s in SPECS:
        assert s.family in {"dimension", "local_dimension", "spectrum", "spread", "outliers",
                            "similarity", "classes"}, s
        assert s.description, f"{s.name} has no docstring"
        assert s.fn.__doc__ and len(s.fn.__doc__) > 80, f"{s.name} needs a documented definition"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_returns_estimate_within_bounds(spec):
    X, Y, labels = _data()
    Xc, Yc = X.copy(), Y.copy()
    res = _call(spec, X, Y, labels)
    assert isinstance(res, Estimate)
    assert res.measure == spec.name
    assert np.isfinite(res.value), res
    lo, hi = spec.bounds
    if lo is not None:
        assert res.value >= lo - 1e-9
    if hi is not None:
        assert res.value <= hi + 1e-9
    assert isinstance(res.n_samples, int) and res.n_samples > 0
    np.testing.assert_array_equal(X, Xc)  # input not mutated
    np.testing.assert_array_equal(Y, Yc)
    missing = set(spec.defaults) - set(res.params) - {"neighbors", "weights", "device"}
    assert not missing, f"params do not record {missing}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_deterministic_and_json_roundtrip(spec):
    X, Y, labels = _data()
    a, b = _call(spec, X, Y, labels), _call(spec, X, Y, labels)
    assert a.value == b.value
    assert a.stderr == b.stderr or (a.stderr is not None and np.isnan(a.stderr) and np.isnan(b.stderr))
    assert from_json(a.to_json()) == a


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float32_close_to_float64(spec):
    X, Y, labels = _data()
    X32, Y32, _ = _data(np.float32)
    v64 = _call(spec, X, Y, labels).value
    v32 = _call(spec, X32, Y32, labels).value
    np.testing.assert_allclose(v32, v64, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bad_input_errors(spec):
    X, Y, labels = _data()
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _call(spec, bad, Y, labels)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        _call(spec, bad, Y, labels)
    with pytest.raises(ValueError, match="2-D"):
        _call(spec, X[:, 0], Y, labels)
    with pytest.raises(TypeError, match="dtype"):
        _call(spec, (X * 10).astype(np.int64), Y, labels)
    with pytest.raises(ValueError, match="empty|at least"):
        _call(spec, X[:0], Y[:0], labels[:0])
    if spec.kind == "pair":
        badY = Y.copy()
        badY[0, 0] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            _call(spec, X, badY, labels)
        with pytest.raises(ValueError, match="same number of rows"):
            _call(spec, X, Y[:-5], labels)


def _transforms(d, rng):
    Q = ortho_group.rvs(d, random_state=rng)
    A = rng.normal(size=(d, d)) + 3 * np.eye(d)
    return {
        "rotation": lambda Z: Z @ Q[: Z.shape[1], : Z.shape[1]] if Z.shape[1] == d else
        Z @ ortho_group.rvs(Z.shape[1], random_state=rng),
        "translation": lambda Z: Z + rng.normal(scale=5.0, size=(1, Z.shape[1])),
        "scale": lambda Z: 3.7 * Z,
        "permutation": lambda Z: Z[:, rng.permutation(Z.shape[1])],
        "invertible_linear": lambda Z: Z @ (A[: Z.shape[1], : Z.shape[1]]),
        "per_feature_scale": lambda Z: Z * rng.uniform(0.5, 2.0, size=(1, Z.shape[1])),
    }


INV_CASES = [(s, inv) for s in SPECS for inv in sorted(s.invariances)]


@pytest.mark.parametrize("spec,invariance", INV_CASES,
                         ids=[f"{s.name}-{i}" for s, i in INV_CASES])
def test_declared_invariances(spec, invariance):
    X, Y, labels = _data()
    rng = np.random.default_rng(99)
    t = _transforms(DX, rng)[invariance]
    ref = _call(spec, X, Y, labels).value
    if spec.kind == "pair":
        got_x = _call(spec, t(X), Y, labels).value
        got_y = _call(spec, X, t(Y), labels).value
        np.testing.assert_allclose([got_x, got_y], ref, rtol=1e-6, atol=1e-9)
    else:
        np.testing.assert_allclose(_call(spec, t(X), None, labels).value, ref, rtol=1e-6, atol=1e-9)


SYM = [s for s in SPECS if s.kind == "pair" and s.symmetric]


@pytest.mark.parametrize("spec", SYM, ids=[s.name for s in SYM])
def test_symmetry(spec):
    X, Y, labels = _data()
    np.testing.assert_allclose(_call(spec, X, Y, labels).value, _call(spec, Y, X, labels).value,
                               rtol=1e-8, atol=1e-10)
