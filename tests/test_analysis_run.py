"""End-to-end analysis runs on a synthetic store: values, failures, reruns and kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis_support import (  # noqa: F401 (shared fixtures)
    LAYERS,
    make_store,
    participation_ratio,
    register_toys,
    store,
    toys,
    unregister_toys,
)
from repscope.analysis.db import load_results, load_runs
from repscope.analysis.plan import AnalyzeConfig, select_rows
from repscope.pipeline import analyze

MEASURES = ("_toy_pr", "_toy_local", "_toy_sim", "_toy_fail")


@pytest.fixture(scope="module")
def first_run(store, tmp_path_factory):
    register_toys()
    out = tmp_path_factory.mktemp("run-out")
    cfg = AnalyzeConfig(store=store.path, out=out, measures=MEASURES, max_rows=150, seed=3,
                        report=False)
    return cfg, analyze(cfg)


def test_results_match_closed_forms_on_the_same_rows(store, first_run):
    cfg, run = first_run
    df = load_results(run.db_path)
    rows = select_rows(store.n_rows, 150, 3)
    for layer in LAYERS:
        X = store.read(layer, rows=rows)
        got = df[(df.measure == "_toy_pr") & (df.layer == layer)]
        assert len(got) == 1
        np.testing.assert_allclose(got.value.iloc[0], participation_ratio(X), rtol=1e-10)
        assert got.n.iloc[0] == 150 and got.seed.iloc[0] == 3
        assert got.ci_low.iloc[0] < got.value.iloc[0] < got.ci_high.iloc[0]
    sim = df[df.measure == "_toy_sim"]
    L = len(LAYERS)
    assert len(sim) == L * (L + 1) // 2
    diag = sim[sim.layer == sim.layer_b]
    np.testing.assert_allclose(diag.value, 1.0, rtol=1e-10)
    row = df[(df.measure == "_toy_pr") & (df.layer == LAYERS[0])].iloc[0]
    assert row.model == "toy-model" and row.model_hash == "ab" * 8 and row.data == "toy-data"
    assert json.loads(row.params) == {"scale": 1.0, "seed": 3}
    assert row.repscope_version and row.run_id == run.run_id and row.status == "ok"


def test_failures_are_recorded_and_do_not_stop_the_run(first_run):
    _, run = first_run
    errors = load_results(run.db_path, status="error")
    assert len(errors) == len(LAYERS) and set(errors.measure) == {"_toy_fail"}
    assert errors.error.str.contains("RuntimeError: toy failure on purpose").all()
    assert run.n_failed == len(LAYERS) and run.n_computed == run.n_results - len(LAYERS)
    runs = load_runs(run.db_path)
    assert runs.status.iloc[-1] == "done" and runs.n_failed.iloc[-1] == len(LAYERS)
    assert (run.out / "plan.json").is_file() and run.report_path is None


def test_rerun_skips_present_results_and_adds_only_new_ones(store, first_run):
    cfg, run = first_run
    before = load_results(run.db_path, status=None)
    again = analyze(AnalyzeConfig(**{**cfg.__dict__, "report": False}))
    assert again.n_cached == run.n_computed and again.n_computed == 0
    assert again.n_failed == len(LAYERS)  # failures are retried, and fail again
    after = load_results(run.db_path, status=None)
    assert len(after) == len(before)
    ok_before = before[before.status == "ok"].set_index("key")
    ok_after = after[after.status == "ok"].set_index("key")
    assert (ok_after.run_id == ok_before.run_id).all()  # untouched
    more = analyze(AnalyzeConfig(**{**cfg.__dict__, "report": False,
                                    "measures": MEASURES + ("_toy_pr:scale=2",)}))
    assert more.n_computed == len(LAYERS)
    df = load_results(run.db_path, measure="_toy_pr")
    a = df[df.variant == ""].set_index("layer").value
    b = df[df.variant == "scale=2"].set_index("layer").value
    np.testing.assert_allclose(b, 2 * a, rtol=1e-12)


_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from analysis_support import register_toys
register_toys()
from pathlib import Path
from repscope.analysis.plan import AnalyzeConfig
from repscope.pipeline import analyze
analyze(AnalyzeConfig(store=Path({store!r}), out=Path({out!r}), max_rows=120, report=False,
                      measures=("_toy_slow", "_toy_pr", "_toy_sim")))
"""


