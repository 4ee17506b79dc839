"""Point clouds with a known intrinsic dimension, for validating ID estimators.

Every generator is seeded, returns a :class:`ManifoldSample` (which unpacks as
``X, true_id = sphere(2000, 5)``) and takes ``noise``: the standard deviation of isotropic
Gaussian noise added in the ambient space (noise raises the ID seen at small scales).

The collection follows the benchmark of Hein and Audibert (2005, "Intrinsic dimensionality
estimation of submanifolds in R^d") as extended by Campadelli et al. (2015, "Intrinsic dimension
estimation: relevant techniques and a benchmark framework"): spheres, affine spaces, hypercubes,
a Gaussian in a linear subspace, Swiss roll, Moebius band, helices, and nonlinear manifolds of
the suite's (ID, ambient) sizes. For the nonlinear manifolds (M3, M4, M6, M8, Mn1, Mn2) repscope
uses one documented construction, the graph of a smooth random function (see
:func:`nonlinear`), with the suite's sizes; the other shapes follow their usual definitions.
:func:`benchmark_suite` lists them with their true ID.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from repscope._validate import check_float, check_int

__all__ = [
    "ManifoldSample",
    "affine",
    "benchmark_suite",
    "curve",
    "gaussian_subspace",
    "helix_1d",
    "helix_2d",
    "hypercube",
    "moebius",
    "nonlinear",
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

    def __iter__(self) -> Iterator:
        return iter((self.X, self.intrinsic_dim))

    @property
    def ambient_dim(self) -> int:
        return int(self.X.shape[1])


def _finish(Z: np.ndarray, d: int, name: str, ambient: int | None, noise: float,
            rng: np.random.Generator, fn: str) -> ManifoldSample:
    """Zero-pad to ``ambient`` dims, rotate randomly when padded, add noise."""
    noise = check_float(noise, "noise", fn, low=0.0)
    D = Z.shape[1]
    if ambient is not None and ambient != D:
        ambient = check_int(ambient, "ambient", fn, low=D)
        Q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))  # (ambient, ambient)
        Z = np.hstack([Z, np.zeros((Z.shape[0], ambient - D))]) @ Q.T
    if noise > 0:
        Z = Z + noise * rng.standard_normal(Z.shape)
    return ManifoldSample(np.ascontiguousarray(Z, dtype=np.float64), d, name, noise)


def _n(n: int, fn: str) -> int:
    return check_int(n, "n", fn, low=1)


def sphere(n: int, d: int, *, ambient: int | None = None, noise: float = 0.0,
           seed: int = 0) -> ManifoldSample:
    """Uniform points on the unit ``d``-sphere ``S^d`` in ``R^(d+1)`` (M1: ``d=10``)."""
    fn = "sphere"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d + 1))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    return _finish(Z, d, f"sphere(d={d}, ambient={ambient or d + 1})", ambient, noise, rng, fn)


def hypercube(n: int, d: int, *, ambient: int | None = None, noise: float = 0.0,
              seed: int = 0) -> ManifoldSample:
    """Uniform points in ``[0, 1]^d``, zero-padded and rotated into ``ambient`` dims
    (M10a-d: ``d = 10, 17, 24, 70`` in ``d + 1``, ``d + 1``, ``d + 1``, ``d + 2``)."""
    fn = "hypercube"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    rng = np.random.default_rng(seed)
    Z = rng.random((n, d))
    return _finish(Z, d, f"hypercube(d={d}, ambient={ambient or d})", ambient, noise, rng, fn)


def affine(n: int, d: int, ambient: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """Uniform ``[-1, 1]^d`` mapped by a random full-rank affine map ``u -> A u + b`` into
    ``R^ambient`` (M2: 3 in 5; M9: 20 in 20). The image is a (sheared) ``d``-dim parallelotope."""
    fn = "affine"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    ambient = check_int(ambient, "ambient", fn, low=d)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((ambient, d))  # full column rank with probability 1
    b = rng.standard_normal(ambient)
    U = rng.uniform(-1.0, 1.0, (n, d))
    return _finish(U @ A.T + b, d, f"affine(d={d}, ambient={ambient})", None, noise, rng, fn)


def gaussian_subspace(n: int, d: int, ambient: int, *, noise: float = 0.0,
                      seed: int = 0) -> ManifoldSample:
    """Standard Gaussian in a random ``d``-dim linear subspace of ``R^ambient`` (M12 when
    ``d = ambient = 20``; ``d = 10, ambient = 768`` is the issue's benchmark case)."""
    fn = "gaussian_subspace"
    n, d = _n(n, fn), check_int(d, "d", fn, low=1)
    ambient = check_int(ambient, "ambient", fn, low=d)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((ambient, d)))  # (ambient, d) orthonormal columns
    Z = rng.standard_normal((n, d)) @ Q.T
    return _finish(Z, d, f"gaussian_subspace(d={d}, ambient={ambient})", None, noise, rng, fn)


