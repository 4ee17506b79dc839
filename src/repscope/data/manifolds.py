"""Point clouds with a known intrinsic dimension, for validating ID estimators.

Every generator is seeded, returns a :class:`ManifoldSample` (which unpacks as
``X, true_id = sphere(2000, 5)``) and takes ``noise``: the standard deviation of isotropic
Gaussian noise added in the ambient space (noise raises the ID seen at small scales).

:data:`SUITE` / :func:`benchmark_suite` is the benchmark of Hein and Audibert (2005, "Intrinsic
dimensionality estimation of submanifolds in R^d", ICML; M1-M13) as extended by Campadelli,
Casiraghi, Ceruti and Rozza (2015, "Intrinsic dimension estimation: relevant techniques and a
benchmark framework", Math. Probl. Eng.; Mn1, Mn2, Mbeta, Mp1-Mp3). M1-M13 follow the formulas
of the data generator Hein and Audibert released with their paper (the same parameter ranges,
coefficients and zero padding; no rotation); Mn1, Mn2 and Mbeta are the nonlinear manifolds of
Rozza, Lombardi, Ceruti, Casiraghi and Campadelli (2012, "Novel high intrinsic dimensionality
estimators", Machine Learning 89) that Campadelli et al. adopt; Mp1-Mp3 their paraboloids.
``docs/dimension.md`` lists each definition and where other implementations differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from repscope._validate import check_choice, check_float, check_int

__all__ = [
    "SUITE",
    "ManifoldSample",
    "affine",
    "affine_3to5",
    "benchmark_suite",
    "concentrated_4to6",
    "curve",
    "cyclic",
    "gaussian_subspace",
    "helix_1d",
    "helix_2d",
    "hypercube",
    "moebius",
    "nonlinear",
    "paraboloid",
    "rozza",
    "s_curve",
    "sphere",
    "swiss_roll",
]


@dataclass(frozen=True)
class ManifoldSample:
    """Points sampled from a manifold of known intrinsic dimension."""

    X: np.ndarray
    "(n, ambient) float64 points."
    intrinsic_dim: int
    "The true intrinsic dimension."
    name: str
    "Generator and sizes, e.g. 'sphere(d=10, ambient=11)'."
    noise: float = 0.0
    "Standard deviation of the ambient Gaussian noise added."
    latent: np.ndarray | None = None
    "(n, p) parameters the noise-free points were computed from (None where not kept)."

    def __iter__(self) -> Iterator:
        return iter((self.X, self.intrinsic_dim))

    @property
    def ambient_dim(self) -> int:
        return int(self.X.shape[1])


def _finish(Z: np.ndarray, d: int, name: str, ambient: int | None, noise: float,
            rng: np.random.Generator, fn: str, latent: np.ndarray | None = None) -> ManifoldSample:
    """Zero-pad to ``ambient`` dims, rotate randomly when padded, add noise."""
    noise = check_float(noise, "noise", fn, low=0.0)
    D = Z.shape[1]
    if ambient is not None and ambient != D:
        ambient = check_int(ambient, "ambient", fn, low=D)
        Q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))  # (ambient, ambient)
        Z = np.hstack([Z, np.zeros((Z.shape[0], ambient - D))]) @ Q.T
    if noise > 0:
        Z = Z + noise * rng.standard_normal(Z.shape)
    return ManifoldSample(np.ascontiguousarray(Z, dtype=np.float64), d, name, noise, latent)


def _pad(Z: np.ndarray, ambient: int | None, fn: str) -> np.ndarray:
    """Zero-pad columns up to ``ambient`` (Hein and Audibert's embedding: no rotation)."""
    if ambient is None or ambient == Z.shape[1]:
        return Z
    ambient = check_int(ambient, "ambient", fn, low=Z.shape[1])
    return np.hstack([Z, np.zeros((Z.shape[0], ambient - Z.shape[1]))])


def _n(n: int, fn: str) -> int:
    return check_int(n, "n", fn, low=1)


# ---------------------------------------------------------------------------- linear and spheres


def sphere(n: int, d: int, *, ambient: int | None = None, noise: float = 0.0,
           seed: int = 0) -> ManifoldSample:
    """Uniform points on the unit ``d``-sphere ``S^d`` in ``R^(d+1)`` (M1: ``d=10``): normalised
    standard Gaussian vectors, as in Hein and Audibert's generator. With ``ambient > d + 1`` the
    sphere is zero-padded and randomly rotated."""
    fn = "sphere"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d + 1))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    return _finish(Z, d, f"sphere(d={d}, ambient={ambient or d + 1})", ambient, noise, rng, fn)


