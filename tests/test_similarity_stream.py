"""Moment-based pair measures: streamed (init / update / merge / compute) = batch function.

Every measure here is a function of the pair moments (n, Sxx, Syy, Sxy); the batch function
runs the same accumulator once, so splits, merges and 1-row batches must give the batch value
to rounding, also on ill-conditioned data (feature scales 1e-3..1e3 on a +1e4 offset).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from repscope import registry
from repscope.measures import similarity as sim
from repscope.measures.similarity.moments import PairMomentsAccumulator

# (measure, parameters): every moment-based pair measure, shape_alpha at its three regimes
CASES = [("cka_linear", {}), ("cca_mean", {}), ("svcca", {}), ("pwcca", {}),
         ("procrustes_angular", {}), ("procrustes_euclidean", {}), ("shape_alpha", {}),
         ("shape_alpha", {"alpha": 0.0}), ("shape_alpha", {"alpha": 1.0})]
IDS = [f"{m}{p.get('alpha', '')}" for m, p in CASES]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(400, 6))  # shared latent
    X = Z @ rng.normal(size=(6, 9)) + 0.5 * rng.normal(size=(400, 9))  # (400, 9)
    Y = Z @ rng.normal(size=(6, 7)) + 0.5 * rng.normal(size=(400, 7))  # (400, 7)
    return X, Y


@pytest.fixture(scope="module")
def ill(data) -> tuple[np.ndarray, np.ndarray]:
    """The same data with features scaled over 1e-3..1e3 and a common +1e4 offset."""
    X, Y = data
    return (X * np.geomspace(1e-3, 1e3, X.shape[1]) + 1e4,
            Y * np.geomspace(1e3, 1e-3, Y.shape[1]) + 1e4)


def _batch(name, X, Y, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return registry.get(name).fn(X, Y, **params)


def _resolved(name, params):
    return {**registry.get(name).defaults, **params}


def _stream(name, X, Y, params, sizes, order="left"):
    """Accumulate batches of the given sizes, merge left-to-right, right-to-left or as a tree."""
    empty = registry.get(name).accumulator(X.shape[1], Y.shape[1])
    cuts = np.cumsum(sizes)[:-1]
    parts = [empty.update(x, y) for x, y in zip(np.split(X, cuts), np.split(Y, cuts), strict=True)]
    while len(parts) > 1:
        if order == "left":
            parts = [parts[0].merge(parts[1]), *parts[2:]]
        elif order == "right":
            parts = [*parts[:-2], parts[-2].merge(parts[-1])]
        else:  # pairwise tree
            parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i]
                     for i in range(0, len(parts), 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return parts[0].compute(_resolved(name, params))


def _assert_same(streamed, batch, rtol, diag_rtol=1e-9):
    assert streamed.measure == batch.measure and streamed.n_samples == batch.n_samples
    assert streamed.params == batch.params
    assert streamed.diagnostics.keys() == batch.diagnostics.keys()
    np.testing.assert_allclose(streamed.value, batch.value, rtol=rtol, atol=1e-14)
    for key, ref in batch.diagnostics.items():
        got = streamed.diagnostics[key]
        if isinstance(ref, int | np.ndarray):
            np.testing.assert_allclose(got, ref, rtol=diag_rtol, atol=1e-12, err_msg=key)
        else:
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-14, err_msg=key)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_any_split_and_merge_order_equals_the_batch_function(name, params, data):
    X, Y = data
    batch = _batch(name, X, Y, params)
    rng = np.random.default_rng(0)
    sizes = np.diff(np.r_[0, np.sort(rng.choice(np.arange(1, 400), 9, replace=False)), 400])
    for order in ("left", "right", "tree"):
        _assert_same(_stream(name, X, Y, params, sizes, order), batch, rtol=1e-10)
    _assert_same(_stream(name, X, Y, params, [1] * 400, "tree"), batch, rtol=1e-10)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_ill_conditioned_stream_equals_batch(name, params, ill):
    """Feature scales over 1e-3..1e3 on a +1e4 offset: the 1-row stream (Welford-like merges)
    stays within 1e-9 relative of the one-batch value (measured: <= 1e-10). Singular vectors
    are less stable than singular values (error ~ 1/gap): PWCCA's weights agree to 1e-8."""
    X, Y = ill
    batch = _batch(name, X, Y, params)
    for sizes, order in (([1] * 400, "left"), ([57] * 7 + [1], "tree")):
        _assert_same(_stream(name, X, Y, params, sizes, order), batch, rtol=1e-9, diag_rtol=1e-8)


