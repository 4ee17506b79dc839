"""Known answers for the neighbourhood methods: information imbalance, out-of-sample LID
(and the cross-set kNN it uses), unit matching, local rank, the manifold test, kNN recall."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from repscope import registry
from repscope.measures.dimension import local_mle
from repscope.measures.dimension.local_rank import local_rank
from repscope.measures.dimension.manifold_test import benjamini_hochberg, manifold_test
from repscope.measures.dimension.reference import reference_lid
from repscope.measures.retrieval import knn_recall
from repscope.measures.similarity.imbalance import information_imbalance
from repscope.measures.similarity.unit_matching import unit_matching
from repscope.neighbors import compression_table, knn, knn_query, neighbor_ranks, recall_at_k


def _embedded(n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform in an m-cube, isometrically embedded in R^d; and the embedding (m, d)."""
    rng = np.random.default_rng(seed)
    E = ortho_group.rvs(d, random_state=seed)[:m]  # (m, d) orthonormal rows
    return rng.uniform(size=(n, m)) @ E, E


# ------------------------------------------------------------------ cross-set kNN ------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_knn_query_is_the_exact_table(metric, dtype):
    import torch

    rng = np.random.default_rng(0)
    R = rng.normal(size=(400, 12)) + 50.0  # far from the origin: rounding-heavy for float32
    Q = rng.normal(size=(60, 12)) + 50.0
    Q[:5] = R[:5]  # queries that are reference rows find themselves at distance 0
    got = knn_query(Q, R, 7, metric=metric, dtype=getattr(torch, dtype))
    A, B = Q, R
    if metric == "cosine":
        A = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        B = R / np.linalg.norm(R, axis=1, keepdims=True)
    D = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)  # independent reference (60, 400)
    want = np.lexsort((np.broadcast_to(np.arange(400), D.shape), D), axis=1)[:, :7]
    np.testing.assert_array_equal(got.indices, want)
    ref_d = np.take_along_axis(D, want, 1)
    ref_d = 0.5 * ref_d if metric == "cosine" else np.sqrt(ref_d)
    np.testing.assert_allclose(got.distances, ref_d, rtol=1e-12, atol=1e-12)
    assert (got.indices[:5, 0] == np.arange(5)).all() and (got.distances[:5, 0] < 1e-15).all()


def test_knn_query_bad_input():
    R = np.zeros((10, 3))
    with pytest.raises(ValueError, match="knn_query: Q has 4 features but R has 3"):
        knn_query(np.zeros((2, 4)), R, 2)
    with pytest.raises(ValueError, match=r"'k' parameter of knn_query must be an int in \[1, n_reference=10\]"):
        knn_query(np.zeros((2, 3)), R, 11)


def test_neighbor_ranks_match_a_direct_count():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 5))
    T = rng.integers(0, 150, size=150)
    T[T == np.arange(150)] = (T[T == np.arange(150)] + 1) % 150
    D = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    want = 1 + (D < D[np.arange(150), T][:, None]).sum(1)
    np.testing.assert_array_equal(neighbor_ranks(X, T), want)


# ------------------------------------------------------------ information imbalance ----------
def test_information_imbalance_rotation_noise_and_the_planted_subset():
    rng = np.random.default_rng(2)
    n = 600
    A = rng.normal(size=(n, 6))
    rot = information_imbalance(A, A @ ortho_group.rvs(6, random_state=3))
    assert rot.value == 0.0 and rot.diagnostics["delta_ba"] == 0.0  # every rank is 1
    assert rot.diagnostics["delta_paper_ab"] == pytest.approx(2.0 / n)  # the paper's floor
    noise = information_imbalance(A, rng.normal(size=(n, 6)))
    assert abs(noise.value - 1.0) < 0.1 and noise.ci[0] < 1.0 < noise.ci[1]
    # Glielmo et al.'s toy: B is a function of a subset of A's coordinates
    A3 = rng.normal(size=(n, 3))
    B = A3[:, :1]
    est = information_imbalance(A3, B)
    d_ab, d_ba = est.value, est.diagnostics["delta_ba"]
    assert d_ab < 0.15 and d_ba > 0.4, (d_ab, d_ba)  # A predicts B, B does not predict A
    assert est.ci[1] < est.diagnostics["ci_ba"][0]


