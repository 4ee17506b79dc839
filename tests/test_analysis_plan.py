"""The analysis plan: config loading, measure/layer resolution, and bad configs failing early."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis_support import LAYERS, make_store, register_toys, store, toys, unregister_toys  # noqa: F401 (shared fixtures)
from repscope.analysis.plan import (
    AnalyzeConfig,
    PlanError,
    check_config,
    make_plan,
    parse_measure,
    resolve_layers,
    select_rows,
)
from repscope.config import load_config
from repscope.pipeline import analyze


def _cfg(store, tmp_path, **kw):
    kw.setdefault("measures", ("_toy_pr", "_toy_sim"))
    kw.setdefault("max_rows", 100)
    return AnalyzeConfig(store=store.path, out=tmp_path / "out", **kw)


def test_parse_measure_reads_json_values():
    assert parse_measure("mle") == ("mle", {})
    assert parse_measure("mle:k=20,unbiased=false") == ("mle", {"k": 20, "unbiased": False})
    assert parse_measure('rsa:rdm="cosine",x=abc') == ("rsa", {"rdm": "cosine", "x": "abc"})
    with pytest.raises(PlanError, match=r"must be NAME or NAME:param=value"):
        parse_measure("mle:k")


def test_select_rows_is_seeded_sorted_and_the_same_for_every_call():
    a = select_rows(1000, 100, seed=3)
    assert a.shape == (100,) and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, select_rows(1000, 100, seed=3))
    assert not np.array_equal(a, select_rows(1000, 100, seed=4))
    np.testing.assert_array_equal(select_rows(50, 100, seed=0), np.arange(50))
    np.testing.assert_array_equal(select_rows(50, None, seed=0), np.arange(50))


def test_resolve_layers_globs_keep_store_order_and_unknown_suggests():
    assert resolve_layers([], LAYERS) == list(LAYERS)
    assert resolve_layers(["encoder.layer.*", "embeddings"], LAYERS) == list(LAYERS)
    assert resolve_layers(["encoder.layer.1"], LAYERS) == ["encoder.layer.1"]
    with pytest.raises(PlanError, match=r"Unknown layer 'encoder.layer.9'. Did you mean"):
        resolve_layers(["encoder.layer.9"], LAYERS)


def test_plan_expands_layers_and_pairs_with_stable_keys(store, tmp_path):
    cfg = _cfg(store, tmp_path, measures=("_toy_pr", "_toy_pr:scale=2", "_toy_sim"))
    measures, skipped = check_config(cfg)
    plan = make_plan(cfg, store, store.path, measures, skipped)
    L = len(LAYERS)
    single = [t for t in plan.tasks if t.kind == "layer"]
    matrix = [t for t in plan.tasks if t.kind == "matrix"]
    assert len(single) == L and all(len(t.items) == 2 for t in single)
    assert len(matrix) == 1 and len(matrix[0].items) == L * (L + 1) // 2  # symmetric + diagonal
    keys = [it.key for _, it in plan.items()]
    assert len(set(keys)) == len(keys)
    # the same config gives the same keys; other rows or parameters give other keys
    again = make_plan(cfg, store, store.path, *check_config(cfg))
    assert [it.key for _, it in again.items()] == keys
    other = _cfg(store, tmp_path, measures=("_toy_pr",), seed=1)
    assert not set(keys) & {it.key for _, it in make_plan(other, store, store.path,
                                                           *check_config(other)).items()}
    variants = {(it.measure, it.variant) for _, it in plan.items()}
    assert ("_toy_pr", "scale=2") in variants and ("_toy_pr", "") in variants
    assert plan.rows.n == 100
    d = plan.to_dict()
    assert d["n_results"] == len(keys) and d["source"]["model"] == "toy-model"


def test_adjacent_pairs_and_seed_passed_to_measures(store, tmp_path):
    cfg = _cfg(store, tmp_path, pairs="adjacent", seed=7)
    plan = make_plan(cfg, store, store.path, *check_config(cfg))
    pairs = [(it.layer, it.layer_b) for t in plan.tasks if t.kind == "matrix" for it in t.items]
    assert pairs == list(zip(LAYERS[:-1], LAYERS[1:], strict=True))
    pr = next(m for m in plan.measures if m.name == "_toy_pr")
    assert pr.params == {"scale": 1.0, "seed": 7}


def test_default_panel_and_skipped_measures_are_listed(tmp_path):
    measures, skipped = check_config(AnalyzeConfig(measures=("default",), out=tmp_path))
    from repscope import registry

    panel = {s.name for s in registry.specs() if s.default_panel and not s.needs_labels}
    assert {m.name for m in measures} == panel
    reasons = dict(skipped)
    assert "_toy_fail" in reasons and "not selected" in reasons["_toy_fail"]


def test_yaml_and_toml_configs_load(tmp_path):
    (tmp_path / "plan.yaml").write_text(
        "measures: [_toy_pr, '_toy_pr:scale=2']\nmax_rows: 500\nlayers: ['encoder.layer.*']\n"
        "pairs: adjacent\nout: results\n")
    cfg = load_config(AnalyzeConfig, tmp_path / "plan.yaml")
    assert cfg.measures == ("_toy_pr", "_toy_pr:scale=2") and cfg.max_rows == 500
    assert cfg.layers == ("encoder.layer.*",) and cfg.out == Path("results")
    (tmp_path / "plan.toml").write_text('measures = ["_toy_sim"]\nmax_rows = 300\n')
    assert load_config(AnalyzeConfig, tmp_path / "plan.toml").measures == ("_toy_sim",)
    (tmp_path / "bad.yaml").write_text("max_rowz: 5\n")
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['max_rowz'\] for AnalyzeConfig"):
        load_config(AnalyzeConfig, tmp_path / "bad.yaml")


@pytest.mark.parametrize("kw, match", [
    ({"measures": ("_toy_pX",)}, r"Unknown measure '_toy_pX'. Did you mean \['_toy_pr'"),
    ({"measures": ("_toy_pr:scal=2",)},
     r"Unknown parameter\(s\) \['scal'\] for measure '_toy_pr'; it accepts \['scale', 'seed'\]"),
    ({"measures": ("_toy_pr:scale=-1",)},
     r"Invalid parameter for measure '_toy_pr' \(scale=-1\): The 'scale' parameter of _toy_pr "
     r"must be > 0. Got -1 instead."),
    ({"layers": ("encoder.layer.7",)}, r"Unknown layer 'encoder.layer.7'. Did you mean"),
    ({"labels": "topic"}, r"Unknown labels column 'topic'; the store has \['doc_id'"),
    ({"max_rows": 3}, r"The 'max_rows' option must be an int >= 10 or None. Got 3."),
    ({"workers": 4}, r"The 'workers' option needs executor 'process' or 'ray'"),
    ({"address": "auto"}, r"The 'address' option needs executor 'ray'"),
    ({"task_timeout": 30.0}, r"The 'task_timeout' option needs executor 'process' or 'ray'"),
    ({"task_timeout": -1.0, "executor": "process"},
     r"The 'task_timeout' option must be a number of seconds > 0. Got -1.0."),
    ({"measures": ("_toy_sim",), "pairs": "none"},
     r"Measure '_toy_sim' cannot run: it compares two layers and pairs='none'."),
])
def test_bad_configs_fail_before_any_work(store, tmp_path, kw, match):
    cfg = _cfg(store, tmp_path, **kw)
    with pytest.raises(PlanError, match=match):
        analyze(cfg)
    assert not (tmp_path / "out").exists()  # nothing captured, planned or written


def test_missing_store_fails_before_any_work(tmp_path):
    cfg = AnalyzeConfig(store=tmp_path / "nope", out=tmp_path / "out", measures=("_toy_pr",))
    with pytest.raises(PlanError, match=r"The store '.*nope' does not exist."):
        analyze(cfg)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_config_as_usage_error(store, tmp_path):
    from click.testing import CliRunner

    from repscope.cli import app

    res = CliRunner().invoke(app, ["analyze", "--store", str(store.path), "--out",
                                   str(tmp_path / "o"), "--measures", "no_such_measure"])
    assert res.exit_code == 2, res.output
    assert "Unknown measure 'no_such_measure'" in res.output
    assert not (tmp_path / "o").exists()
