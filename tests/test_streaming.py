"""Streaming = batch: every streamable measure, random batch sizes, merges in any grouping."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from repscope import registry
from repscope.measures.spectrum import (
    measure_from_batches,
    measure_from_moments,
    measures_from_batches,
    moments_from_batches,
    spectrum,
    spectrum_from_batches,
)
from repscope.stats import Moments

STREAMABLE = [s for s in registry.specs() if s.accumulator is not None and s.kind == "single"
              and s.family in {"spectrum", "spread", "outliers"}]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(1537, 24)) * np.geomspace(10, 0.01, 24) + 50.0  # offset stresses centring
    X[:, 5] *= 30.0  # an outlier dimension
    return X


def _random_batches(X: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, X.shape[0]), size=int(rng.integers(3, 20)), replace=False))
    return np.split(X, cuts)


def _assert_same(a, b, rtol=1e-10):
    assert a.measure == b.measure and a.n_samples == b.n_samples and a.params == b.params
    np.testing.assert_allclose(a.value, b.value, rtol=rtol, atol=1e-12)
    for key, val in a.diagnostics.items():
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            np.testing.assert_allclose(b.diagnostics[key], val, rtol=rtol, atol=1e-9 * np.abs(val).max())
        elif isinstance(val, np.ndarray):
            np.testing.assert_array_equal(b.diagnostics[key], val)


def test_streamable_set_is_the_covariance_family():
    names = {s.name for s in STREAMABLE}
    assert {"spectrum", "power_law_alpha", "effective_rank", "spectral_entropy", "stable_rank",
            "isoscore", "common_mean_share", "outlier_dimensions", "anisotropy"} <= names


@pytest.mark.parametrize("spec", STREAMABLE, ids=[s.name for s in STREAMABLE])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_batch_sizes_equal_batch(spec, data, seed):
    batch = spec.fn(data)
    streamed = measure_from_batches(spec.name, _random_batches(data, np.random.default_rng(seed)))
    _assert_same(batch, streamed)


@pytest.mark.parametrize("spec", STREAMABLE, ids=[s.name for s in STREAMABLE])
def test_merge_is_associative_and_commutative(spec, data):
    parts = _random_batches(data, np.random.default_rng(5))[:3]
    a, b, c = (spec.accumulator(data.shape[1]).update(p) for p in parts)
    left = a.merge(b).merge(c).compute()
    right = a.merge(b.merge(c)).compute()
    swapped = c.merge(b.merge(a)).compute()
    _assert_same(left, right)
    _assert_same(left, swapped)
    full = spec.fn(np.concatenate(parts))
    _assert_same(full, left)


def test_workers_map_reduce_with_pickled_states(data):
    """Partial states travel between processes: they pickle, merge, and give the batch result."""
    factory = registry.get("effective_rank").accumulator
    states = [pickle.loads(pickle.dumps(factory(24).update(s))) for s in np.array_split(data, 4)]
    merged = states[0]
    for s in states[1:]:
        merged = merged.merge(s)
    _assert_same(registry.get("effective_rank").fn(data), merged.compute())


def test_compute_takes_params_as_dict_or_keywords(data):
    acc = registry.get("outlier_dimensions").accumulator(24).update(data)
    a, b = acc.compute({"threshold": 5.0}), acc.compute(threshold=5.0)
    assert a == b == registry.get("outlier_dimensions").fn(data, threshold=5.0)


def test_one_pass_for_many_measures(data):
    names = ["spectrum", "effective_rank", "isoscore", "anisotropy", "outlier_dimensions"]
    calls = {"n": 0}

    def batches():
        for part in np.array_split(data, 7):
            calls["n"] += 1
            yield part

    out = measures_from_batches(names, batches(), {"outlier_dimensions": {"threshold": 4.0}})
    assert calls["n"] == 7  # one pass over the stream
    for name in names:
        kw = {"threshold": 4.0} if name == "outlier_dimensions" else {}
        _assert_same(registry.get(name).fn(data, **kw), out[name])


def test_spectrum_from_batches_and_moments(data):
    ref = spectrum(data)
    _assert_same(ref, spectrum_from_batches(iter(np.array_split(data, 5))))
    m = moments_from_batches(np.array_split(data, 3))
    _assert_same(ref, measure_from_moments("spectrum", m))
    np.testing.assert_allclose(m.covariance(), np.cov(data, rowvar=False), rtol=1e-10)


def test_float32_batches_accumulate_in_float64(data):
    X32 = data.astype(np.float32)
    streamed = spectrum_from_batches(np.array_split(X32, 9))
    np.testing.assert_allclose(streamed.diagnostics["eigenvalues"],
                               spectrum(X32.astype(np.float64)).diagnostics["eigenvalues"],
                               rtol=1e-9, atol=1e-9)


def test_streaming_errors(data):
    with pytest.raises(ValueError, match="got no batches"):
        spectrum_from_batches(iter([]))
    with pytest.raises(ValueError, match="'norm_outliers' is not streamable; streamable measures"):
        measure_from_batches("norm_outliers", [data])
    with pytest.raises(ValueError, match="'anisotropy' is not computed from Moments"):
        measure_from_moments("anisotropy", Moments.init(3))
    with pytest.raises(ValueError, match="non-finite"):
        spectrum_from_batches([data[:10], np.full((3, 24), np.nan)])
    with pytest.raises(ValueError, match=r"shape \(b, 24\); got \(4, 3\)"):
        spectrum_from_batches([data[:10], np.zeros((4, 3))])
    with pytest.raises(ValueError, match=r"needs at least 2 samples \(rows\); got n_samples=1"):
        spectrum_from_batches([data[:1]])
    with pytest.raises(KeyError, match="Unknown measure 'spectra'"):
        measure_from_batches("spectra", [data])


def test_stream_from_an_activation_store(tmp_path):
    """The covariance measures read an on-disk store batch by batch and match the batch result."""
    from repscope.capture.store import ActivationStore

    rng = np.random.default_rng(12)
    X = (rng.normal(size=(3000, 16)) * np.geomspace(4, 0.1, 16) + 1.0).astype(np.float32)
    with ActivationStore.create(tmp_path / "store", layers={"h": 16}, shard_rows=700) as writer:
        for i, part in enumerate(np.array_split(X, 7)):
            m = part.shape[0]
            writer.append({"h": part}, {"doc_id": np.arange(m), "position": np.zeros(m, np.int32),
                                        "token_id": np.zeros(m, np.int32)}, chunk=i)
        writer.finish()
    store = ActivationStore.open(tmp_path / "store")
    out = measures_from_batches(["spectrum", "isoscore", "anisotropy"],
                                store.iter_batches("h", batch_size=256))
    X64 = X.astype(np.float64)
    _assert_same(spectrum(X64), out["spectrum"])
    _assert_same(registry.get("isoscore").fn(X64), out["isoscore"])
    _assert_same(registry.get("anisotropy").fn(X64), out["anisotropy"])


def test_torch_device_path_equals_numpy_path(data):
    """The torch (device=) accumulation is the same arithmetic as the numpy one."""
    ref = measures_from_batches(["spectrum", "isoscore"], np.array_split(data, 5))
    got = measures_from_batches(["spectrum", "isoscore"], np.array_split(data, 5), device="cpu")
    assert got["spectrum"].params["device"] == "cpu"
    np.testing.assert_allclose(got["spectrum"].diagnostics["eigenvalues"],
                               ref["spectrum"].diagnostics["eigenvalues"], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(got["isoscore"].value, ref["isoscore"].value, rtol=1e-10)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(b, 24\); got \(3, 5\)"):
        registry.get("spectrum").accumulator(24, "cpu").update(np.zeros((3, 5)))