def _qr_cca(A, B):
    """Direct reference: orthonormal bases by Householder QR of the centred data (the
    condition number of the data, not its square), then the SVD of Qa^T Qb."""
    Qa = np.linalg.qr(A - A.mean(0))[0]  # (n, d_a)
    Qb = np.linalg.qr(B - B.mean(0))[0]  # (n, d_b)
    U, rho, _ = np.linalg.svd(Qa.T @ Qb, full_matrices=False)
    alpha = np.abs((Qa @ U).T @ (A - A.mean(0))).sum(1)  # PWCCA weights
    return rho, float(rho @ alpha / alpha.sum())


def test_moment_cca_matches_a_qr_reference_on_ill_conditioned_data(data, ill):
    """Equilibrating Sxx removes the ill-conditioning due to feature scales: the moment-based
    canonical correlations equal the QR ones to 1e-12, where whitening the raw Sxx (cond 1e12
    here) dropped real directions and moved mean CCA by ~0.06."""
    X, Y = ill
    rho, pw = _qr_cca(X, Y)
    est = sim.cca_mean(X, Y)
    assert (est.diagnostics["rank_x"], est.diagnostics["rank_y"]) == (9, 7)
    np.testing.assert_allclose(est.diagnostics["correlations"], rho, rtol=0, atol=1e-12)
    assert sim.pwcca(X, Y).value == pytest.approx(pw, abs=1e-12)
    # per-feature scale invariance: the ill-conditioned copy gives the well-conditioned value,
    # up to the input's own rounding (the 1e-3 features keep ~9 digits on the 1e4 offset)
    assert est.value == pytest.approx(sim.cca_mean(*data).value, abs=1e-10)
    # full whitening in shape_alpha is the CCA angle arccos(sum rho / sqrt(r_x r_y))
    assert sim.shape_alpha(X, Y, alpha=0.0).value == pytest.approx(
        np.arccos(rho.sum() / np.sqrt(9 * 7)), abs=1e-12)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_invariances_hold_for_the_streamed_value(name, params, data):
    X, Y = data
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.normal(size=(9, 9)))[0]
    sizes = [150, 1, 249]
    base = _stream(name, X, Y, params, sizes).value
    moved = {"rotation": X @ Q, "scale": X * 3.7,
             "permutation": X[:, rng.permutation(9)], "translation": X + 5.0}
    for inv in set(moved) & registry.get(name).invariances:
        if inv == "scale" and name == "shape_alpha" and params.get("alpha", 0.5) not in (0.0, 1.0):
            continue  # scale dependent for 0 < alpha < 1 (documented), like the batch function
        got = _stream(name, moved[inv], Y, params, sizes).value
        assert got == pytest.approx(base, rel=1e-9, abs=1e-12), (inv, got, base)


def test_measures_share_one_state_and_swap_sides_exactly(data):
    """The state does not depend on the measure: one accumulator feeds every moment-based
    measure (``adopt``), and the state of (X, Y) read as (Y, X) is a block permutation."""
    X, Y = data
    state = registry.get("procrustes_angular").accumulator(9, 7).update(X[:250], Y[:250])
    state = state.merge(registry.get("cca_mean").accumulator(9, 7).update(X[250:], Y[250:]))
    for name, params in CASES:
        empty = registry.get(name).accumulator(1, 1)
        assert empty.state_key == state.state_key == "pair_moments:float64"
        got = empty.adopt(state).compute(_resolved(name, params))
        _assert_same(got, _batch(name, X, Y, params), rtol=1e-10)
    swapped = state.swapped()
    direct = registry.get("pwcca").accumulator(7, 9).update(Y, X)
    assert (swapped.d_x, swapped.d_y) == (7, 9)
    np.testing.assert_allclose(swapped.moments.m2, direct.moments.m2, rtol=1e-13, atol=1e-10)
    pw = registry.get("pwcca").accumulator(1, 1).adopt(swapped).compute({"device": None})
    _assert_same(pw, sim.pwcca(Y, X), rtol=1e-10)
    again = pickle.loads(pickle.dumps(swapped))
    np.testing.assert_array_equal(again.moments.m2, swapped.moments.m2)
    # cka_linear's mixed precision keeps a state of its own
    assert sim.LinearCKAAccumulator.init(9, 7, "mixed").state_key == "pair_moments:mixed"