def test_information_imbalance_equals_a_brute_force_reference():
    rng = np.random.default_rng(21)
    n = 90
    A, B = rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
    B[:, 0] += A[:, 0]

    def ranks(Z):  # (n, n) rank of j among i's neighbours, 1 = nearest, self excluded
        D = ((Z[:, None] - Z[None]) ** 2).sum(-1)
        np.fill_diagonal(D, np.inf)
        return np.argsort(np.argsort(D, axis=1), axis=1) + 1

    RA, RB = ranks(A), ranks(B)
    nn_a, nn_b = RA.argmin(1), RB.argmin(1)
    est = information_imbalance(A, B)
    r_ab, r_ba = RB[np.arange(n), nn_a].mean(), RA[np.arange(n), nn_b].mean()
    assert est.diagnostics["delta_paper_ab"] == pytest.approx(2 / n * r_ab, rel=1e-12)
    assert est.diagnostics["delta_paper_ba"] == pytest.approx(2 / n * r_ba, rel=1e-12)
    assert est.value == pytest.approx((r_ab - 1) / (n / 2 - 1), rel=1e-12)
    assert est.diagnostics["delta_ba"] == pytest.approx((r_ba - 1) / (n / 2 - 1), rel=1e-12)


def test_information_imbalance_layer_matrix_is_asymmetric():
    from repscope.measures.similarity import similarity_matrix

    rng = np.random.default_rng(22)
    A = rng.normal(size=(300, 4))
    m = similarity_matrix({"a": A, "b": A[:, :1].copy(), "c": rng.normal(size=(300, 3))},
                          measure="information_imbalance")
    v = np.asarray(m.values)
    np.testing.assert_allclose(np.diag(v), 0.0)
    assert v[0, 1] < 0.4 < v[1, 0]  # a -> b informative, b -> a not
    assert v[0, 1] == pytest.approx(information_imbalance(A, A[:, :1]).value)
    assert abs(v[0, 2] - 1) < 0.15 and abs(v[2, 1] - 1) < 0.15


def test_information_imbalance_ci_covers_the_null_value():
    """Independent representations: E[Delta*] = 1 exactly (ranks uniform over n - 1 others)."""
    covered, reps = 0, 200
    rng = np.random.default_rng(4)
    for _ in range(reps):
        est = information_imbalance(rng.normal(size=(60, 3)), rng.normal(size=(60, 3)))
        covered += est.ci[0] <= 1.0 <= est.ci[1]
    assert 0.90 <= covered / reps <= 0.99, covered / reps


# --------------------------------------------------------------- out-of-sample LID -----------
def test_reference_lid_matches_in_set_lid_and_rises_off_manifold():
    R, E = _embedded(3000, 4, 12, seed=5)
    Q = np.random.default_rng(6).uniform(size=(400, 4)) @ E  # same distribution, new draws
    inset = local_mle(R, k=20, n_boot=0).value
    out = reference_lid(Q, reference=R, k=20, n_boot=100)
    assert abs(out.value - inset) < 0.05 * inset, (out.value, inset)
    assert abs(out.value - 4.0) < 0.4
    # reference=None is the in-set, leave-one-out estimate
    assert reference_lid(R, k=20, n_boot=0).value == pytest.approx(
        local_mle(R, k=20, duplicates="keep", n_boot=0).value, rel=1e-12)
    # off-manifold queries: the same points pushed off the flat in the orthogonal directions
    rng = np.random.default_rng(7)
    off = Q + 0.15 * rng.normal(size=Q.shape) @ (np.eye(12) - E.T @ E)
    high = reference_lid(off, reference=R, k=20, n_boot=100)
    assert high.ci[0] > out.ci[1] and high.value > 1.5 * out.value, (high.value, out.value)


def test_reference_lid_bootstrap_ci_covers_the_query_population_median():
    """Given the reference, query LIDs are i.i.d., so the bootstrap over queries is valid: its
    95 % CI must cover the population median (from 20,000 queries) in about 95 % of draws."""
    R, E = _embedded(1000, 3, 6, seed=30)
    rng = np.random.default_rng(31)
    big = reference_lid(rng.uniform(size=(20000, 3)) @ E, reference=R, k=10, n_boot=0)
    truth = big.value
    covered, reps = 0, 100
    for r in range(reps):
        Q = rng.uniform(size=(100, 3)) @ E
        est = reference_lid(Q, reference=R, k=10, n_boot=200, seed=r)
        covered += est.ci[0] <= truth <= est.ci[1]
    assert 0.88 <= covered / reps <= 0.99, covered / reps


def test_reference_lid_skips_copies_and_rejects_bad_input():
    R, _ = _embedded(500, 3, 6, seed=8)
    a = reference_lid(R[:50], reference=R, k=10, n_boot=0)
    b = reference_lid(R[:50], reference=np.delete(R, np.arange(50), axis=0), k=10, n_boot=0)
    assert np.isfinite(a.diagnostics["local"]).all()
    assert a.params["reference"]["shape"] == [500, 6]
    assert abs(a.value - b.value) < 0.5
    with pytest.raises(ValueError, match="reference_lid: reference has 5 features but X has 6"):
        reference_lid(R[:5], reference=R[:, :5])


