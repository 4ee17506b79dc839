"""Massive activations / outlier coordinates: planted data, the criteria's edges, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.measures.massive import massive_activations


def _tokens(n_docs: int = 30, length: int = 20, d: int = 64, seed: int = 0):
    """Token rows of ``n_docs`` documents, positions 0..length-1, unit-scale Gaussian."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_docs * length, d))  # (n, d)
    positions = np.tile(np.arange(length), n_docs)  # (n,)
    token_ids = rng.integers(10, 1000, size=n_docs * length)  # (n,)
    return X, positions, token_ids


def test_planted_sink_found_with_coordinate_positions_share_and_suggestion():
    X, positions, token_ids = _tokens()
    sink = positions == 0
    X[sink, 17] = 2500.0  # the first token's massive coordinate (as in SmolLM2)
    token_ids[sink] = 1
    res = massive_activations(X, positions=positions, token_ids=token_ids)
    assert res.warn and res.massive and res.dominated
    assert res.top_coordinate == 17
    assert [c.coordinate for c in res.coordinates] == [17]
    c = res.coordinates[0]
    assert c.n_massive == 30 and dict(c.positions) == {0: 30} and dict(c.token_ids) == {1: 30}
    assert c.max_abs == pytest.approx(2500.0)
    # independent reference for the share: the column variance over the trace
    var = X.var(axis=0)
    assert res.top_share == pytest.approx(var[17] / var.sum(), rel=1e-12)
    assert res.top_share > 0.99
    assert res.pr_bound == pytest.approx(1 / res.top_share ** 2)
    # the bound holds: the participation ratio of the covariance spectrum is below it
    ev = np.linalg.eigvalsh(np.cov(X, rowvar=False))
    assert ev.sum() ** 2 / (ev ** 2).sum() <= res.pr_bound + 1e-9
    assert res.exclude_positions == (0,)
    assert res.share_without is not None and res.share_without < 0.1
    msg = res.message("model.layers.12")
    assert "coordinate 17" in msg and "--exclude-positions 0" in msg and "model.layers.12" in msg


def test_clean_gaussian_rows_do_not_warn():
    X, positions, _ = _tokens(seed=3)
    res = massive_activations(X * 50.0, positions=positions)  # large but not massive scale
    assert not res.warn and res.coordinates == () and res.exclude_positions == ()
    assert res.top_share < 0.1
    assert "no massive" in res.message()


def test_ratio_criterion_needs_both_floor_and_ratio():
    X, positions, _ = _tokens(seed=1)
    X[positions == 0, 5] = 90.0  # 90 is ~130x the median |x| ~0.67, yet below the floor of 100
    assert not massive_activations(X, positions=positions).massive
    X[positions == 0, 5] = 500.0  # above the floor, yet only ~750x the median
    res = massive_activations(X, positions=positions)
    assert not res.massive and res.dominated  # still owns the variance: flagged as dominant
    assert res.exclude_positions == ()  # no massive entries: no positions to suggest
    assert massive_activations(X, positions=positions, ratio=500.0).massive


def test_scattered_massive_entries_do_not_suggest_a_position():
    X, positions, _ = _tokens(seed=2)
    rows = np.arange(0, X.shape[0], 37)[:8]  # a few rows at assorted positions
    X[rows, 3] = 5000.0
    res = massive_activations(X, positions=positions)
    assert res.massive and res.n_massive_rows == 8
    assert res.exclude_positions == ()  # no position has massive entries in half its rows
    np.testing.assert_array_equal(res.rows, rows)
    assert sum(res.coordinates[0].positions.values()) == 8


def test_dominant_share_threshold_and_pooled_rows():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 40))  # (n, d)
    X[:, 0] *= 10.0  # variance 100 of a total ~139: share ~0.72
    res = massive_activations(X)
    assert res.dominated and not res.massive and res.top_coordinate == 0
    assert res.coordinates[0].positions == {}  # positions unknown (pooled rows)
    assert not massive_activations(X, max_share=0.9).warn


def test_torch_input_and_float32_agree_with_numpy():
    torch = pytest.importorskip("torch")
    X, positions, _ = _tokens(seed=5)
    X[positions == 0, 9] = 3000.0
    a = massive_activations(X, positions=positions)
    b = massive_activations(torch.from_numpy(X.astype(np.float32)), positions=positions)
    assert a.top_coordinate == b.top_coordinate and a.exclude_positions == b.exclude_positions
    assert a.top_share == pytest.approx(b.top_share, rel=1e-5)
    assert "top_coordinate=9" in repr(a) and len(repr(a)) < 300
    assert a.to_dict()["coordinates"][0]["positions"] == {"0": 30}


def test_bad_input_is_one_line():
    X, positions, _ = _tokens()
    with pytest.raises(ValueError, match=r"'positions' parameter of massive_activations must be "
                                         r"an int array with one value per row \(600\)"):
        massive_activations(X, positions=positions[:10])
    with pytest.raises(ValueError, match=r"'max_share' parameter of massive_activations must be "
                                         r"a float in \(0, 1\]"):
        massive_activations(X, max_share=0.0)
    with pytest.raises(ValueError, match="'ratio' parameter of massive_activations"):
        massive_activations(X, ratio=0.5)
    with pytest.raises(ValueError, match="massive_activations needs at least 2 samples"):
        massive_activations(X[:1])
