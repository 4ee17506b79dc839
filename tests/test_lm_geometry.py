"""Per-prompt token-cloud geometry and ID vs surprisal on planted data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from repscope.analysis.correlate import correlation, grouped_correlation
from repscope.analysis.id_surprisal import id_surprisal, id_surprisal_by_layer
from repscope.analysis.prompt_geometry import cosine_mean, neighbourhood_overlap, prompt_geometry

D = 32


def _planted_docs(dims, n_tokens=60, seed=0, surprisal=lambda d: 0.5 * d, noise=0.05):
    """Documents whose tokens lie on a random ``dims[i]``-dimensional subspace of R^D; each
    token's surprisal is ``surprisal(dim)`` plus noise (the last token of a document has none)."""
    rng = np.random.default_rng(seed)
    X, doc, s = [], [], []
    for i, d in enumerate(dims):
        basis = np.linalg.qr(rng.standard_normal((D, d)))[0]  # (D, d)
        X.append(rng.standard_normal((n_tokens, d)) @ basis.T + 1e-3 * rng.standard_normal((n_tokens, D)))
        doc.append(np.full(n_tokens, i))
        si = surprisal(d) + noise * rng.standard_normal(n_tokens)
        si[-1] = np.nan
        s.append(si)
    return np.concatenate(X).astype(np.float32), np.concatenate(doc), np.concatenate(s)


def test_cosine_mean_and_overlap_against_direct_definitions():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 5)) + 1.0
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = U @ U.T
    assert cosine_mean(X) == pytest.approx((C.sum() - 9) / 72)
    A = np.array([[1, 2], [0, 2], [0, 1]])
    assert neighbourhood_overlap(A, A) == 1.0
    assert neighbourhood_overlap(A, np.array([[2, 0], [2, 1], [3, 4]])) == pytest.approx((1 + 1 + 0) / 6)


def test_prompt_geometry_rows_keyed_by_document_and_planted_relations():
    dims = [2, 3, 4, 5, 6, 7, 8] * 3
    X, doc, s = _planted_docs(dims)
    doc_labels = 100 + doc  # arbitrary document ids
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    layers = {"a": X, "b": (X @ Q).astype(np.float32),  # a rotation: same neighbourhoods
              "c": rng.permutation(X)}  # rows shuffled: neighbourhoods destroyed
    g = prompt_geometry(layers, doc_ids=doc_labels, loss=s, n_boot=300)
    t = g.rows
    assert len(t) == 3 * len(dims) and set(t["doc_id"]) == set(100 + np.arange(len(dims)))
    assert (t.groupby("layer")["doc_id"].apply(lambda v: v.is_unique)).all()
    a = t[t.layer == "a"].set_index("doc_id")
    assert (a["n_tokens"] == 60).all()
    np.testing.assert_allclose(a["mean_loss"], 0.5 * np.array(dims), atol=0.03)
    # the ID of a planted d-dimensional cloud of 60 points is close to d at small d
    assert np.median(np.abs(a["id"].to_numpy() - dims)[np.array(dims) <= 4]) < 0.8
    assert (t[t.layer == "a"]["overlap_next"] == 1.0).all()  # rotation keeps every neighbour
    assert t[t.layer == "b"]["overlap_next"].mean() < 0.3
    assert t[t.layer == "c"]["overlap_next"].isna().all()  # last layer
    rel = g.relation.set_index(["layer", "metric"])
    r = rel.loc[("a", "id")]
    assert r["correlation"] > 0.8 and r["ci_low"] > 0.5 and r["n_docs"] == len(dims)
    np.testing.assert_allclose(rel.loc[("b", "id"), "correlation"], r["correlation"], atol=0.05)


def test_prompt_geometry_short_documents_and_bad_input():
    X, doc, s = _planted_docs([3, 3, 3], n_tokens=30)
    doc[:25] = 7  # document 7 keeps 25 tokens; document 0 keeps 5
    g = prompt_geometry({"a": X}, doc_ids=doc, loss=s, min_tokens=10, n_boot=0)
    short = g.rows.set_index("doc_id").loc[0]
    assert short["n_tokens"] == 5 and np.isnan(short["id"]) and np.isnan(short["cosine_mean"])
    with pytest.raises(ValueError, match="'loss' parameter of prompt_geometry"):
        prompt_geometry({"a": X}, doc_ids=doc, loss=s[:3])
    with pytest.raises(ValueError, match="'estimator' parameter of prompt_geometry"):
        prompt_geometry({"a": X}, doc_ids=doc, estimator="local_mle")
    with pytest.raises(ValueError, match="'doc_ids' parameter of prompt_geometry"):
        prompt_geometry({"a": X})


@pytest.mark.parametrize("sign", [1, -1])
def test_id_surprisal_group_level_recovers_the_planted_sign(sign):
    dims = [2, 3, 4, 5, 6, 7, 8] * 3
    X, doc, s = _planted_docs(dims, surprisal=lambda d: 5 + sign * 0.4 * d, noise=0.3, seed=3)
    r = id_surprisal(X, s, doc_ids=doc, n_boot=400)
    assert np.sign(r.value) == sign and abs(r.value) > 0.8
    assert (r.ci[0] > 0) if sign > 0 else (r.ci[1] < 0)
    assert r.n_groups == len(dims) and np.sign(r.slope) == sign
    assert r.params["uncertainty"] == "bootstrap over documents"


