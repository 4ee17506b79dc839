"""Benchmark manifolds: shapes, seeds, the geometry they claim, their true ID."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.data import manifolds as M


def test_suite_sizes_and_unpacking():
    suite = M.benchmark_suite(50)
    expected = {"M1_sphere": (10, 11), "M2_affine": (3, 5), "M8_nonlinear": (12, 72),
                "M10d_hypercube": (70, 72), "M12_gaussian": (20, 20), "M13_curve": (1, 13),
                "Mn2_nonlinear": (24, 96), "M7_swiss_roll": (2, 3), "M11_moebius": (2, 3)}
    for name, (d, D) in expected.items():
        X, true_id = suite[name]
        assert X.shape == (50, D) and true_id == d and X.dtype == np.float64
        assert np.isfinite(X).all()
    with pytest.raises(ValueError, match=r"Unknown manifold\(s\) \['M99'\]"):
        M.benchmark_suite(10, names=["M99"])


def test_seeded_and_noise():
    a, b, c = M.sphere(100, 3, seed=1), M.sphere(100, 3, seed=1), M.sphere(100, 3, seed=2)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)
    noisy = M.sphere(100, 3, seed=1, noise=0.1)
    assert noisy.noise == 0.1 and 0.05 < np.std(noisy.X - a.X) < 0.15
    with pytest.raises(ValueError, match=r"'noise' parameter of sphere must be a float in \[0, inf\]. Got -1"):
        M.sphere(10, 2, noise=-1.0)


def test_geometry_is_what_it_claims():
    np.testing.assert_allclose(np.linalg.norm(M.sphere(200, 4).X, axis=1), 1.0)
    sp = M.sphere(200, 4, ambient=9)  # rotated into more dims: still on a unit sphere
    np.testing.assert_allclose(np.linalg.norm(sp.X, axis=1), 1.0)
    assert np.linalg.matrix_rank(sp.X) == 5
    assert np.linalg.matrix_rank(M.gaussian_subspace(300, 7, 40).X) == 7
    assert np.linalg.matrix_rank(M.affine(300, 3, 5).X - M.affine(300, 3, 5).X.mean(0)) == 3
    cube = M.hypercube(300, 5, ambient=8)
    assert np.linalg.matrix_rank(cube.X) == 5
    nl = M.nonlinear(300, 4, 10, seed=3)
    assert nl.intrinsic_dim == 4 and nl.ambient_dim == 10


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"'ambient' parameter of gaussian_subspace must be an int in \[5, inf\). Got 3"):
        M.gaussian_subspace(10, 5, 3)
    with pytest.raises(ValueError, match=r"'n' parameter of sphere must be an int in \[1, inf\). Got 0"):
        M.sphere(0, 2)