def test_torch_device_path_equals_numpy_path(data):
    X, Y = data
    cpu = PairMomentsAccumulator.empty("cca_mean", 9, 7).update(X, Y)
    dev = PairMomentsAccumulator.empty("cca_mean", 9, 7, device="cpu").update(X, Y)
    np.testing.assert_allclose(dev.moments.m2, cpu.moments.m2, rtol=1e-12, atol=1e-9)
    assert sim.cca_mean(X, Y, device="cpu").value == pytest.approx(sim.cca_mean(X, Y).value,
                                                                   abs=1e-12)


def test_rank_deficient_inputs_behave_like_the_batch_function(data):
    """Constant columns warn and are dropped, collinear ones lower the rank, all-constant
    input and n <= d are refused: in the streamed compute exactly as in the batch function."""
    X, Y = data
    Xd = np.hstack([X, X[:, :2] @ np.array([[1.0], [2.0]]), np.full((400, 1), 3.0)])  # (400, 11)
    empty = registry.get("cca_mean").accumulator(11, 7)
    acc = empty.update(Xd[:100], Y[:100]).merge(empty.update(Xd[100:], Y[100:]))
    with pytest.warns(UserWarning, match="1 of 11 columns of 'X' have zero variance"):
        streamed = acc.compute({"device": None})
    with pytest.warns(UserWarning, match="1 of 11 columns of 'X' have zero variance"):
        batch = sim.cca_mean(Xd, Y)
    assert streamed.diagnostics["rank_x"] == batch.diagnostics["rank_x"] == 9
    _assert_same(streamed, batch, rtol=1e-10)
    const = np.ones((400, 7))
    for name, _ in CASES:
        state = registry.get(name).accumulator(9, 7).update(X, const)
        with pytest.raises(ValueError, match="zero variance"):
            state.compute(_resolved(name, {}))
    few = registry.get("cca_mean").accumulator(9, 7).update(X[:8], Y[:8])
    with pytest.raises(ValueError, match=r"needs more samples than features \(n_samples=8 <= 9 for 'X'\)"):
        few.compute({})
    with pytest.raises(ValueError, match="shape_alpha with alpha=0 .* needs more samples than features"):
        registry.get("shape_alpha").accumulator(9, 7).update(X[:8], Y[:8]).compute({"alpha": 0.0})
    one = registry.get("svcca").accumulator(9, 7).update(X[:1], Y[:1])
    with pytest.raises(ValueError, match=r"svcca needs at least 2 samples \(rows\); got n_samples=1"):
        one.compute({})


def test_accumulator_errors(data):
    X, Y = data
    acc = registry.get("cca_mean").accumulator(9, 7)
    with pytest.raises(ValueError, match=r"expects batches of shape \(b, 9\) and \(b, 7\); got \(4, 7\) and \(4, 9\)"):
        acc.update(Y[:4], X[:4])
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(np.full((2, 9), np.nan), Y[:2])
    with pytest.raises(ValueError, match=r"Cannot merge pair moments of \(d_x, d_y\)=\(9, 7\) and \(7, 9\)"):
        acc.merge(registry.get("cca_mean").accumulator(7, 9))
    with pytest.raises(ValueError, match="precision='float64' and precision='mixed'"):
        acc.merge(sim.LinearCKAAccumulator.init(9, 7, "mixed"))
    with pytest.raises(ValueError, match=r"'d_x' parameter of cca_mean \(pair moments\) must be an int"):
        registry.get("cca_mean").accumulator(0, 7)
    for name in ("cka_linear", "cca_mean", "svcca", "pwcca", "procrustes_angular",
                 "procrustes_euclidean", "shape_alpha"):
        assert registry.get(name).streamable
    assert not registry.get("shape_mom").streamable  # cycle U-statistics, not second moments