def _count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return len(load_results(db, status=None))
    except Exception:  # the table may not exist yet
        return 0


def test_killed_run_resumes_without_duplicates_or_losses(store, tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    cfg = dict(store=store.path, max_rows=120, report=False,
               measures=("_toy_slow", "_toy_pr", "_toy_sim"))
    ref = analyze(AnalyzeConfig(out=ref_out, **cfg))
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent), store=str(store.path),
                                     out=str(out)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "results.duckdb"
    deadline = time.monotonic() + 120
    try:
        while _count_rows(db) == 0:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()!r}")
            assert time.monotonic() < deadline, "no result appeared within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    partial = _count_rows(db)
    assert 0 < partial < ref.n_results, "the kill did not land mid-run"
    resumed = analyze(AnalyzeConfig(out=out, **cfg))
    assert resumed.n_cached == partial and resumed.n_computed == ref.n_results - partial
    got = load_results(db, status=None)
    want = load_results(ref.db_path, status=None)
    assert len(got) == got.key.nunique() == ref.n_results
    assert sorted(got.key) == sorted(want.key)
    merged = got.set_index("key").value.sort_index()
    np.testing.assert_allclose(merged, want.set_index("key").value.sort_index(), rtol=1e-12)
    runs = load_runs(db)
    assert list(runs.status) == ["running", "done"]  # the killed run never finished


def test_permutation_p_values_for_layer_pairs(store, tmp_path):
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path, measures=("_toy_sim",),
                                max_rows=100, permutations=19, report=False))
    df = load_results(run.db_path)
    extra = {(r.layer, r.layer_b): json.loads(r.extra) for r in df.itertuples()}
    for (a, b), e in extra.items():
        if a == b:
            assert "p_value" not in e
        else:  # every toy layer shares the same signal: no shuffle comes close
            assert e["p_value"] == pytest.approx(1 / 20) and e["n_perm"] == 19
            assert e["calibrated"] > 0.5
    from repscope.report.data import gather

    (m,) = gather(run.db_path).matrices
    assert "p_value = 0.05" in m.hover[0][1]


def test_label_aware_measures_get_the_labels_of_the_selected_rows(store, tmp_path):
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path, measures=("_toy_classes",),
                                labels="doc_id", max_rows=30, seed=1, report=False))
    rows = select_rows(store.n_rows, 30, 1)
    want = store.metadata(rows=rows)["doc_id"].nunique()
    df = load_results(run.db_path)
    assert len(df) == len(LAYERS) and (df.value == want).all()
    from repscope.analysis.plan import PlanError

    with pytest.raises(PlanError, match=r"Measure '_toy_classes' cannot run: it needs class "
                                        r"labels; pass --labels COLUMN"):
        analyze(AnalyzeConfig(store=store.path, out=tmp_path / "x", measures=("_toy_classes",)))


@pytest.mark.slow
def test_main_job_command_on_the_bundled_model(tmp_path):
    """`repscope analyze` end to end on MiniLM + pydoc, kept small: capture, measures, report."""
    from click.testing import CliRunner

    from repscope.cli import app

    args = ["analyze", "--out", str(tmp_path), "--max-docs", "2", "--max-length", "32",
            "--max-rows", "40", "--layers", "embeddings", "--layers", "encoder.layer.5",
            "--measures", "_toy_pr", "--measures", "_toy_sim"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("results.duckdb", "report.html", "plan.json"):
        assert str(tmp_path / name) in res.output.replace("\n", "")
    df = load_results(tmp_path)
    assert len(df) == 2 + 3 and set(df.layer) == {"embeddings", "encoder.layer.5"}
    assert df.model.iloc[0].endswith("all-MiniLM-L6-v2") and df.data.iloc[0] == "pydoc"
    assert (df.n == 40).all()
    again = CliRunner().invoke(app, args)
    assert "0 results computed, 5 already present" in again.output