# ---------------------------------------------------------------------- unit matching --------
def test_unit_matching_recovers_a_planted_permutation():
    rng = np.random.default_rng(9)
    n, d = 500, 40
    Z = rng.normal(size=(n, 10))
    X = np.maximum(Z @ rng.normal(size=(10, d)) + rng.normal(size=(n, d)), 0)  # correlated units
    perm = rng.permutation(d)
    Y = X[:, perm] * rng.uniform(0.5, 3.0, size=d) + 0.05 * rng.normal(size=(n, d)) + 1.0
    est = unit_matching(X, Y)
    diag = est.diagnostics
    np.testing.assert_array_equal(perm[diag["pairs_y"]], diag["pairs_x"])  # Y[:, b] = X[:, perm[b]]
    np.testing.assert_array_equal(perm[diag["semi_x"]], np.arange(d))
    assert est.value > 0.95 and diag["close_fraction_x"] == 1.0
    # against unrelated units the matching finds only chance correlations
    low = unit_matching(X, rng.normal(size=(n, d)))
    assert low.value < 0.2 and low.diagnostics["close_fraction_x"] == 0.0


# ------------------------------------------------------------------------ local rank ---------
def test_local_rank_equals_the_dimension_on_unions_of_flats():
    d = 10
    parts, truth = [], []
    for i, m in enumerate((1, 2, 3, 5)):
        F, _ = _embedded(400, m, d, seed=20 + i)
        parts.append(F + 20.0 * i)  # disjoint flats, far apart
        truth.append(np.full(400, m))
    X, truth = np.vstack(parts), np.concatenate(truth)
    est = local_rank(X, k=20, n_boot=0)
    ranks = est.diagnostics["local"]
    for m in (1, 2, 3, 5):
        sel = truth == m
        assert np.median(ranks[sel]) == m
        assert (ranks[sel] == m).mean() >= 0.95, (m, (ranks[sel] == m).mean())
    assert est.value == pytest.approx(truth.mean(), abs=0.1)