def test_id_surprisal_row_level_local_id_on_a_mixture():
    """One cloud made of well-separated subspaces of dimension 2..8; each document samples one
    of them and each row's surprisal grows with its subspace's dimension."""
    rng = np.random.default_rng(4)
    X, doc, s = [], [], []
    for j, d in enumerate([2, 3, 4, 5, 6, 7, 8]):
        basis = np.linalg.qr(rng.standard_normal((D, d)))[0]
        centre = 40.0 * rng.standard_normal(D)
        for rep in range(4):
            X.append(centre + rng.standard_normal((50, d)) @ basis.T)
            doc.append(np.full(50, 4 * j + rep))
            s.append(0.3 * d + 0.3 * rng.standard_normal(50))
    X, doc, s = np.concatenate(X).astype(np.float32), np.concatenate(doc), np.concatenate(s)
    r = id_surprisal(X, s, doc_ids=doc, level="row", estimator_params={"k": 10}, n_boot=300)
    assert r.value > 0.6 and r.ci[0] > 0.3 and r.n_groups == 28
    assert r.diagnostics["local_id"].shape == (len(X),)
    with pytest.raises(ValueError, match="'estimator' parameter of id_surprisal"):
        id_surprisal(X, s, doc_ids=doc, level="row", estimator="twonn")


def test_id_surprisal_by_layer_table():
    X, doc, s = _planted_docs([2, 4, 6, 8] * 3, seed=5)
    noise = np.random.default_rng(0).standard_normal(X.shape).astype(np.float32)
    t = id_surprisal_by_layer({"planted": X, "noise": noise}, surprisal=s, doc_ids=doc, n_boot=200)
    assert list(t["layer"]) == ["planted", "noise"] and t["checkpoint"].isna().all()
    assert t.loc[0, "correlation"] > 0.8 and abs(t.loc[1, "correlation"]) < t.loc[0, "correlation"]


def test_document_bootstrap_interval_covers_the_population_correlation():
    """Rows of a document share its value: the document bootstrap's 95% interval should hold
    the population correlation about 95% of the time (a row bootstrap would be far too narrow)."""
    rho, sigma2, n_docs, rows = 0.6, 0.25, 40, 8
    truth = rho / (1 + sigma2)  # Pearson over rows: doc-level covariance over total variance
    rng = np.random.default_rng(0)
    hits = 0
    n_rep = 120
    for rep in range(n_rep):
        a = rng.standard_normal(n_docs)
        b = rho * a + np.sqrt(1 - rho**2) * rng.standard_normal(n_docs)
        x = np.repeat(a, rows) + np.sqrt(sigma2) * rng.standard_normal(n_docs * rows)
        y = np.repeat(b, rows) + np.sqrt(sigma2) * rng.standard_normal(n_docs * rows)
        r = grouped_correlation(x, y, np.repeat(np.arange(n_docs), rows), method="pearson", n_boot=200, seed=rep)
        hits += r.ci[0] <= truth <= r.ci[1]
    assert 0.86 <= hits / n_rep <= 1.0
    assert correlation([1, 2, 3, 4], [1, 4, 9, 16], "spearman") == pytest.approx(1.0)
    assert np.isnan(correlation([1, 1, 1], [1, 2, 3]))


def test_attention_subspaces_planted_low_rank_output_projection():
    from repscope.analysis.attention_subspaces import attention_subspaces, pair_attention_layers

    names = ["model.embed_tokens", "model.layers.0", "model.layers.0.self_attn", "model.layers.1",
             "model.layers.1.self_attn", "encoder.layer.0.attention.output.dense"]
    assert pair_attention_layers(names) == {"model.layers.0": "model.layers.0.self_attn",
                                            "model.layers.1": "model.layers.1.self_attn"}
    rng = np.random.default_rng(0)
    n, d = 1500, 32
    resid = rng.standard_normal((n, d))
    W_O = rng.standard_normal((6, d))  # the output projection reads 6 dimensions
    attn = rng.standard_normal((n, 6)) @ W_O
    t = attention_subspaces({"model.layers.0": resid, "model.layers.0.self_attn": attn}, n_boot=20)
    r = t.set_index("stream")
    assert r.loc["attention", "rank99"] == 6 and r.loc["attention", "rank99_fraction"] == pytest.approx(6 / 32)
    assert r.loc["residual", "rank99"] >= 28
    assert r.loc["attention", "effective_rank"] < 6.01 < r.loc["residual", "effective_rank"]
    assert 4.5 < r.loc["attention", "twonn"] < 7.5
    with pytest.raises(ValueError, match="'pairs' parameter of attention_subspaces"):
        attention_subspaces({"a": resid})