def hypercube(n: int, d: int, *, ambient: int | None = None, low: float = 0.0, high: float = 1.0,
              noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Uniform points in the solid cube ``[low, high]^d``, zero-padded to ``ambient`` dims
    (Hein and Audibert: M10a-d are ``d = 10, 17, 24, 70`` in ``d + 1``; M9 is ``[-2.5, 2.5]^20``)."""
    fn = "hypercube"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    low = check_float(low, "low", fn)
    high = check_float(high, "high", fn, low=low, low_inclusive=False)
    rng = np.random.default_rng(seed)
    U = rng.random((n, d))
    Z = _pad(low + (high - low) * U, ambient, fn)
    return _finish(Z, d, f"hypercube(d={d}, ambient={Z.shape[1]})", None, noise, rng, fn, U)


def affine(n: int, d: int, ambient: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Uniform ``[-1, 1]^d`` mapped by a random full-rank affine map ``u -> A u + b`` into
    ``R^ambient``: a (sheared) ``d``-dim parallelotope. The suite's M2 is :func:`affine_3to5`."""
    fn = "affine"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    ambient = check_int(ambient, "ambient", fn, low=d)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((ambient, d))  # full column rank with probability 1
    b = rng.standard_normal(ambient)
    U = rng.uniform(-1.0, 1.0, (n, d))
    return _finish(U @ A.T + b, d, f"affine(d={d}, ambient={ambient})", None, noise, rng, fn, U)


#: Hein and Audibert's M2: x = A p + b with p ~ U[0, 4]^3 (coefficients of their generator)
_M2_A = np.array([[1.2, -0.5, 0.0], [0.5, 0.0, 0.9], [-0.5, -0.2, 1.0], [0.4, -0.9, -0.1],
                  [1.1, 0.0, -0.3]])
_M2_B = np.array([3.0, -1.0, 0.0, 0.0, 8.0])


def affine_3to5(n: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """M2 (Hein and Audibert 2005): a 3-dim affine subspace of ``R^5``, ``x = A p + b`` with
    ``p ~ U[0, 4]^3``, ``b = (3, -1, 0, 0, 8)`` and ``A`` (rows) ``(1.2, -0.5, 0)``,
    ``(0.5, 0, 0.9)``, ``(-0.5, -0.2, 1)``, ``(0.4, -0.9, -0.1)``, ``(1.1, 0, -0.3)``."""
    fn = "affine_3to5"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    P = 4.0 * rng.random((n, 3))
    return _finish(P @ _M2_A.T + _M2_B, 3, "affine_3to5", None, noise, rng, fn, P)


def gaussian_subspace(n: int, d: int, ambient: int, *, noise: float = 0.0,
                      seed: int = 0) -> ManifoldSample:
    """Standard Gaussian in a random ``d``-dim linear subspace of ``R^ambient`` (M12, the
    isotropic Gaussian, when ``d = ambient = 20``; ``d = 10, ambient = 768`` is the issue's
    benchmark case)."""
    fn = "gaussian_subspace"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    ambient = check_int(ambient, "ambient", fn, low=d)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((ambient, d)))  # (ambient, d) orthonormal columns
    G = rng.standard_normal((n, d))
    return _finish(G @ Q.T, d, f"gaussian_subspace(d={d}, ambient={ambient})", None, noise, rng,
                   fn, G)


# ---------------------------------------------------------------------------- Hein-Audibert nonlinear


def concentrated_4to6(n: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """M3 (Hein and Audibert 2005): a 4-dim manifold in ``R^6`` so concentrated that it looks
    3-dimensional. ``p ~ U[0, 1]^4``;
    ``x = (p1^2 cos 2 pi p0, p2^2 sin 2 pi p0, p1 + p2 + (p1 - p3)^2, p1 - 2 p2 + (p0 - p3)^2,
    -p1 - 2 p2 + (p2 - p3)^2, p0^2 - p1^2 + p2^2 - p3^2)``."""
    fn = "concentrated_4to6"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    P = rng.random((n, 4))
    p0, p1, p2, p3 = P.T
    a = 2 * math.pi * p0
    Z = np.column_stack([p1**2 * np.cos(a), p2**2 * np.sin(a), p1 + p2 + (p1 - p3) ** 2,
                         p1 - 2 * p2 + (p0 - p3) ** 2, -p1 - 2 * p2 + (p2 - p3) ** 2,
                         p0**2 - p1**2 + p2**2 - p3**2])
    return _finish(Z, 4, "concentrated_4to6", None, noise, rng, fn, P)


def cyclic(n: int, d: int, *, copies: int = 1, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Hein and Audibert's nonlinear manifolds M4 (``d=4``, 8 dims), M6 (``d=6, copies=3``,
    36 dims) and M8 (``d=12, copies=3``, 72 dims). ``p ~ U[0, 1]^d``; coordinate pair ``i``
    (``i = 0..d-1``) is ``p_{i+1} (cos 2 pi p_i, sin 2 pi p_i)`` with ``p_d = p_0``; the ``2d``
    coordinates are repeated ``copies`` times. The radius of pair ``i`` is the angle (in turns)
    of pair ``i + 1``, so the map is injective up to measure zero: the ID is ``d``."""
    fn = "cyclic"
    n, d = _n(n, fn), check_int(d, "d", fn, low=2)
    copies = check_int(copies, "copies", fn, low=1)
    rng = np.random.default_rng(seed)
    P = rng.random((n, d))
    r = np.roll(P, -1, axis=1)  # (n, d) r_i = p_{i+1}
    pairs = np.stack([r * np.cos(2 * math.pi * P), r * np.sin(2 * math.pi * P)], axis=2)
    Z = np.tile(pairs.reshape(n, 2 * d), copies)
    return _finish(Z, d, f"cyclic(d={d}, ambient={2 * d * copies})", None, noise, rng, fn, P)


def helix_1d(n: int, *, ambient: int | None = None, noise: float = 0.0,
             seed: int = 0) -> ManifoldSample:
    """Toroidal helix curve (M5a of the scikit-dimension / GeoMLE version of the suite):
    ``t ~ U[0, 2 pi)``, ``x = ((2 + cos 8t) cos t, (2 + cos 8t) sin t, sin 8t)``."""
    fn = "helix_1d"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    t = 2 * math.pi * rng.random(n)
    r = 2 + np.cos(8 * t)
    Z = np.column_stack([r * np.cos(t), r * np.sin(t), np.sin(8 * t)])
    return _finish(Z, 1, "helix_1d", ambient, noise, rng, fn, t[:, None])


def helix_2d(n: int, *, ambient: int | None = None, noise: float = 0.0,
             seed: int = 0) -> ManifoldSample:
    """Hein and Audibert's 2-d helix (M5b), a helicoid: ``r ~ U[-pi, pi)``, ``phi ~ U[0, 2 pi)``,
    ``x = (r sin phi, r cos phi, phi)``."""
    fn = "helix_2d"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    r = 2 * math.pi * rng.random(n) - math.pi
    phi = 2 * math.pi * rng.random(n)
    Z = np.column_stack([r * np.sin(phi), r * np.cos(phi), phi])
    return _finish(Z, 2, "helix_2d", ambient, noise, rng, fn, np.column_stack([r, phi]))


def swiss_roll(n: int, *, variant: str = "hein", ambient: int | None = None, noise: float = 0.0,
               seed: int = 0) -> ManifoldSample:
    """Swiss roll (M7). ``variant="hein"`` (Hein and Audibert's generator): ``phi ~ U[0, 2 pi)``,
    ``h ~ U[-pi, pi)``, ``x = (phi sin 2.5 phi, h, phi cos 2.5 phi)``. ``variant="classic"``
    (Tenenbaum et al. 2000, scikit-learn, scikit-dimension's M7): ``t ~ U[1.5 pi, 4.5 pi)``,
    ``h ~ U[0, 21)``, ``x = (t cos t, h, t sin t)``."""
    fn = "swiss_roll"
    n = _n(n, fn)
    check_choice(variant, "variant", fn, ("hein", "classic"))
    rng = np.random.default_rng(seed)
    if variant == "hein":
        h = 2 * math.pi * rng.random(n) - math.pi
        t = 2 * math.pi * rng.random(n)
        Z = np.column_stack([t * np.sin(2.5 * t), h, t * np.cos(2.5 * t)])
    else:
        t = 1.5 * math.pi * (1 + 2 * rng.random(n))
        h = 21.0 * rng.random(n)
        Z = np.column_stack([t * np.cos(t), h, t * np.sin(t)])
    return _finish(Z, 2, f"swiss_roll({variant})", ambient, noise, rng, fn,
                   np.column_stack([t, h]))


def s_curve(n: int, *, ambient: int | None = None, noise: float = 0.0,
            seed: int = 0) -> ManifoldSample:
    """The 2-dim S-curve in ``R^3`` (scikit-dimension's M13a, after scikit-learn's
    ``make_s_curve``): ``t = 3 pi (u - 1/2)`` with ``u ~ U[0, 1)``, ``h ~ U[0, 2)``,
    ``x = (sin t, h, sign(t) (cos t - 1))``: two half circles joined at the origin, so the
    surface is flat (a bent rectangle, zero Gaussian curvature) and its ID is 2."""
    fn = "s_curve"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    t = 3 * math.pi * (rng.random(n) - 0.5)
    h = 2.0 * rng.random(n)
    Z = np.column_stack([np.sin(t), h, np.sign(t) * (np.cos(t) - 1.0)])
    return _finish(Z, 2, "s_curve", ambient, noise, rng, fn, np.column_stack([t, h]))


def moebius(n: int, *, twists: int = 10, ambient: int | None = None, noise: float = 0.0,
            seed: int = 0) -> ManifoldSample:
    """Moebius band twisted ``twists`` times (M11: ``twists = 10``, Hein and Audibert):
    ``u ~ U[0, 2 pi)``, ``v ~ U[-1, 1)``, ``c = 1 + (v/2) cos(twists u / 2)``,
    ``x = (c cos u, c sin u, (v/2) sin(twists u / 2))``."""
    fn = "moebius"
    n = _n(n, fn)
    twists = check_int(twists, "twists", fn, low=1)
    rng = np.random.default_rng(seed)
    u = 2 * math.pi * rng.random(n)
    v = rng.uniform(-1.0, 1.0, n)
    r = 1 + 0.5 * v * np.cos(twists * u / 2)
    Z = np.column_stack([r * np.cos(u), r * np.sin(u), 0.5 * v * np.sin(twists * u / 2)])
    return _finish(Z, 2, f"moebius(twists={twists})", ambient, noise, rng, fn,
                   np.column_stack([u, v]))


def curve(n: int, ambient: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Hein and Audibert's 1-dim curve in ``R^ambient`` (M13: ``ambient = 13``):
    ``phi ~ U[0, 2 pi)``, ``x_j = (phi / (2 pi) + sum_{k=1}^{j} sin(k phi)) / (j + 1)`` for
    ``j = 0..ambient-1``. ``x_0`` is the parameter itself, so the curve is injective."""
    fn = "curve"
    n = _n(n, fn)
    ambient = check_int(ambient, "ambient", fn, low=2)
    rng = np.random.default_rng(seed)
    phi = 2 * math.pi * rng.random(n)
    k = np.arange(1, ambient)
    S = np.cumsum(np.sin(phi[:, None] * k), axis=1)  # (n, ambient-1) sum_{k<=j} sin(k phi)
    Z = np.hstack([np.zeros((n, 1)), S]) + phi[:, None] / (2 * math.pi)
    Z /= np.arange(1, ambient + 1)
    return _finish(Z, 1, f"curve(ambient={ambient})", None, noise, rng, fn, phi[:, None])


# ---------------------------------------------------------------------------- Campadelli et al.


def rozza(n: int, d: int, *, density: str = "uniform", alpha: float = 10.0, beta: float = 0.5,
          noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Nonlinear manifold of high ID in ``R^(4d)`` (Rozza et al. 2012; Campadelli et al. 2015:
    Mn1 ``d = 18``, Mn2 ``d = 24``, and Mbeta ``d = 10`` with ``density="beta"``).

    ``p_i ~ U[0, 1]`` (or ``Beta(alpha, beta)``: a smooth, strongly nonuniform density),
    ``f_i = p_i sin(cos 2 pi p_i)``, ``g_i = p_i cos(sin 2 pi p_i)``,
    ``x = (f, g, f, g)``: a product of ``d`` smooth curves, so the ID is ``d``.
    """
    fn = "rozza"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    check_choice(density, "density", fn, ("uniform", "beta"))
    rng = np.random.default_rng(seed)
    if density == "uniform":
        P = rng.random((n, d))
    else:
        alpha = check_float(alpha, "alpha", fn, low=0.0, low_inclusive=False)
        beta = check_float(beta, "beta", fn, low=0.0, low_inclusive=False)
        P = rng.beta(alpha, beta, (n, d))
    a = 2 * math.pi * P
    F, G = P * np.sin(np.cos(a)), P * np.cos(np.sin(a))
    Z = np.hstack([F, G, F, G])
    return _finish(Z, d, f"rozza(d={d}, density={density})", None, noise, rng, fn, P)


def paraboloid(n: int, d: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Paraboloid ``M_P`` of Campadelli et al. (2015) (Mp1-Mp3: ``d = 3, 6, 9``) in
    ``R^(3(d+1))``, sampled from a multivariate Burr distribution.

    ``E_0..E_d ~ Exp(1)``, ``u_i = 1 / (1 + E_i / E_0)`` (``i = 1..d``), ``y = (u, |u|^2)``,
    ``x = (y, sin y, y^2)`` (element-wise): the graph of ``|u|^2`` over ``u``, smoothly embedded.
    """
    fn = "paraboloid"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    rng = np.random.default_rng(seed)
    E = rng.exponential(1.0, (n, d + 1))
    U = 1.0 / (1.0 + E[:, 1:] / E[:, :1])  # (n, d)
    Y = np.hstack([U, (U * U).sum(1, keepdims=True)])
    Z = np.hstack([Y, np.sin(Y), Y * Y])
    return _finish(Z, d, f"paraboloid(d={d})", None, noise, rng, fn, U)


# ---------------------------------------------------------------------------- extra


def nonlinear(n: int, d: int, ambient: int, *, curvature: float = 1.0, noise: float = 0.0,
              seed: int = 0) -> ManifoldSample:
    """Graph of a smooth random function, rotated: an embedded ``d``-manifold in ``R^ambient``
    (repscope's own construction, for any sizes; not part of the suite).

    ``u ~ U[0, 1]^d``; ``x = R [u, sin(pi * curvature * (W u + c))]`` with ``W`` of shape
    ``(ambient - d, d)`` and entries ``N(0, 1/d)``, ``c ~ U[0, 2)`` and ``R`` a random rotation.
    A graph of a smooth map is always an embedding, so the intrinsic dimension is exactly ``d``;
    ``curvature`` bends it.
    """
    fn = "nonlinear"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    ambient = check_int(ambient, "ambient", fn, low=d + 1)
    curvature = check_float(curvature, "curvature", fn, low=0.0)
    rng = np.random.default_rng(seed)
    U = rng.random((n, d))
    W = rng.standard_normal((ambient - d, d)) / math.sqrt(d)
    c = rng.uniform(0.0, 2.0, ambient - d)
    Z = np.hstack([U, np.sin(math.pi * curvature * (U @ W.T + c))])
    Q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))
    return _finish(Z @ Q.T, d, f"nonlinear(d={d}, ambient={ambient})", None, noise, rng, fn, U)


# ---------------------------------------------------------------------------- the suite


#: name -> generator(n, seed, noise): Hein and Audibert (2005) M1-M13 with their generator's
#: sizes, the S-curve scikit-dimension adds as M13a (its M13b is ``M13_curve``), and
#: Campadelli et al. (2015) Mn1, Mn2, Mbeta, Mp1-Mp3: the 24 manifolds of the benchmark
SUITE: dict[str, Callable[[int, int, float], ManifoldSample]] = {
    "M1_sphere": lambda n, s, e: sphere(n, 10, noise=e, seed=s),
    "M2_affine": lambda n, s, e: affine_3to5(n, noise=e, seed=s),
    "M3_nonlinear": lambda n, s, e: concentrated_4to6(n, noise=e, seed=s),
    "M4_nonlinear": lambda n, s, e: cyclic(n, 4, noise=e, seed=s),
    "M5a_helix_1d": lambda n, s, e: helix_1d(n, noise=e, seed=s),
    "M5b_helix_2d": lambda n, s, e: helix_2d(n, noise=e, seed=s),
    "M6_nonlinear": lambda n, s, e: cyclic(n, 6, copies=3, noise=e, seed=s),
    "M7_swiss_roll": lambda n, s, e: swiss_roll(n, noise=e, seed=s),
    "M8_nonlinear": lambda n, s, e: cyclic(n, 12, copies=3, noise=e, seed=s),
    "M9_affine": lambda n, s, e: hypercube(n, 20, low=-2.5, high=2.5, noise=e, seed=s),
    "M10a_hypercube": lambda n, s, e: hypercube(n, 10, ambient=11, noise=e, seed=s),
    "M10b_hypercube": lambda n, s, e: hypercube(n, 17, ambient=18, noise=e, seed=s),
    "M10c_hypercube": lambda n, s, e: hypercube(n, 24, ambient=25, noise=e, seed=s),
    "M10d_hypercube": lambda n, s, e: hypercube(n, 70, ambient=71, noise=e, seed=s),
    "M11_moebius": lambda n, s, e: moebius(n, noise=e, seed=s),
    "M12_gaussian": lambda n, s, e: gaussian_subspace(n, 20, 20, noise=e, seed=s),
    "M13_curve": lambda n, s, e: curve(n, 13, noise=e, seed=s),
    "M13a_s_curve": lambda n, s, e: s_curve(n, noise=e, seed=s),
    "Mn1_nonlinear": lambda n, s, e: rozza(n, 18, noise=e, seed=s),
    "Mn2_nonlinear": lambda n, s, e: rozza(n, 24, noise=e, seed=s),
    "Mbeta": lambda n, s, e: rozza(n, 10, density="beta", noise=e, seed=s),
    "Mp1_paraboloid": lambda n, s, e: paraboloid(n, 3, noise=e, seed=s),
    "Mp2_paraboloid": lambda n, s, e: paraboloid(n, 6, noise=e, seed=s),
    "Mp3_paraboloid": lambda n, s, e: paraboloid(n, 9, noise=e, seed=s),
}


def benchmark_suite(n: int = 2000, *, noise: float = 0.0, seed: int = 0,
                    names: list[str] | None = None) -> dict[str, ManifoldSample]:
    """The benchmark collection (or the ``names`` chosen from :data:`SUITE`), ``n`` points each."""
    names = list(SUITE) if names is None else names
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        raise ValueError(f"Unknown manifold(s) {unknown}; known: {sorted(SUITE)}.")
    return {name: SUITE[name](n, seed, noise) for name in names}
