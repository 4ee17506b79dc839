"""Every execution path of every registered measure gives the batch function's value.

The measures are discovered from the registry, so a new measure is checked as soon as it is
registered with a capability:

* ``accumulator``: streaming in random chunkings (1-row chunks included) and merging the
  partial states in random order equals the batch function (hypothesis draws the chunkings
  and the merge orders);
* ``prepared``: ``compare(prepare(X), prepare(Y))`` equals ``fn(X, Y)``;
  ``permute(prepare(Y), p)`` equals ``prepare(Y[p])`` (compared through ``compare``), for
  every permutation hypothesis draws; ``all_pairs`` equals ``compare`` on every pair.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from repscope import registry

N, DX, DY = 48, 6, 5
SPECS = registry.specs()
STREAMING = [s for s in SPECS if s.accumulator is not None]
PREPARED = [s for s in SPECS if s.prepared is not None]
PERMUTABLE = [s for s in PREPARED if s.prepared.permute is not None]
ALL_PAIRS = [s for s in PREPARED if s.prepared.all_pairs is not None]
CPU = torch.device("cpu")
FEW = settings(max_examples=8, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ids(specs):
    return [s.name for s in specs]


def _data(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Correlated X (n, 6) and Y (n, 5) with unequal column scales and an offset."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(N, 4))
    X = Z @ rng.normal(size=(4, DX)) + 0.5 * rng.normal(size=(N, DX))
    X = X * np.geomspace(3.0, 0.3, DX) + 2.0
    X[:, 1] *= 8.0  # an outlier dimension
    Y = Z @ rng.normal(size=(4, DY)) + 0.7 * rng.normal(size=(N, DY))
    return X, Y


X0, Y0 = _data()


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _batch(spec):
    args = (X0, Y0) if spec.kind == "pair" else (X0,)
    return _quiet(spec.fn, *args)


def _close(got, ref, *, rtol=1e-9, diag_rtol=1e-7):
    """Same measure, rows, parameters and diagnostics keys; values to rounding."""
    assert got.measure == ref.measure and got.n_samples == ref.n_samples
    assert got.params == ref.params
    assert got.diagnostics.keys() == ref.diagnostics.keys()
    np.testing.assert_allclose(got.value, ref.value, rtol=rtol, atol=1e-12)
    for key, want in ref.diagnostics.items():
        have = got.diagnostics[key]
        if isinstance(want, np.ndarray) and want.dtype.kind in "fiu":
            scale = float(np.abs(want).max()) if want.size else 0.0
            np.testing.assert_allclose(have, want, rtol=diag_rtol, atol=1e-9 * max(scale, 1.0),
                                       err_msg=key)
        elif isinstance(want, float | int) and not isinstance(want, bool):
            np.testing.assert_allclose(have, want, rtol=diag_rtol, atol=1e-12, err_msg=key)
        else:
            assert have == want, key


# ------------------------------------------------------------------ accumulators ----------
@st.composite
def chunkings(draw) -> list[int]:
    """Chunk sizes summing to N (some of 1 row) and a merge order over the chunks."""
    sizes: list[int] = []
    while sum(sizes) < N:
        sizes.append(draw(st.integers(1, 17)))
    sizes[-1] -= sum(sizes) - N
    sizes = [s for s in sizes if s > 0]
    order = [draw(st.integers(0, 10**6)) for _ in range(len(sizes) - 1)]
    return sizes, order


def _merge_in_order(parts, order):
    """Merge partial states by picking pairs (any two, either side first) in a drawn order."""
    parts = list(parts)
    for r in order:
        i = r % len(parts)
        j = (i + 1 + (r // len(parts)) % (len(parts) - 1)) % len(parts)
        merged = parts[i].merge(parts[j]) if r % 2 else parts[j].merge(parts[i])
        parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [merged]
    (acc,) = parts
    return acc


def _stream(spec, sizes, order):
    cuts = np.cumsum(sizes)[:-1]
    if spec.kind == "pair":
        empty = spec.accumulator(DX, DY)
        parts = [empty.update(x, y) for x, y in zip(np.split(X0, cuts), np.split(Y0, cuts),
                                                     strict=True)]
    else:
        empty = spec.accumulator(DX)
        parts = [empty.update(x) for x in np.split(X0, cuts)]
    return _quiet(_merge_in_order(parts, order).compute, spec.resolve_params({}))


@pytest.mark.parametrize("spec", STREAMING, ids=_ids(STREAMING))
@FEW
@given(plan=chunkings())
@example(plan=([1] * N, [0] * (N - 1)))
@example(plan=([N], []))
def test_stream_in_any_chunks_and_merge_order_equals_batch(spec, plan):
    sizes, order = plan
    _close(_stream(spec, sizes, order), _batch(spec))


# ------------------------------------------------------------------ prepared paths --------
def _prepared_estimate(spec, X, Y, params=None):
    params = spec.resolve_params(params)
    p = spec.prepared
    sx, sy = p.prepare(X, CPU, params, "X"), p.prepare(Y, CPU, params, "Y")
    return _quiet(p.compare, sx, sy, params)


@pytest.mark.parametrize("spec", PREPARED, ids=_ids(PREPARED))
def test_prepared_path_equals_batch(spec):
    _close(_prepared_estimate(spec, X0, Y0), _batch(spec), rtol=1e-10)


@pytest.mark.parametrize("spec", PERMUTABLE, ids=_ids(PERMUTABLE))
@FEW
@given(perm=st.permutations(range(N)))
def test_permuted_state_equals_state_of_permuted_rows(spec, perm):
    perm = np.asarray(perm)
    params = spec.resolve_params({})
    p = spec.prepared
    sx, sy = p.prepare(X0, CPU, params, "X"), p.prepare(Y0, CPU, params, "Y")
    moved = _quiet(p.compare, sx, p.permute(sy, perm), params)
    direct = _quiet(p.compare, sx, p.prepare(Y0[perm], CPU, params, "Y"), params)
    _close(moved, direct, rtol=1e-10)


@pytest.mark.parametrize("spec", ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_all_pairs_equals_pairwise_compare(spec):
    rng = np.random.default_rng(8)
    arrays = {"a": X0, "b": Y0, "c": X0[:, :3] @ rng.normal(size=(3, 7)) + rng.normal(size=(N, 7))}
    names = tuple(arrays)
    params = spec.resolve_params({})
    got = _quiet(spec.prepared.all_pairs, arrays, names, CPU, params)
    assert set(got) == {(a, b) for i, a in enumerate(names) for b in names[i:]}
    for (a, b), est in got.items():
        _close(est, _prepared_estimate(spec, arrays[a], arrays[b]), rtol=1e-10)