def _planted_store(path, surprisal=lambda d: 0.5 * d):
    from repscope.capture import ActivationStore

    dims = [2, 3, 5, 7] * 3
    X, doc, s = _planted_docs(dims, n_tokens=40, seed=7, surprisal=surprisal)
    rng = np.random.default_rng(0)
    attn = (rng.standard_normal((len(X), 4)) @ rng.standard_normal((4, D))).astype(np.float32)
    cols = {"doc_id": "int64", "position": "int32", "token_id": "int32", "next_logprob": "float64",
            "entropy": "float64"}
    layers = {"model.layers.0": D, "model.layers.0.self_attn": D, "model.layers.1": D,
              "model.layers.1.self_attn": D}
    with ActivationStore.create(path, layers=layers, shard_rows=200, meta_columns=cols,
                                vocab=[f"t{i}" for i in range(10)]) as w:
        for d in range(len(dims)):
            r = doc == d
            w.append({"model.layers.0": X[r], "model.layers.0.self_attn": attn[r],
                      "model.layers.1": 2 * X[r], "model.layers.1.self_attn": attn[r]},
                     {"doc_id": doc[r], "position": np.arange(r.sum()), "token_id": np.zeros(r.sum(), int),
                      "next_logprob": -s[r], "entropy": np.ones(r.sum())}, chunk=d)
        return w.finish(), dims


def test_lm_geometry_command_on_a_store_with_predictions(tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from repscope.cli import app

    store, dims = _planted_store(tmp_path / "store")
    out = tmp_path / "lm"
    res = CliRunner().invoke(app, ["lm-geometry", str(store.path), "--out", str(out), "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    for name in ("prompt_geometry.csv", "prompt_relation.csv", "id_surprisal.csv", "attention_subspaces.csv",
                 "prompt_geometry.png", "id_surprisal.png", "attention_subspaces.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    pg = pd.read_csv(out / "prompt_geometry.csv")
    assert set(pg["layer"]) == {"model.layers.0", "model.layers.1"} and len(pg) == 2 * len(dims)
    ids = pd.read_csv(out / "id_surprisal.csv")
    assert (ids["correlation"] > 0.7).all()  # surprisal planted to grow with each prompt's dimension
    att = pd.read_csv(out / "attention_subspaces.csv")
    assert (att[att.stream == "attention"]["rank99"] == 4).all()
    assert json.loads((out / "summary.json").read_text())["attention_pairs"] == {
        "model.layers.0": "model.layers.0.self_attn", "model.layers.1": "model.layers.1.self_attn"}
    # a store without predictions is refused in one line
    from repscope.capture import ActivationStore

    with ActivationStore.create(tmp_path / "plain", layers={"a": 4}, meta_columns={"doc_id": "int64"}) as w:
        w.append({"a": np.zeros((3, 4), np.float32)}, {"doc_id": np.zeros(3, int)}, chunk=0)
        w.finish()
    res = CliRunner().invoke(app, ["lm-geometry", str(tmp_path / "plain"), "--out", str(out)])
    assert res.exit_code != 0 and "holds no next-token log-likelihoods" in res.output


def test_id_surprisal_by_layer_per_checkpoint_uses_each_stores_own_surprisal(tmp_path):
    """A sweep: the same geometry, the surprisal planted to grow with the prompt's dimension at
    one checkpoint and to shrink with it at the other; each checkpoint's sign is recovered."""
    early, _ = _planted_store(tmp_path / "early", surprisal=lambda d: 4.0 - 0.5 * d)
    late, _ = _planted_store(tmp_path / "late")
    t = id_surprisal_by_layer({"early": early, "late": late}, layers=["model.layers.0", "model.layers.1"],
                              n_boot=200)
    assert list(t["checkpoint"]) == ["early", "early", "late", "late"]
    assert list(t["layer"]) == ["model.layers.0", "model.layers.1"] * 2
    assert (t[t.checkpoint == "early"]["ci_high"] < 0).all() and (t[t.checkpoint == "late"]["ci_low"] > 0).all()
    assert (t[t.checkpoint == "early"]["slope"] < 0).all() and (t[t.checkpoint == "late"]["slope"] > 0).all()


def test_grouped_correlation_bootstrap_equals_a_naive_document_resample():
    """The vectorised resample draws the same rows as concatenating each drawn document's rows,
    and the ranks equal scipy's average ranks (ties included)."""
    from scipy.stats import rankdata, spearmanr

    from repscope.analysis.correlate import average_ranks

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 9, 15)
    g = np.repeat(rng.permutation(15), sizes)  # documents not contiguous in label order
    x = rng.integers(0, 6, g.size).astype(float)  # many ties
    y = x + rng.integers(0, 4, g.size)
    np.testing.assert_array_equal(average_ranks(x), rankdata(x))
    r = grouped_correlation(x, y, g, n_boot=50, seed=11)
    labels = np.unique(g)
    draws = np.random.default_rng(11)
    reps = []
    for _ in range(50):
        rows = np.concatenate([np.flatnonzero(g == labels[d]) for d in draws.integers(0, 15, size=15)])
        reps.append(spearmanr(x[rows], y[rows]).statistic)
    assert r.value == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert r.stderr == pytest.approx(np.std(reps, ddof=1), abs=1e-12)
    assert r.ci == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)