# ------------------------------------------------------------ block moments (repscope analyze)

from repscope.measures.similarity.moments import BlockMoments  # noqa: E402

BLOCK_DIMS = {"l0": 9, "l1": 7, "l2": 5, "l3": 6}
BLOCK_PAIRS = [("l0", "l1"), ("l2", "l0"), ("l1", "l1"), ("l1", "l3"), ("l3", "l2")]


@pytest.fixture(scope="module")
def layers() -> dict[str, np.ndarray]:
    """Four float32 layers (as a store reads them) of mixed widths, scales and offsets."""
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(300, 4))
    return {name: (Z @ rng.normal(size=(4, d)) + rng.normal(size=(300, d)))
            .__mul__(np.geomspace(1e-2, 1e2, d)).__add__(50.0).astype(np.float32)
            for name, d in BLOCK_DIMS.items()}


def _rows(layers, a, b, lo, hi):
    """Rows lo:hi of layers a and b; the same object for a == b (as analyze passes them)."""
    x = layers[a][lo:hi]
    return x, (x if a == b else layers[b][lo:hi])


def _fold(states, order):
    while len(states) > 1:
        states = ([states[0].merge(states[1]), *states[2:]] if order == "left" else
                  [states[i].merge(states[i + 1]) if i + 1 < len(states) else states[i]
                   for i in range(0, len(states), 2)])
    return states[0]


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_block_moments_equal_the_per_pair_accumulators(layers, precision):
    """Random splits (1-row batches included) merged left or as a tree: every pair's state
    assembled from the blocks equals the per-pair accumulator fed the same batches (the pair
    in block order; the reverse order is its exact ``swapped()``). Measured: bit-identical;
    a direct (b, a) feed differs by BLAS summation order (~1e-16 relative in float64, float32
    chunk rounding ~1e-8 in mixed)."""
    rng = np.random.default_rng(7)
    cuts = [0, 1, 2, *np.sort(rng.choice(np.arange(3, 299), 6, replace=False)), 299, 300]
    spans = list(zip(cuts[:-1], cuts[1:], strict=True))
    empty = BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS, precision)
    assert empty.state_key == f"pair_moments:{precision}"
    parts = [empty.update({k: v[lo:hi] for k, v in layers.items()}) for lo, hi in spans]
    for order in ("left", "tree"):
        blocks = _fold(parts, order)
        assert blocks.n == 300
        for a, b in BLOCK_PAIRS:
            first, second = sorted((a, b), key=list(BLOCK_DIMS).index)
            ref = _fold([PairMomentsAccumulator.empty("cka_linear", BLOCK_DIMS[first],
                                                      BLOCK_DIMS[second], precision)
                         .update(*_rows(layers, first, second, lo, hi))
                         for lo, hi in spans], order)
            for x, y, want in ((first, second, ref), (second, first, ref.swapped())):
                got = blocks.pair_state(x, y, "cka_linear")
                assert (got.d_x, got.d_y, got.precision) == (want.d_x, want.d_y, precision)
                assert got.moments.n == want.moments.n == 300
                np.testing.assert_allclose(got.moments.mean, want.moments.mean, rtol=1e-12)
                np.testing.assert_allclose(got.moments.m2, want.moments.m2, rtol=1e-12,
                                           atol=1e-12 * np.abs(want.moments.m2).max())
                np.testing.assert_array_equal(got.moments.m2, want.moments.m2)  # same bits
        # a direct (b, a) feed agrees to rounding in float64 (float32 chunk sums in mixed)
        direct = _fold([PairMomentsAccumulator.empty("cka_linear", 5, 9, precision)
                        .update(layers["l2"][lo:hi], layers["l0"][lo:hi]) for lo, hi in spans],
                       order)
        tol = 1e-12 if precision == "float64" else 1e-6
        np.testing.assert_allclose(blocks.pair_state("l2", "l0").moments.m2, direct.moments.m2,
                                   rtol=0, atol=tol * np.abs(direct.moments.m2).max())
    # every measure's value from the blocks is the per-pair accumulator's value
    blocks = _fold(parts, "tree")
    names = [n for n, _ in CASES] if precision == "float64" else ["cka_linear"]
    for name in dict.fromkeys(names):
        init = {"precision": precision} if name == "cka_linear" else {}
        acc = registry.get(name).accumulator(1, 1, **init)
        ref = acc.adopt(_fold([PairMomentsAccumulator.empty(name, 9, 7, precision)
                               .update(layers["l0"][lo:hi], layers["l1"][lo:hi])
                               for lo, hi in spans], "tree").swapped())
        got = acc.adopt(blocks.pair_state("l1", "l0", name))
        _assert_same(got.compute(_resolved(name, init)), ref.compute(_resolved(name, init)),
                     rtol=1e-12, diag_rtol=1e-9)


