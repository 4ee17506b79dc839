"""The sharded neighbour search equals the single-machine table bit for bit.

Sharding, the duplicates policy (exact groups verified by the workers, near duplicates merged
on the neighbour table and searched again) and every certificate fallback must compose so that
``knn_distributed`` returns exactly what ``knn`` returns: same indices, same distances, same
duplicate report. Most tests run the workers in process (``executor="local"``); the Ray test
starts its own local cluster of two workers on loopback and shuts it down by its own handle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from repscope.neighbors import knn, knn_distributed
from repscope.neighbors.distributed import run_knn_distributed, shard_ranges
from repscope.neighbors.prepare import MOMENT_BLOCK
from repscope.neighbors.shard import SENTINEL, make_shard, merge_tables, search_shard


def assert_same_table(a, b) -> None:
    """Every field the estimators read, bit for bit."""
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.distances, b.distances)
    ra, rb = a.duplicates, b.duplicates
    for name in ("kept", "multiplicity", "inverse"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name))
    assert (ra.policy, ra.tol, ra.threshold, ra.n_input, ra.fraction) == \
        (rb.policy, rb.tol, rb.threshold, rb.n_input, rb.fraction)
    assert (a.metric, a.k, a.n_features, a.exact) == (b.metric, b.k, b.n_features, b.exact)


def hard_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Data that exercises every path: plain, far-apart tight clusters (float64 and direct
    fallbacks), ties on a grid, exact and near duplicates."""
    rng = np.random.default_rng(seed)
    dup = rng.standard_normal((n, 16)).astype(np.float32)
    dup[10:60] = dup[0]  # one exact group of 51
    dup[n - 5:] = dup[n // 2]  # a group spanning shards
    dup[70] = dup[71] + np.float32(2e-7)  # near duplicates
    return {
        "plain": rng.standard_normal((n, 24)).astype(np.float32),
        "far": np.concatenate([rng.standard_normal((n // 2, 12)),
                               rng.standard_normal((n - n // 2, 12)) * 1e-3 + 1e3]).astype(np.float32),
        "ties": np.round(rng.standard_normal((n, 3)) * 2).astype(np.float32),
        "duplicates": dup,
    }


BLOCK = 512  # the moment block of these tests: shards of 512-row multiples, small data


@pytest.fixture
def small_blocks(monkeypatch):
    """A smaller moment block (the tables must agree for any block size): several shards on
    small data."""
    import repscope.neighbors.prepare as prepare

    monkeypatch.setattr(prepare, "MOMENT_BLOCK", BLOCK)


ROWS = hard_rows(3 * BLOCK + 300)


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_sharded_table_equals_the_single_machine_table(name, metric, small_blocks):
    X = ROWS[name]
    if metric == "cosine" and name == "ties":
        X = X + 10.0  # no zero rows
    policies = ("drop", "keep", "weight") if name == "duplicates" else ("drop",)
    for duplicates in policies:
        single = knn(X, 7, metric=metric, duplicates=duplicates)
        run = run_knn_distributed(X, 7, metric=metric, duplicates=duplicates, workers=4,
                                  executor="local", query_rows=300)
        assert run.workers == 4 and run.neighbors.strategy == "sharded"
        assert run.neighbors.workers == 4 and run.neighbors.recall is None
        assert_same_table(run.neighbors, single)
    if name == "duplicates":  # near duplicates merged: a second pass over fewer kept rows
        assert run.passes == 2 and run.neighbors.duplicates.n_kept < X.shape[0] - 50


def test_the_fallbacks_ran_and_still_agree(small_blocks):
    """Far-apart clusters fail the float32 certificate: the float64 and direct searches of
    the shards settle them, and the table is still the single-machine one."""
    X = ROWS["far"]
    nb = knn_distributed(X, 5, workers=2, executor="local")
    assert nb.float64_fraction > 0.2 and nb.direct_fraction > 0
    assert_same_table(nb, knn(X, 5))


def test_a_hash_collision_is_refined_by_the_rows_bytes(monkeypatch, small_blocks):
    """With a hash that puts every row in one group, the workers' bitwise check fails and the
    grouping falls back to the rows' bytes: the same groups as on one machine."""
    import repscope.neighbors.worker as worker

    X = ROWS["duplicates"]
    monkeypatch.setattr(worker, "_row_hashes", lambda A: np.zeros(A.shape[0], np.uint64))
    assert_same_table(knn_distributed(X, 4, workers=2, executor="local"), knn(X, 4))


def test_shard_search_is_exact_for_tiny_and_uneven_shards():
    """Shards smaller than k + 5 rows, queries inside and outside the shard, merged in any
    order: the k best by (squared distance, index)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    center = X.astype(np.float64).mean(0)
    cuts = [0, 3, 9, 40]
    parts = [search_shard(make_shard(X[a:b], np.arange(a, b), center), X, np.arange(40), 6,
                          "euclidean", 2**16) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    assert (parts[0][0][:, 3:] == SENTINEL).all()  # a 3-row shard fills 3 slots at most
    left = merge_tables(merge_tables(parts[0][:2], parts[1][:2], 6), parts[2][:2], 6)
    right = merge_tables(parts[2][:2], merge_tables(parts[1][:2], parts[0][:2], 6), 6)
    np.testing.assert_array_equal(left[0], right[0])
    D = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)  # (n, n) reference
    np.fill_diagonal(D, np.inf)
    np.testing.assert_array_equal(left[0], np.argsort(D, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(left[1], np.sort(D, axis=1)[:, :6], rtol=1e-6)


def test_shards_follow_the_moment_blocks():
    assert MOMENT_BLOCK == 4096 and shard_ranges(10, 4) == [(0, 10)]  # one block: one shard
    ranges = shard_ranges(5 * MOMENT_BLOCK + 7, 2)
    assert ranges == [(0, 3 * MOMENT_BLOCK), (3 * MOMENT_BLOCK, 5 * MOMENT_BLOCK + 7)]
    assert all(lo % MOMENT_BLOCK == 0 for lo, _ in ranges)


def test_a_store_layer_is_read_by_the_workers(tmp_path, small_blocks):
    """Each worker opens the store and reads its own rows (float16 storage upcast as
    ``store.read`` does); the table equals knn of the same rows."""
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(2)
    X = rng.standard_normal((BLOCK + 900, 20)).astype(np.float16)
    writer = ActivationStore.create(tmp_path / "s", layers={"h": 20}, dtype="float16",
                                    shard_rows=1000)
    for i in range(0, X.shape[0], 700):
        m = X[i:i + 700].shape[0]
        writer.append({"h": X[i:i + 700]}, {"doc_id": np.zeros(m, np.int64),
                                            "position": np.arange(m, dtype=np.int32),
                                            "token_id": np.zeros(m, np.int32)}, chunk=i // 700)
    store = writer.finish()
    run = run_knn_distributed(store, 6, layer="h", workers=2, executor="local")
    assert run.bytes_read == X.shape[0] * 20 * 4
    assert_same_table(run.neighbors, knn(store.read("h"), 6))
    with pytest.raises(ValueError, match=r"The 'layer' parameter of knn_distributed must name "
                                         r"a layer of the store \(\['h'\]\)\. Got 'x' instead\."):
        knn_distributed(store, 6, layer="x", executor="local")


def test_an_approximate_index_is_labelled_with_its_measured_recall(small_blocks):
    """IVF per shard, re-ranked exactly: exact=False, the index in the strategy, recall@k
    measured on a sample against the exact search, and carried into every ID estimate."""
    pytest.importorskip("faiss")
    from repscope.measures.dimension import twonn

    rng = np.random.default_rng(3)
    centers = rng.standard_normal((20, 32)) * 4
    X = (centers[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 32))).astype(np.float32)
    nb = knn_distributed(X, 5, workers=2, executor="local", index="ivf",
                         index_params={"nprobe": 4}, recall_sample=400)
    exact = knn(X, 5)
    assert not nb.exact and nb.backend == "faiss" and nb.strategy == "sharded-ivf"
    sample = np.sort(np.random.default_rng(0).choice(3000, 400, replace=False))
    truth = np.mean([np.intersect1d(a, b).size / 5
                     for a, b in zip(nb.indices[sample], exact.indices[sample], strict=True)])
    assert nb.recall == pytest.approx(truth)  # the recall the table reports is the real one
    assert 0.5 < nb.recall <= 1.0
    est = twonn(X, neighbors=nb)
    assert est.diagnostics["neighbor_exact"] is False
    assert est.diagnostics["neighbor_recall"] == nb.recall


@pytest.mark.parametrize("kwargs, match", [
    ({"executor": "spark"}, r"The 'executor' parameter of knn_distributed must be one of"),
    ({"workers": 0}, r"The 'workers' parameter of knn_distributed must be an int in \[1"),
    ({"index": "lsh"}, r"The 'index' parameter of knn_distributed must be one of"),
    ({"index": "ivf", "index_params": {"efs": 3}},
     r"The 'index_params' parameter of knn_distributed takes \['nlist', 'nprobe', 'seed'\] "
     r"for index='ivf'\. Got \['efs'\] instead\."),
    ({"dtype": torch.float16}, r"The 'dtype' parameter of knn_distributed must be torch.float32"),
    ({"k": 0}, r"The 'k' parameter of knn_distributed must be an int in \[1"),
    ({"layer": "h"}, r"The 'layer' parameter of knn_distributed is for an ActivationStore"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    X = ROWS["plain"][:100]
    kwargs = {"k": 3, "executor": "local", **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        knn_distributed(X, **kwargs)
    assert "\n" not in str(err.value)


def test_constant_data_and_too_large_k_are_refused_like_knn():
    X = np.ones((50, 4), np.float32)
    with pytest.raises(ValueError, match=r"knn_distributed got constant data: all 50 rows"):
        knn_distributed(X, 3, executor="local")
    X = ROWS["duplicates"][:200]
    with pytest.raises(ValueError, match=r"knn_distributed found duplicate rows"):
        knn_distributed(X, 3, executor="local", duplicates="raise")


# ----------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_two_workers():
    """A private local Ray with two worker CPUs on loopback, shut down by its own handle
    (never ``ray stop``); retried when start-up times out on a loaded machine."""
    ray = pytest.importorskip("ray")
    from repscope._ray import connect

    if ray.is_initialized():
        pytest.skip("this process already runs a Ray of unknown size")
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                         os.environ.get("PYTHONPATH")]))
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private cluster: no token
    session = connect(num_cpus=2, bind="loopback", logging_level="ERROR", log_to_driver=False,
                      runtime_env={"env_vars": {"PYTHONPATH": path}}, start_attempts=3)
    try:
        yield session
    finally:
        session.close()
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


@pytest.mark.slow
def test_on_ray_the_table_and_the_id_estimates_equal_the_single_machine_ones(ray_two_workers):
    """20,000 x 384 rows over two Ray workers on loopback: the table bit for bit, and every
    kNN ID estimate and local ID computed from it equal."""
    from repscope.measures import dimension

    ray = ray_two_workers.ray
    assert ray_two_workers.owns and ray.cluster_resources().get("CPU") == 2
    assert ray._private.worker._global_node.node_ip_address == "127.0.0.1"  # loopback only
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((24, 384))
    X = (np.tanh(rng.standard_normal((20_000, 24))) @ basis
         + 0.05 * rng.standard_normal((20_000, 384))).astype(np.float32)
    k = 32  # the largest rank the default estimators use (gride)
    run = run_knn_distributed(X, k, workers=2, executor="ray")
    single = knn(X, k)
    assert run.workers == 2 and run.neighbors.workers == 2
    assert_same_table(run.neighbors, single)
    for name in ["twonn", "mle", "gride", "local_mle", "local_twonn"]:
        fn = getattr(dimension, name)
        a, b = fn(X, neighbors=run.neighbors), fn(X, neighbors=single)
        assert (a.value, a.stderr, a.ci, a.scale, a.rank) == (b.value, b.stderr, b.ci, b.scale,
                                                             b.rank), name
        assert a.params == b.params, name
        engine = {"neighbor_strategy", "neighbor_rank", "neighbor_fallback_fraction",
                  "neighbor_workers", "neighbor_float64_fraction",
                  "neighbor_direct_fraction"}  # which engine ran, not what it found
        for key in set(a.diagnostics) | set(b.diagnostics):
            if key not in engine:
                np.testing.assert_array_equal(a.diagnostics[key], b.diagnostics[key], err_msg=key)
