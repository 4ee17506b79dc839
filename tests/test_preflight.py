"""Preflight: estimates measured on the plan's rows, --dry-run computes nothing, the running
refinement, and impossible SAE settings refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_support import register_toys, store, unregister_toys  # noqa: F401
from repscope.analysis.plan import AnalyzeConfig
from repscope.analysis.preflight import Refiner, _exponent, estimate
from repscope.pipeline import analyze


@pytest.fixture
def _toys():
    register_toys()
    yield
    unregister_toys()


def test_growth_exponent_is_recovered_and_clamped():
    assert _exponent(1.0, 4.0, 100, 200) == pytest.approx(2.0)
    assert _exponent(1.0, 2.0, 100, 200) == pytest.approx(1.0)
    assert _exponent(1.0, 0.5, 100, 200) == 1.0  # noise: never below linear
    assert _exponent(1.0, 100.0, 100, 200) == 3.0


def test_refiner_rescales_the_remainder_by_measured_time():
    r = Refiner(planned=100.0, n_total=10)
    assert r.update(5, 100.0) == pytest.approx(100.0)  # twice slower than planned: 50 -> 100
    assert r.update(5, 10.0) == 0.0


def test_estimate_counts_results_and_permutation_draws(store, tmp_path, _toys):  # noqa: F811
    from repscope.analysis.plan import check_config, make_plan

    cfg = AnalyzeConfig(store=store.path, out=tmp_path, measures=("_toy_pr", "_toy_sim"),
                        max_rows=200, report=False)
    measures, skipped = check_config(cfg)
    plan = make_plan(cfg, store, str(store.path), measures, skipped)
    base = estimate(plan, store, plan.tasks)
    assert set(base.per_measure) == {"_toy_pr", "_toy_sim"}
    assert base.seconds > 0 and base.probe_rows == 200
    assert base.peak_bytes >= 4 * 200 * 8 * len(plan.layers)  # a matrix task holds every layer
    perm = estimate(plan, store, plan.tasks, permutations=99)
    # 99 draws + the observed value: ~100x the pair cost (timings are noisy: a wide band)
    ratio = perm.per_measure["_toy_sim"] / base.per_measure["_toy_sim"]
    assert 15 < ratio < 700
    assert "estimate:" in base.lines()[0] and "peak memory" in base.lines()[0]


def test_dry_run_prints_the_estimate_and_computes_nothing(store, tmp_path, _toys):  # noqa: F811
    from click.testing import CliRunner

    from repscope.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["analyze", "--store", str(store.path), "--out", str(out),
                                   "--measures", "_toy_pr", "--permutations", "9", "--dry-run"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "estimate:" in text and "peak memory" in text and "would be computed" in text
    assert not (out / "results.duckdb").exists() and (out / "plan.json").exists()
    run = analyze(AnalyzeConfig(store=store.path, out=out, measures=("_toy_pr",), report=False))
    assert run.n_computed == len(run.plan.layers)


def test_dry_run_without_a_store_is_one_line(tmp_path):
    from click.testing import CliRunner

    from repscope.cli import app

    res = CliRunner().invoke(app, ["analyze", "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1
    assert "The 'dry_run' option needs a store to time the measures on" in res.output


def test_sae_train_refuses_impossible_settings_in_one_line(store, tmp_path):  # noqa: F811
    from click.testing import CliRunner

    from repscope.cli import app

    base = ["sae", "train", "--store", str(store.path), "--layer", "encoder.layer.1",
            "--out", str(tmp_path / "sae")]
    res = CliRunner().invoke(app, [*base, "--batch-size", "1024"])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "The 'batch_size' parameter of train_sae must be an int in [1, training rows=" in \
        res.output and "Got 1024 instead." in res.output
    res = CliRunner().invoke(app, [*base, "--d-sae", "4096"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "4096 latents" in res.output and "training rows" in res.output
    res = CliRunner().invoke(app, [*base, "--d-sae", "16", "--k", "4", "--steps", "20",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "estimate:" in text and "peak memory" in text
    assert not (tmp_path / "sae" / "sae.safetensors").exists()
    assert np.isfinite(0.0)
