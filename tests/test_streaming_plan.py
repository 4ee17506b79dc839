"""Map + merge of streamable measures over all rows, and the CLI spelling for all rows."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from analysis_support import LAYERS, make_store, register_toys, store, toys, unregister_toys  # noqa: F401 (shared fixtures)
from repscope import registry
from repscope.analysis.db import decode_json_columns, load_results
from repscope.analysis.plan import AnalyzeConfig, PlanError, check_config, make_plan, stream_shards
from repscope.pipeline import analyze

STREAMED = ("effective_rank", "spectrum", "anisotropy", "power_law_alpha")
MEASURES = (*STREAMED, "_toy_pr")


def _cfg(store, out, **kw):
    kw.setdefault("measures", MEASURES)
    kw.setdefault("pairs", "none")
    return AnalyzeConfig(store=store.path, out=out, max_rows=None, report=False, **kw)


def test_stream_shards_are_whole_store_shards(store):
    assert [(s.start, s.rows) for s in store.shards] == [(0, 100), (100, 100), (200, 40)]
    assert stream_shards(store, 100) == [(0, 100), (100, 200), (200, 240)]
    assert stream_shards(store, 150) == [(0, 200), (200, 240)]
    assert stream_shards(store, 10**6) == [(0, 240)]


def test_plan_streams_only_streamable_measures_over_all_rows(store, tmp_path):
    cfg = _cfg(store, tmp_path, stream_rows=100)
    measures, skipped = check_config(cfg)
    plan = make_plan(cfg, store, store.path, measures, skipped)
    streams = [t for t in plan.tasks if t.kind == "stream"]
    assert [t.layers[0] for t in streams] == list(LAYERS)
    for t in streams:
        assert sorted(it.measure for it in t.items) == sorted(STREAMED)
        assert t.shards == ((0, 100), (100, 200), (200, 240))
    layer_tasks = [t for t in plan.tasks if t.kind == "layer"]
    assert {it.measure for t in layer_tasks for it in t.items} == {"_toy_pr"}
    assert plan.to_dict()["n_map_tasks"] == 3 * len(LAYERS)
    # a row sample, or a store that fits in one range, is never streamed
    for c in (replace(cfg, max_rows=200), replace(cfg, stream_rows=240)):
        p = make_plan(c, store, store.path, measures, skipped)
        assert {t.kind for t in p.tasks} == {"layer"}


def _rtol(row) -> float:
    """1e-10, except for effective rank on the exactly rank-3 'embeddings' layer: its five zero
    eigenvalues are rounding noise (~1e-15) that enters through square roots (~3e-8), so any
    two float64 computations of it, streamed or not, agree only to about 1e-8."""
    return 1e-7 if (row.measure, row.layer) == ("effective_rank", "embeddings") else 1e-10


def test_map_merge_equals_batch(store, tmp_path):
    streamed = analyze(_cfg(store, tmp_path / "s", stream_rows=100))
    batch = analyze(_cfg(store, tmp_path / "b"))
    assert streamed.plan.to_dict()["n_map_tasks"] == 12 and batch.plan.to_dict()["n_map_tasks"] == 0
    assert streamed.n_failed == batch.n_failed == 0
    s = load_results(streamed.db_path).set_index("key")
    b = load_results(batch.db_path).set_index("key")
    assert len(s) == len(b) == len(MEASURES) * len(LAYERS)
    assert sorted(s.index) == sorted(b.index)  # the same results, whichever way computed
    for key, row in s.iterrows():
        np.testing.assert_allclose(row.value, b.loc[key, "value"], rtol=_rtol(row), atol=0)
        assert row.n == b.loc[key, "n"] == store.n_rows
        if row.measure in STREAMED:
            assert json.loads(row.extra)["map_shards"] == 3
    # and both equal the measure called on the whole layer
    for layer in LAYERS:
        X = store.read(layer)  # (240, 8)
        for name in STREAMED:
            got = s[(s.measure == name) & (s.layer == layer)].value.iloc[0]
            spec = registry.get(name)
            kw = {"device": "cpu"} if "device" in spec.defaults else {}
            np.testing.assert_allclose(got, spec.fn(X, **kw).value,
                                       rtol=_rtol(s[(s.measure == name) & (s.layer == layer)]
                                                  .iloc[0]))
    spectra = decode_json_columns(s[s.measure == "spectrum"]).diagnostics
    ref = decode_json_columns(b[b.measure == "spectrum"]).diagnostics
    for key in spectra.index:
        np.testing.assert_allclose(spectra[key]["eigenvalues"], ref[key]["eigenvalues"],
                                   rtol=1e-10, atol=1e-12)
    rerun = analyze(_cfg(store, tmp_path / "s", stream_rows=100))
    assert rerun.n_computed == 0 and rerun.n_cached == len(s)


def test_a_failing_map_task_is_recorded_for_every_streamed_item(store, tmp_path, monkeypatch):
    from repscope.analysis import stream

    def broken(shard):
        raise OSError(f"cannot read rows {shard.start}:{shard.stop}")

    monkeypatch.setattr(stream, "map_shard", broken)
    run = analyze(_cfg(store, tmp_path, stream_rows=100, retries=0))
    df = load_results(run.db_path, status=None)
    failed = df[df.status == "error"]
    assert sorted(set(failed.measure)) == sorted(STREAMED)
    assert len(failed) == len(STREAMED) * len(LAYERS)
    assert failed.error.str.contains("cannot read rows 0:100").all()
    assert (df[df.measure == "_toy_pr"].status == "ok").all()


def test_config_errors():
    with pytest.raises(PlanError, match=r"The 'stream_rows' option must be an int >= 1. Got 0."):
        check_config(AnalyzeConfig(stream_rows=0))


def test_cli_max_rows_all(store, tmp_path):
    from repscope.cli.analyze import analyze as analyze_cmd

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(analyze_cmd, ["--store", str(store.path), "--out", str(out),
                                      "--measures", "_toy_pr", "--max-rows", "all",
                                      "--no-report", "--pairs", "none"])
    assert res.exit_code == 0, res.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["config"]["max_rows"] is None and plan["rows"]["n"] == store.n_rows
    df = load_results(out)
    assert (df.n == store.n_rows).all() and len(df) == len(LAYERS)
    for bad in ("0", "many"):
        res = runner.invoke(analyze_cmd, ["--store", str(store.path), "--out", str(out),
                                          "--max-rows", bad])
        assert res.exit_code == 2
        assert "'--max-rows' must be an int >= 10 or 'all' (every row)" in res.output


def test_process_executor_streams_to_the_same_values(store, tmp_path):
    """The map tasks run in spawned workers that open the store themselves; the ordered merge
    makes the values independent of the executor."""
    local = analyze(_cfg(store, tmp_path / "local", stream_rows=100, measures=STREAMED))
    pool = analyze(_cfg(store, tmp_path / "pool", stream_rows=100, measures=STREAMED,
                        executor="process", workers=2))
    a = load_results(local.db_path).set_index("key").sort_index()
    b = load_results(pool.db_path).set_index("key").sort_index()
    assert pool.n_failed == 0 and len(b) == len(STREAMED) * len(LAYERS)
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())


def test_streamable_pair_measures_stream_over_all_rows(store, tmp_path):
    """cka_linear on layer pairs over every row: map over row ranges reading the layers in
    lockstep, one accumulator per pair, ordered merge; equal to the in-memory matrix path."""
    kw = {"measures": ("cka_linear", "cka_linear:precision=mixed"), "pairs": "all"}
    cfg = _cfg(store, tmp_path / "s", stream_rows=100, **kw)
    plan = make_plan(cfg, store, store.path, *check_config(cfg))
    streams = [t for t in plan.tasks if t.kind == "stream"]
    # both variants in ONE stream task (states shared per pair and precision)
    assert len(streams) == 1 and {t.kind for t in plan.tasks} == {"stream"}
    assert streams[0].shards == ((0, 100), (100, 200), (200, 240))
    assert streams[0].label == "cka_linear (10 layer pairs, streamed, 3 shards)"
    # permutation p-values need the rows in memory: the matrix task stays
    perm = replace(cfg, permutations=5)
    assert {t.kind for t in make_plan(perm, store, store.path, *check_config(perm)).tasks} == {"matrix"}

    streamed = analyze(cfg)
    batch = analyze(_cfg(store, tmp_path / "b", **kw))
    assert streamed.n_failed == batch.n_failed == 0
    s = load_results(streamed.db_path).set_index("key")
    b = load_results(batch.db_path).set_index("key")
    assert sorted(s.index) == sorted(b.index) and len(s) > 0
    for key, row in s.iterrows():
        tol = 1e-10 if json.loads(row.params)["precision"] == "float64" else 1e-6
        np.testing.assert_allclose(row.value, b.loc[key, "value"], rtol=0, atol=tol)
        assert json.loads(row.extra)["map_shards"] == 3 and row.n == store.n_rows
    # and the float64 values equal the measure on the whole layers
    from repscope.measures.similarity import cka_linear

    a, c = LAYERS[0], LAYERS[-1]
    got = s[(s.measure == "cka_linear") & (s.layer == a) & (s.layer_b == c)]
    got = got[[json.loads(p)["precision"] == "float64" for p in got.params]].value.iloc[0]
    assert got == pytest.approx(cka_linear(store.read(a), store.read(c)).value, abs=1e-10)


MOMENT_PAIRS = ("cka_linear", "procrustes_angular", "cca_mean", "svcca", "pwcca", "shape_alpha")


def test_moment_pair_measures_share_one_stream_task_and_one_state_per_pair(store, tmp_path):
    """Every moment-based pair measure over all rows: ONE stream task, one block-moments state
    for every layer pair (pwcca's (b, a) reads the (a, b) cross block transposed), the same
    keys, values and diagnostics as the in-memory matrix path."""
    from repscope.analysis.stream import PairStreamShard, init_params, map_pair_shard

    kw = {"measures": MOMENT_PAIRS, "pairs": "all"}
    cfg = _cfg(store, tmp_path / "s", stream_rows=100, **kw)
    plan = make_plan(cfg, store, store.path, *check_config(cfg))
    assert [t.kind for t in plan.tasks] == ["stream"]
    (task,) = plan.tasks
    assert task.label == f"{', '.join(MOMENT_PAIRS)} (16 layer pairs, streamed, 3 shards)"
    items = tuple(dict.fromkeys((it.measure, it.layer, it.layer_b, init_params(it.measure, it.params))
                                for it in task.items))
    states = map_pair_shard(PairStreamShard(str(store.path), LAYERS, items, 0, 100))
    # ONE block state for all 10 pairs (4 x 5 / 2 with the diagonal), not 6 x 10 + 6 states:
    # 4 means and Gram blocks, one cross block per off-diagonal pair (the diagonal reads Grams)
    (blocks,) = states.values()
    assert blocks.names == LAYERS and blocks.n == 100 and len(blocks.pairs) == 6
    assert blocks.n_floats == (4 + 6) * 8 * 8 + 4 * 8  # (L + P) d^2 + L d, not 10 (2 d)^2

    streamed, batch = analyze(cfg), analyze(_cfg(store, tmp_path / "b", **kw))
    assert streamed.n_failed == batch.n_failed == 0
    s = decode_json_columns(load_results(streamed.db_path).set_index("key"))
    b = decode_json_columns(load_results(batch.db_path).set_index("key"))
    assert sorted(s.index) == sorted(b.index) and len(s) == 5 * 10 + 16
    for key, row in s.iterrows():
        ref = b.loc[key]
        assert (row.measure, row.n, row.params) == (ref.measure, ref.n, ref.params)
        # an angle near 0 is arccos of a cosine near 1: a rounding delta of the cosine moves
        # it by sqrt(2 delta) ~ 1.5e-8 (the cosine itself agrees to 1e-10 below)
        atol = 1e-7 if "cosine" in ref.diagnostics and ref.value < 1e-6 else 1e-12
        np.testing.assert_allclose(row.value, ref.value, rtol=1e-10, atol=atol,
                                   err_msg=f"{row.measure} {row.layer} {row.layer_b}")
        assert row.diagnostics.keys() == ref.diagnostics.keys()
        for name in ("correlations", "rank_x", "rank_y", "cosine", "hsic_xy"):
            if name in ref.diagnostics:
                np.testing.assert_allclose(row.diagnostics[name], ref.diagnostics[name],
                                           rtol=1e-9, atol=1e-12, err_msg=name)
        assert row.extra["map_shards"] == 3


def test_process_executor_streams_pairs_bit_identically(store, tmp_path):
    """Map tasks in 2 spawned workers merge in range order: bit-identical to the local run."""
    kw = {"measures": ("cka_linear", "pwcca"), "pairs": "all", "stream_rows": 100}
    local = analyze(_cfg(store, tmp_path / "local", **kw))
    pool = analyze(_cfg(store, tmp_path / "pool", executor="process", workers=2, **kw))
    a = load_results(local.db_path).set_index("key").sort_index()
    b = load_results(pool.db_path).set_index("key").sort_index()
    assert pool.n_failed == 0 and len(b) == 10 + 16
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())