def nonlinear(n: int, d: int, ambient: int, *, curvature: float = 1.0, noise: float = 0.0,
              seed: int = 0) -> ManifoldSample:
    """Graph of a smooth random function, rotated: an embedded ``d``-manifold in ``R^ambient``.

    ``u ~ U[0, 1]^d``; ``x = R [u, sin(pi * curvature * (W u + c))]`` with ``W`` of shape
    ``(ambient - d, d)`` and entries ``N(0, 1/d)``, ``c ~ U[0, 2)`` and ``R`` a random rotation.
    A graph of a smooth map is always an embedding, so the intrinsic dimension is exactly ``d``;
    ``curvature`` bends it. Used for the suite's nonlinear sizes (M3: 4 in 6, M4: 4 in 8,
    M6: 6 in 36, M8: 12 in 72, Mn1: 18 in 72, Mn2: 24 in 96).
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
    return _finish(Z @ Q.T, d, f"nonlinear(d={d}, ambient={ambient})", None, noise, rng, fn)


def swiss_roll(n: int, *, ambient: int | None = None, noise: float = 0.0,
               seed: int = 0) -> ManifoldSample:
    """Swiss roll (M7): ``t ~ U[1.5 pi, 4.5 pi]``, ``h ~ U[0, 21]``, ``x = (t cos t, h, t sin t)``."""
    fn = "swiss_roll"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    t = 1.5 * math.pi * (1 + 2 * rng.random(n))
    h = 21.0 * rng.random(n)
    Z = np.column_stack([t * np.cos(t), h, t * np.sin(t)])
    return _finish(Z, 2, f"swiss_roll(ambient={ambient or 3})", ambient, noise, rng, fn)


def moebius(n: int, *, twists: int = 10, ambient: int | None = None, noise: float = 0.0,
            seed: int = 0) -> ManifoldSample:
    """Moebius-type band (M11, ``twists = 10``): ``u ~ U[0, 2 pi)``, ``v ~ U[-1, 1]``,
    ``x = ((1 + v/2 cos(k u / 2)) cos u, (1 + v/2 cos(k u / 2)) sin u, v/2 sin(k u / 2))``."""
    fn = "moebius"
    n = _n(n, fn)
    twists = check_int(twists, "twists", fn, low=1)
    rng = np.random.default_rng(seed)
    u = 2 * math.pi * rng.random(n)
    v = rng.uniform(-1.0, 1.0, n)
    r = 1 + 0.5 * v * np.cos(twists * u / 2)
    Z = np.column_stack([r * np.cos(u), r * np.sin(u), 0.5 * v * np.sin(twists * u / 2)])
    return _finish(Z, 2, f"moebius(twists={twists})", ambient, noise, rng, fn)


def helix_1d(n: int, *, ambient: int | None = None, noise: float = 0.0,
             seed: int = 0) -> ManifoldSample:
    """Toroidal helix curve (M5a): ``t ~ U[0, 2 pi)``,
    ``x = ((2 + cos 8t) cos t, (2 + cos 8t) sin t, sin 8t)``."""
    fn = "helix_1d"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    t = 2 * math.pi * rng.random(n)
    r = 2 + np.cos(8 * t)
    Z = np.column_stack([r * np.cos(t), r * np.sin(t), np.sin(8 * t)])
    return _finish(Z, 1, "helix_1d", ambient, noise, rng, fn)


def helix_2d(n: int, *, ambient: int | None = None, noise: float = 0.0,
             seed: int = 0) -> ManifoldSample:
    """Helicoid surface (M5b): ``r ~ U[0, 1]``, ``t ~ U[0, 4 pi)``, ``x = (r cos t, r sin t, t / 4)``."""
    fn = "helix_2d"
    n = _n(n, fn)
    rng = np.random.default_rng(seed)
    r = rng.random(n)
    t = 4 * math.pi * rng.random(n)
    Z = np.column_stack([r * np.cos(t), r * np.sin(t), t / 4])
    return _finish(Z, 2, "helix_2d", ambient, noise, rng, fn)


def curve(n: int, ambient: int, *, noise: float = 0.0, seed: int = 0) -> ManifoldSample:
    """A smooth closed curve spread over all ``ambient`` dims (M13b-like: 1 in 13):
    ``t ~ U[0, 2 pi)``, ``x_j = sin((j + 1) t + phi_j) / (j + 1)``, ``phi_j`` random phases."""
    fn = "curve"
    n = _n(n, fn)
    ambient = check_int(ambient, "ambient", fn, low=2)
    rng = np.random.default_rng(seed)
    t = 2 * math.pi * rng.random(n)
    j = np.arange(1, ambient + 1)
    phi = rng.uniform(0, 2 * math.pi, ambient)
    Z = np.sin(t[:, None] * j + phi) / j
    return _finish(Z, 1, f"curve(ambient={ambient})", None, noise, rng, fn)


#: name -> generator(n, seed, noise); the Hein-Audibert / Campadelli sizes
SUITE: dict[str, Callable[[int, int, float], ManifoldSample]] = {
    "M1_sphere": lambda n, s, e: sphere(n, 10, noise=e, seed=s),
    "M2_affine": lambda n, s, e: affine(n, 3, 5, noise=e, seed=s),
    "M3_nonlinear": lambda n, s, e: nonlinear(n, 4, 6, noise=e, seed=s),
    "M4_nonlinear": lambda n, s, e: nonlinear(n, 4, 8, noise=e, seed=s),
    "M5a_helix_1d": lambda n, s, e: helix_1d(n, noise=e, seed=s),
    "M5b_helix_2d": lambda n, s, e: helix_2d(n, noise=e, seed=s),
    "M6_nonlinear": lambda n, s, e: nonlinear(n, 6, 36, noise=e, seed=s),
    "M7_swiss_roll": lambda n, s, e: swiss_roll(n, noise=e, seed=s),
    "M8_nonlinear": lambda n, s, e: nonlinear(n, 12, 72, noise=e, seed=s),
    "M9_affine": lambda n, s, e: affine(n, 20, 20, noise=e, seed=s),
    "M10a_hypercube": lambda n, s, e: hypercube(n, 10, ambient=11, noise=e, seed=s),
    "M10b_hypercube": lambda n, s, e: hypercube(n, 17, ambient=18, noise=e, seed=s),
    "M10c_hypercube": lambda n, s, e: hypercube(n, 24, ambient=25, noise=e, seed=s),
    "M10d_hypercube": lambda n, s, e: hypercube(n, 70, ambient=72, noise=e, seed=s),
    "M11_moebius": lambda n, s, e: moebius(n, noise=e, seed=s),
    "M12_gaussian": lambda n, s, e: gaussian_subspace(n, 20, 20, noise=e, seed=s),
    "M13_curve": lambda n, s, e: curve(n, 13, noise=e, seed=s),
    "Mn1_nonlinear": lambda n, s, e: nonlinear(n, 18, 72, noise=e, seed=s),
    "Mn2_nonlinear": lambda n, s, e: nonlinear(n, 24, 96, noise=e, seed=s),
}


def benchmark_suite(n: int = 2000, *, noise: float = 0.0, seed: int = 0,
                    names: list[str] | None = None) -> dict[str, ManifoldSample]:
    """The benchmark collection (or the ``names`` chosen from :data:`SUITE`), ``n`` points each."""
    names = list(SUITE) if names is None else names
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        raise ValueError(f"Unknown manifold(s) {unknown}; known: {sorted(SUITE)}.")
    return {name: SUITE[name](n, seed, noise) for name in names}
