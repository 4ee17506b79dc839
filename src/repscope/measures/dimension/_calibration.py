"""Reference data of known intrinsic dimension, simulated at the data's sample size, and the
disk cache of what calibrated estimators read on it.

Calibrated estimators (DANCo, :func:`~repscope.measures.dimension.intrinsic_dimension`) compare
the data with reference samples of the *same* size ``n``: whatever an estimator reads on a
uniform ``m``-ball of ``n`` points is what it reads on ``m``-dimensional data at that ``n``, bias
included. The references:

* ``ball``: uniform in the unit ``m``-ball (Gaussian direction times ``U^(1/m)``);
* ``cube``: uniform in ``[0, 1]^m``;
* ``sphere``: uniform on the unit sphere ``S^m`` in ``R^(m+1)`` (curved, no boundary);
* ``gaussian``: standard normal in ``R^m`` (non-uniform density, no boundary).

Only ``n_queries`` (at most :data:`MAX_QUERIES`) of the ``n`` simulated points are used as
query points; their statistics have the same distribution as any other point's, so the mean
is unbiased and the work is ``n_queries * n * m`` per reference instead of ``n^2 m``.

Results are cached on disk under ``repscope.data.models.cache_dir() / "id-calibration"``, one
``.npz`` file per set of parameters, named by a SHA-256 digest of every parameter and the
repscope version. Files are written atomically and verified on load (the stored parameters
must equal the requested ones and every array must match its stored SHA-256); a file that
fails is recomputed and replaced. Everything is seeded: a cache hit returns exactly what a
fresh computation returns.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from repscope._version import __version__

__all__ = ["FAMILIES", "MAX_QUERIES", "cached", "query_neighbors", "reference_sample"]

log = logging.getLogger("repscope.measures.dimension")

FAMILIES = ("ball", "cube", "sphere", "gaussian")
#: query points per simulated reference (statistics are means over them)
MAX_QUERIES = 2500
_MEMORY: dict[str, dict[str, np.ndarray]] = {}


def reference_sample(family: str, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the ``m``-dimensional reference ``family`` (module docstring); float64."""
    if family == "ball":
        g = rng.standard_normal((n, m))
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        return g * rng.random((n, 1)) ** (1.0 / m)
    if family == "cube":
        return rng.random((n, m))
    if family == "sphere":
        g = rng.standard_normal((n, m + 1))
        return g / np.linalg.norm(g, axis=1, keepdims=True)
    if family == "gaussian":
        return rng.standard_normal((n, m))
    raise ValueError(f"Unknown reference family {family!r}; known: {FAMILIES}.")


def query_neighbors(Y: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours (self excluded) of the rows ``queries`` of ``Y`` among all
    rows of ``Y``: ``(indices (q, k), distances (q, k))``, nearest first.

    For simulated reference data (continuous distributions: no duplicates, no far-away
    clusters): float64 products in blocks of at most 32 MB, then the distances of the
    ``k`` candidates recomputed from coordinate differences.
    """
    Yt = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float64))  # (n, m)
    Yt = Yt - Yt.mean(0)
    n = Yt.shape[0]
    sq = (Yt * Yt).sum(1)  # (n,)
    q = torch.from_numpy(queries)
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    dist = np.empty((q.shape[0], k))
    step = max(1, 2**22 // n)
    for lo in range(0, q.shape[0], step):
        rows = q[lo:lo + step]
        R = torch.addmm(sq[None, :], Yt[rows], Yt.T, alpha=-2.0)  # (b, n) = |y|^2 - 2 x.y
        R[torch.arange(rows.shape[0]), rows] = float("inf")
        cand = torch.topk(R, k, dim=1, largest=False).indices  # (b, k)
        d = torch.linalg.vector_norm(Yt[cand] - Yt[rows][:, None, :], dim=2)  # (b, k)
        order = torch.argsort(d, dim=1, stable=True)
        idx[lo:lo + step] = torch.gather(cand, 1, order).numpy()
        dist[lo:lo + step] = torch.gather(d, 1, order).numpy()
    return idx, dist


def cached(name: str, params: Mapping[str, Any],
           compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()`` memoised in memory and on disk under ``params`` (plus the repscope version).

    Returns read-only arrays. Never raises for an unreadable, stale or tampered cache file: it
    is recomputed and replaced (atomically).
    """
    meta = {"name": name, "version": __version__, **params}
    text = json.dumps(meta, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    if digest in _MEMORY:
        return _MEMORY[digest]
    path = _cache_root() / f"{name}-{digest}.npz"
    arrays = _load(path, text)
    if arrays is None:
        arrays = {key: np.ascontiguousarray(v) for key, v in compute().items()}
        _store(path, text, arrays)
    for v in arrays.values():
        v.setflags(write=False)
    _MEMORY[digest] = arrays
    return arrays


def _cache_root():
    from repscope.data.models import cache_dir

    return cache_dir() / "id-calibration"


def _checksums(arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
            for k, v in sorted(arrays.items())}


def _load(path, text: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["__meta__"]))
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
        if stored["params"] != text or stored["sha256"] != _checksums(arrays):
            raise ValueError("parameters or checksums differ")
        return arrays
    except Exception as err:  # a broken cache is recomputed, never trusted
        log.warning("calibration cache %s is unusable (%s); recomputing it", path, err)
        return None


def _store(path, text: str, arrays: dict[str, np.ndarray]) -> None:
    from repscope._io import atomic_write_bytes

    meta = json.dumps({"params": text, "sha256": _checksums(arrays)})
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array(meta), **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:  # a read-only cache directory costs time, not correctness
        log.warning("could not write the calibration cache %s (%s)", path, err)
