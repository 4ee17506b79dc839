"""Shared helpers for the analysis / db / report tests: a small synthetic store and toy measures.

The toy measures have closed forms, so the tests can check values, and they are registered
only inside fixtures (never at import), so the conformance suite never sees them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from repscope import registry
from repscope.results import Estimate

LAYERS = ("embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2")
TOYS = ("_toy_pr", "_toy_local", "_toy_sim", "_toy_slow", "_toy_fail", "_toy_classes")


def make_store(path: Path, *, n_chunks: int = 4, rows: int = 60, d: int = 8, seed: int = 0):
    """A complete ActivationStore: layer i = a rank-3 signal plus noise growing with i."""
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(seed)
    writer = ActivationStore.create(
        path, layers={name: d for name in LAYERS}, shard_rows=100,
        identity={"model": "toy", "seed": seed},
        info={"model": {"id": "toy-model", "weights_sha256": "ab" * 8},
              "data": {"id": "toy-data", "sha256": "cd" * 8}, "pooling": "none"})
    mix = rng.normal(size=(3, d))
    for c in range(n_chunks):
        signal = rng.normal(size=(rows, 3)) @ mix  # (rows, d)
        acts = {name: (signal + 0.2 * i * rng.normal(size=(rows, d))).astype(np.float32)
                for i, name in enumerate(LAYERS)}
        meta = {"doc_id": np.full(rows, c), "position": np.arange(rows),
                "token_id": np.arange(rows) % 5}
        writer.append(acts, meta, chunk=c)
    return writer.finish()


def participation_ratio(X: np.ndarray) -> float:
    ev = np.linalg.eigvalsh(np.cov(np.asarray(X, dtype=np.float64).T))
    return float(ev.sum() ** 2 / (ev**2).sum())


def register_toys() -> None:
    """Register the toy measures (idempotent)."""
    if "_toy_pr" in registry._REGISTRY:
        return

    @registry.register("_toy_pr", family="dimension", min_samples=3)
    def _toy_pr(X, *, scale: float = 1.0, seed: int = 0):
        """Participation ratio of the covariance spectrum, times ``scale`` (test measure)."""
        if scale <= 0:
            raise ValueError(f"The 'scale' parameter of _toy_pr must be > 0. Got {scale!r} instead.")
        X = np.asarray(X, dtype=np.float64)
        ev = np.linalg.eigvalsh(np.cov(X.T))[::-1]  # (d,)
        v = scale * float(ev.sum() ** 2 / (ev**2).sum())
        return Estimate("_toy_pr", v, X.shape[0], stderr=0.05 * v, ci=(0.9 * v, 1.1 * v),
                        params={"scale": scale, "seed": seed}, diagnostics={"eigenvalues": ev})

    @registry.register("_toy_local", family="local_dimension")
    def _toy_local(X, *, k: int = 5, neighbors=None):
        """Per-point |x_0| + 1 as a stand-in for a local estimate (test measure)."""
        local = np.abs(np.asarray(X, dtype=np.float64)[:, 0]) + 1  # (n,)
        return Estimate("_toy_local", float(np.median(local)), X.shape[0], params={"k": k},
                        diagnostics={"local": local})

    @registry.register("_toy_sim", family="similarity", kind="pair", symmetric=True,
                       higher_is_better=True, bounds=(0.0, 1.0), prepared=None)
    def _toy_sim(X, Y):
        """Linear CKA in feature space (test measure)."""
        A = np.asarray(X, dtype=np.float64)
        B = np.asarray(Y, dtype=np.float64)
        A, B = A - A.mean(0), B - B.mean(0)
        v = np.linalg.norm(A.T @ B) ** 2 / (np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B))
        return Estimate("_toy_sim", float(v), X.shape[0], diagnostics={"p_value": 0.01})

    @registry.register("_toy_slow", family="spread")
    def _toy_slow(X, *, sleep: float = 0.4):
        """Mean row norm, after sleeping ``sleep`` seconds (lets a test kill a run midway)."""
        time.sleep(sleep)
        return Estimate("_toy_slow", float(np.linalg.norm(X, axis=1).mean()), X.shape[0],
                        params={"sleep": sleep})

    @registry.register("_toy_fail", family="outliers")
    def _toy_fail(X):
        """Always raises (tests that failures are recorded, not fatal)."""
        raise RuntimeError("toy failure on purpose")


    @registry.register("_toy_classes", family="classes", needs_labels=True)
    def _toy_classes(X, *, labels):
        """Number of distinct class labels among the rows (test measure)."""
        labels = np.asarray(labels)
        if labels.shape[0] != X.shape[0]:
            raise ValueError("labels and X differ in length")
        return Estimate("_toy_classes", float(np.unique(labels).size), X.shape[0])


def unregister_toys() -> None:
    for name in TOYS:
        registry._REGISTRY.pop(name, None)


@pytest.fixture(autouse=True)
def toys():
    """Register the toy measures for each test of a module that imports this fixture."""
    register_toys()
    yield
    unregister_toys()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One synthetic store per test module (4 chunks x 60 rows, shards of 100 rows)."""
    return make_store(tmp_path_factory.mktemp("store") / "store")

