"""ESS (Johnsson, Soneson and Fontes 2015) on 1-D curves: exact on a straight segment, and on a
curve the curvature bias ``ESS - 1 ~ 0.65 * kappa * l`` (``l`` the half-length of the
neighbourhood) vanishes as the neighbourhood shrinks (docs/dimension.md, "ESS on curves")."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from repscope.data import manifolds as M
from repscope.measures import dimension as D
from repscope.measures.dimension._core import ess_calibration, ess_local_statistic


def _circle(n, radius=5.0, seed=0):
    t = 2 * math.pi * np.random.default_rng(seed).random(n)
    return radius * np.column_stack([np.cos(t), np.sin(t)])


def test_statistic_matches_pairwise_definition():
    """s = sum_{a<b} |v_a||v_b||sin theta_ab| / sum_{a<b} |v_a||v_b| (ESSa, 2-vector simplices),
    with the vectors centred at the neighbourhood mean."""
    rng = np.random.default_rng(0)
    P = rng.standard_normal((3, 9, 4))  # 3 neighbourhoods of 9 points in R^4
    V = P - P.mean(1, keepdims=True)
    expect = []
    for v in V:
        num = den = 0.0
        for a, b in combinations(range(len(v)), 2):
            na, nb = np.linalg.norm(v[a]), np.linalg.norm(v[b])
            cos = v[a] @ v[b] / (na * nb)
            num += na * nb * math.sqrt(max(0.0, 1 - cos * cos))
            den += na * nb
        expect.append(num / den)
    G = np.einsum("bid,bjd->bij", V, V)
    np.testing.assert_allclose(ess_local_statistic(G), expect, rtol=1e-12)


def test_reference_curve_matches_closed_form():
    """The simulated reference (k points uniform in an m-ball plus the centre, mean-centred) is
    0 at m = 1 and close to Johnsson et al.'s closed form for independent isotropic directions,
    E|sin theta| = Gamma(m/2)^2 / (Gamma((m+1)/2) Gamma((m-1)/2)): 2/pi at m = 2, pi/4 at m = 3."""
    curve = ess_calibration(20, 8, 2000, 0)
    assert curve[0] == pytest.approx(0.0, abs=1e-6)
    assert curve[1] == pytest.approx(2 / math.pi, abs=0.01)
    assert curve[2] == pytest.approx(math.pi / 4, abs=0.01)


def test_straight_segment_reads_one():
    t = np.random.default_rng(1).random(600)
    X = np.outer(t, [1.0, -2.0, 0.5, 3.0, 0.0]) + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert D.ess(X, n_boot=0).value == pytest.approx(1.0, abs=1e-6)


def test_curvature_bias_halves_when_n_doubles():
    """On a circle the neighbourhood's kappa * l = pi k / n: the excess over 1 is first order in
    it, so it halves when n doubles (and does not depend on the radius)."""
    excess = {n: D.ess(_circle(n), k=20, n_boot=0).value - 1.0 for n in (1000, 2000)}
    for n, e in excess.items():
        assert 0.4 < e / (math.pi * 20 / n) < 0.9, (n, e)
    assert 0.4 < excess[2000] / excess[1000] < 0.6
    big = D.ess(_circle(1000, radius=100.0), k=20, n_boot=0).value - 1.0
    assert big == pytest.approx(excess[1000], rel=0.05)


def test_gently_curved_curve_at_large_n():
    """Hein and Audibert's M13 curve (1-D in R^13): within 0.05 of 1 at n = 4000, k = 10, and
    closer to 1 than at n = 1000."""
    small = D.ess(M.curve(1000, 13, seed=2).X, k=10, n_boot=0).value
    large = D.ess(M.curve(4000, 13, seed=2).X, k=10, n_boot=0).value
    assert 1.0 < large < 1.05
    assert large - 1 < 0.5 * (small - 1)