def test_block_moments_memory_is_L_plus_P_blocks(layers):
    """All pairs of L = 4 layers of width d: (L + P) d^2 + L d floats, not 4 P d^2."""
    d, names = 5, list(BLOCK_DIMS)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]  # 10 with the diagonal
    blocks = BlockMoments.empty(dict.fromkeys(names, d), pairs).update(
        {k: v[:, :d] for k, v in layers.items()})
    P = 6  # off-diagonal pairs: the diagonal ones read the Gram blocks
    assert len(blocks.pairs) == P and len(blocks.grams) == len(blocks.means) == 4
    assert [a.shape for a in blocks.cross] == [(d, d)] * P
    sizes = sum(a.size for part in (blocks.means, blocks.grams, blocks.cross) for a in part)
    assert sizes == blocks.n_floats == (4 + P) * d * d + 4 * d
    assert sizes < 4 * P * d * d
    mixed = BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS)
    assert mixed.n_floats == sum(d * d + d for d in BLOCK_DIMS.values()) + 9 * 7 + 5 * 9 + 7 * 6 + 6 * 5


def test_block_moments_errors_and_pickle(layers):
    blocks = BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS).update(layers)
    again = pickle.loads(pickle.dumps(blocks))
    for got, want in zip(again.cross, blocks.cross, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"pair \('l0', 'l9'\) names 'l9', which is not one of"):
        BlockMoments.empty(BLOCK_DIMS, [("l0", "l9")])
    with pytest.raises(ValueError, match="'precision' parameter of BlockMoments.empty"):
        BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS, "float16")
    with pytest.raises(ValueError, match="needs a batch of every layer; 'l3' is missing"):
        blocks.update({k: v for k, v in layers.items() if k != "l3"})
    with pytest.raises(ValueError, match=r"expects 'l1' of shape \(b, 7\) with the same b"):
        blocks.update({**layers, "l1": layers["l1"][:10]})
    with pytest.raises(ValueError, match="non-finite"):
        blocks.update({**layers, "l2": np.full((300, 5), np.nan)})
    with pytest.raises(ValueError, match="Cannot merge block moments of layers"):
        blocks.merge(BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS[:2]))
    with pytest.raises(ValueError, match="precision='float64' and precision='mixed'"):
        blocks.merge(BlockMoments.empty(BLOCK_DIMS, BLOCK_PAIRS, "mixed"))
    with pytest.raises(KeyError, match=r"No cross block for layers \('l0', 'l3'\)"):
        blocks.pair_state("l0", "l3")


def test_accumulators_without_a_state_key_keep_a_state_per_item():
    from repscope.analysis.stream import pair_state_key

    shared = registry.get("pwcca").accumulator(1, 1)
    assert pair_state_key("pwcca", "b", "a", (), shared) == "blocks|pair_moments:float64"
    assert pair_state_key("_own", "b", "a", (("k", 1),), object()) == "_own|b|a|(('k', 1),)"