def test_local_rank_threshold_rule():
    """k = n - 1: every neighbourhood is the whole set, so the eigenvalues are the global ones."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(30, 3)) * np.array([1.0, 0.3, 0.05])
    ev = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    r2, r3 = ev[1] / ev[0], ev[2] / ev[0]
    for rtol, want in ((0.5 * r3, 3), (0.5 * (r2 + r3), 2), (1.5 * r2, 1)):
        est = local_rank(X, k=29, rtol=rtol, n_boot=0)
        assert (est.diagnostics["local"] == want).all() and est.value == want
        np.testing.assert_allclose(est.diagnostics["eigenvalue_ratios"][0, :3], [1.0, r2, r3],
                                   rtol=1e-9)


# ---------------------------------------------------------------------- manifold test --------
def test_manifold_test_rejects_a_line_crossing_a_plane_not_a_sphere():
    rng = np.random.default_rng(0)
    line = np.zeros((1000, 3))
    line[:, 0] = rng.uniform(-1, 1, 1000)
    plane = np.zeros((2000, 3))
    plane[:, 1:] = rng.uniform(-1, 1, (2000, 2))
    X = np.vstack([line, plane])
    est = manifold_test(X)
    rej = est.diagnostics["rejected"]
    assert est.diagnostics["global_p"] < 1e-3 and rej.sum() >= 5
    assert np.linalg.norm(X[rej], axis=1).max() < 0.25  # the rejections are at the crossing
    S = rng.normal(size=(3000, 3))
    S /= np.linalg.norm(S, axis=1, keepdims=True)
    sphere = manifold_test(S)
    assert sphere.value == 0.0 and sphere.diagnostics["global_p"] > 0.05


def test_manifold_test_p_values_are_calibrated_on_a_flat():
    """Interior points of a uniform square: p-values uniform, ~alpha rejected before adjustment."""
    rng = np.random.default_rng(12)
    X = rng.uniform(size=(4000, 2))
    est = manifold_test(X, k=32)
    inner = np.all((X > 0.15) & (X < 0.85), axis=1)
    p = est.diagnostics["p_value"][inner]
    assert 0.03 <= (p <= 0.05).mean() <= 0.075, (p <= 0.05).mean()
    assert 0.4 <= np.median(p) <= 0.6
    slope = est.diagnostics["slope"][inner]
    assert abs(np.median(slope) - 2.0) < 0.15


def test_benjamini_hochberg_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.005])
    n = p.size
    order = np.argsort(p)
    want = np.empty(n)
    for r, i in enumerate(order):
        want[i] = min(1.0, min(p[order[s]] * n / (s + 1) for s in range(r, n)))
    np.testing.assert_allclose(benjamini_hochberg(p), want)


# ------------------------------------------------------------------------ kNN recall ---------
def test_recall_is_one_for_the_exact_index_and_drops_with_compression():
    X, _ = _embedded(1500, 8, 32, seed=13)
    X = X + 0.01 * np.random.default_rng(13).normal(size=X.shape)
    flat = recall_at_k(X, 10, index="flat")
    assert (flat.recall == 1.0).all()
    assert knn_recall(X, index="flat", n_boot=0).value == 1.0
    pca4 = recall_at_k(X, 10, index="flat", dims=4)  # fewer dims than the data's 8
    assert pca4.recall.mean() < 0.8
    pq = recall_at_k(X, 10, index="pq", pq_bytes=4)
    assert pq.recall.mean() < 0.9 and pq.bytes_per_vector == 4.0
    hnsw = knn_recall(X, index="hnsw", M=4, ef_search=4, n_boot=50)
    d = hnsw.diagnostics
    assert 0.0 < hnsw.value < 1.0 and np.isfinite(d["spearman_recall_id"])
    assert d["local_id"].shape == (1500,) and abs(np.median(d["local_id"]) - 8) < 2


def test_insertion_order_maps_results_back_to_rows():
    X, _ = _embedded(600, 5, 16, seed=16)
    order = np.random.default_rng(16).permutation(600)
    flat = recall_at_k(X, 8, index="flat", order=order)
    exact = knn(X, 8, duplicates="keep")
    np.testing.assert_array_equal(flat.found, exact.indices)
    assert (flat.recall == 1).all()
    hnsw = [knn_recall(X, k=8, M=4, ef_search=4, insertion=o, n_boot=0)
            for o in ("given", "random", "id_ascending", "id_descending")]
    assert all(0 < h.value < 1 for h in hnsw) and len({h.value for h in hnsw}) > 1
    with pytest.raises(ValueError, match="recall_at_k: order must be a permutation"):
        recall_at_k(X, 8, order=order[:-1])


def test_compression_table_rows():
    X, _ = _embedded(800, 6, 24, seed=14)
    rows = compression_table(X, k=10, dims=(None, 12, 3), quantizers=("flat", "sq8"), n_boot=20)
    got = {(r.dims, r.quantizer): r for r in rows}
    assert set(got) == {(24, "flat"), (24, "sq8"), (12, "flat"), (12, "sq8"), (3, "flat"), (3, "sq8")}
    assert got[(24, "flat")].recall == 1.0 and got[(12, "flat")].recall == 1.0  # 6-dim data
    assert got[(3, "flat")].recall < 0.7
    assert got[(24, "flat")].bytes_per_vector == 96.0 and got[(12, "sq8")].bytes_per_vector == 12.0
    with pytest.raises(ValueError, match="'quantizers' parameter of compression_table"):
        compression_table(X, quantizers=("zip",))


@pytest.mark.slow
def test_every_method_runs_in_analyze_and_the_report(tmp_path):
    from analysis_support import make_store
    from repscope.analysis.db import load_results
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    store = make_store(tmp_path / "store")
    names = ("information_imbalance", "unit_matching", "local_rank", "manifold_test",
             "reference_lid", "knn_recall")
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=names,
                                max_rows=150, report=True))
    df = load_results(run.db_path, status=None)
    assert set(df.measure) == set(names) and (df.status == "ok").all()
    assert (df[df.measure == "information_imbalance"].shape[0]) == 16  # 4 x 4, asymmetric
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


def test_registered_by_name():
    for name in ("information_imbalance", "reference_lid", "unit_matching", "local_rank",
                 "manifold_test", "knn_recall"):
        assert registry.get(name).fn.__name__ == name
    assert registry.get("information_imbalance").prepared is not None
    assert knn(np.eye(4), 1).k == 1


def test_compression_table_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from repscope.cli import app

    X, _ = _embedded(400, 5, 20, seed=15)
    src = tmp_path / "emb.npy"
    np.save(src, X)
    out = tmp_path / "table.json"
    res = CliRunner().invoke(app, ["compression-table", str(src), "--dims", "all,2",
                                   "--quantizers", "flat,sq8", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dims"], r["quantizer"]) for r in rows] == [(20, "flat"), (20, "sq8"), (2, "flat"),
                                                           (2, "sq8")]
    assert rows[0]["recall"] == 1.0 and rows[2]["recall"] < 0.8
    bad = CliRunner().invoke(app, ["compression-table", str(src), "--dims", "x"])
    assert bad.exit_code == 2 and "--dims" in bad.output
    bad = CliRunner().invoke(app, ["compression-table", str(src), "--quantizers", "zip"])
    assert bad.exit_code == 2 and "'quantizers' parameter of compression_table" in bad.output
    assert "Traceback" not in bad.output
