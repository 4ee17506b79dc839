"""d_int from curves with known crossings: thresholds for accuracy and for a loss, per-seed
estimates and their range, censoring, NaN runs, and the JSON round trip of a result."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repscope.landscape.results import (
    DimensionEstimate,
    LandscapeResult,
    PointResult,
    estimate_dimension,
    reached,
    summarize,
    threshold_for,
)
from repscope.results import from_json

DIMS = np.array([1, 2, 4, 8, 16, 32])


def _est(values, fraction=0.9, baseline=1.0, initial=0.1, higher=True, tol=0.0):
    return estimate_dimension(fraction, DIMS, np.asarray(values, dtype=float), baseline, initial,
                              higher_is_better=higher, tolerance=tol, n_params=1000)


def test_thresholds():
    assert threshold_for(0.9, 0.8, 0.1, True) == pytest.approx(0.72)
    assert threshold_for(0.9, 0.2, 1.2, False) == pytest.approx(0.3)  # 90 % of the gap closed
    assert threshold_for(1.0, 0.2, 1.2, False) == pytest.approx(0.2)
    assert reached(0.72, 0.72, scale=0.8, tolerance=0.0, higher_is_better=True)
    assert not reached(0.7199, 0.72, scale=0.8, tolerance=0.0, higher_is_better=True)
    assert reached(0.2 + 1e-9, 0.2, scale=1.0, tolerance=1e-6, higher_is_better=False)
    assert not reached(math.nan, 0.0, scale=1.0, tolerance=1.0, higher_is_better=True)


def test_crossing_per_seed_and_range():
    # three seeds crossing 0.9 at d = 4, 8 and 16; their mean crosses at 8
    values = np.array([[0.2, 0.3, 0.4], [0.5, 0.5, 0.5], [0.95, 0.7, 0.6],
                       [0.97, 0.92, 0.85], [0.99, 0.97, 0.93], [1.0, 1.0, 1.0]])
    est = _est(values)
    assert isinstance(est, DimensionEstimate)
    assert est.measure == "d_int90"
    assert est.value == 8.0
    assert est.bracket == (4, 8)
    assert est.per_seed == (4.0, 8.0, 16.0)
    assert est.ci == (4.0, 16.0)
    assert est.n_samples == 3
    assert est.threshold == pytest.approx(0.9)
    assert est.diagnostics["relative"] == pytest.approx(8 / 1000)
    assert not est.censored


def test_censored_and_nan():
    values = np.full((6, 2), 0.5)
    values[5, 0] = 0.95
    est = _est(values)
    assert est.censored and math.isnan(est.value) and est.bracket is None
    assert est.per_seed[0] == 32.0 and math.isnan(est.per_seed[1])
    assert est.ci == (32.0, math.inf)
    assert est.max_dim == 32
    diverged = np.array([[0.1], [0.2], [math.nan], [0.95], [0.96], [0.97]])
    assert _est(diverged).value == 8.0  # a NaN run never passes


def test_loss_direction():
    # loss from 2.0 at theta_0 to 0.5 with full training; closed completely at d >= 4
    values = np.array([[1.8], [1.0], [0.5], [0.5], [0.5], [0.5]])
    assert _est(values, 1.0, baseline=0.5, initial=2.0, higher=False, tol=1e-6).value == 4.0
    assert _est(values, 0.5, baseline=0.5, initial=2.0, higher=False).value == 2.0
    assert _est(values, 0.5, baseline=0.5, initial=2.0, higher=False).threshold == 1.25


def _points():
    pts = []
    for s in (0, 1):
        pts += [PointResult("init", None, s, 0.1, 2.3, 2.3, 0, 0.1, 0),
                PointResult("full", None, s, 0.9 + 0.02 * s, 0.3, 0.2, 10, 1.0, 100)]
        for d, v in ((2, 0.5), (4, 0.85), (8, 0.9)):
            pts.append(PointResult("subspace", d, s, v + 0.01 * s, 1.0, 0.9, 10, 0.5, d))
    return pts


def test_summarize_and_json_round_trip():
    res = summarize("toy", _points(), (0, 1), (0.9, 0.5), n_params=100, projection="fastfood",
                    said=False, n_scales=0, metric="accuracy", higher_is_better=True,
                    tolerance=0.0, params={"growth": 2.0})
    assert isinstance(res, LandscapeResult)
    assert res.values.shape == (3, 2) and list(res.dims) == [2, 4, 8]
    assert res.baseline_mean == pytest.approx(0.91)
    assert res.d_int(0.5).value == 2.0
    assert res.d_int(0.9).value == 4.0  # threshold 0.9 * 0.91 = 0.819 < mean 0.855 at d = 4
    assert res.d_int(0.9).bracket == (2, 4)
    back = LandscapeResult.from_json(res.to_json())
    assert back.to_json() == res.to_json()
    assert back.d_int(0.9) == res.d_int(0.9)
    assert from_json(res.d_int(0.9).to_json()) == res.d_int(0.9)
    with pytest.raises(ValueError, match=r"'fraction' parameter of LandscapeResult.d_int must "
                                         r"be one of \[0.9, 0.5\]\. Got 0.8"):
        res.d_int(0.8)
