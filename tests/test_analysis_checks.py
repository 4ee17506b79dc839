"""The data checks of `repscope analyze`: a planted attention sink warns, lands in the database,
the terminal summary and the report data; a clean store stays quiet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis_support import register_toys, unregister_toys
from repscope.analysis.db import load_findings
from repscope.analysis.plan import AnalyzeConfig
from repscope.pipeline import analyze

LAYERS = ("embeddings", "blocks.0", "blocks.1")


def _store(path: Path, *, sink: bool, docs: int = 12, length: int = 16, d: int = 12):
    """Token rows of ``docs`` documents; with ``sink``, coordinate 7 at position 0 of the
    blocks (not the embeddings) is 3000, as in an LM's attention sink."""
    from repscope.capture import ActivationStore

    rng = np.random.default_rng(0)
    writer = ActivationStore.create(
        path, layers={name: d for name in LAYERS}, shard_rows=64,
        identity={"model": "toy-sink", "sink": sink},
        info={"model": {"id": "toy"}, "data": {"id": "toy"}, "pooling": "none"})
    for c in range(docs):
        acts = {name: rng.normal(size=(length, d)).astype(np.float32) for name in LAYERS}
        if sink:
            for name in LAYERS[1:]:
                acts[name][0, 7] = 3000.0
        meta = {"doc_id": np.full(length, c), "position": np.arange(length),
                "token_id": np.r_[1, rng.integers(5, 50, size=length - 1)]}
        writer.append(acts, meta, chunk=c)
    return writer.finish()


@pytest.fixture(autouse=True)
def _toys():
    register_toys()
    yield
    unregister_toys()


def test_planted_sink_is_found_written_and_suggests_the_option(tmp_path):
    store = _store(tmp_path / "store", sink=True)
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_pr",),
                                max_rows=None, report=False))
    by_layer = {f["layer"]: f for f in run.findings}
    assert set(by_layer) == set(LAYERS)
    assert not by_layer["embeddings"]["warn"]
    for name in LAYERS[1:]:
        f = by_layer[name]
        assert f["warn"] and f["coordinate"] == 7 and f["exclude_positions"] == "0"
        assert f["n_massive_rows"] == 12 and f["max_abs"] == pytest.approx(3000.0)
        assert f["variance_share"] > 0.99
    assert len(run.warnings) == 2 and "--exclude-positions 0" in run.warnings[0]
    # the same rows in the database, with the full detail
    df = load_findings(run.out)
    assert len(df) == 3 and df["warn"].sum() == 2
    assert list(load_findings(run.out, warn_only=True)["layer"]) == list(LAYERS[1:])
    # a rerun replaces, never duplicates
    analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_pr",),
                          max_rows=None, report=False))
    assert len(load_findings(run.out)) == 3


def test_clean_store_has_findings_but_no_warning(tmp_path):
    store = _store(tmp_path / "store", sink=False)
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_pr",),
                                max_rows=100, report=False))
    assert len(run.findings) == 3 and run.warnings == ()
    assert all(f["n"] == 100 for f in run.findings)


def test_terminal_summary_and_results_command_show_the_warning(tmp_path):
    from click.testing import CliRunner

    from repscope.cli import app

    store = _store(tmp_path / "store", sink=True)
    res = CliRunner().invoke(app, ["analyze", "--store", str(store.path), "--out",
                                   str(tmp_path / "out"), "--measures", "_toy_pr",
                                   "--no-report"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: massive activations / outlier coordinates in 2 of 3 layers" in text
    assert "coordinate(s) 7" in text and "rerun with --exclude-positions 0" in text
    res = CliRunner().invoke(app, ["results", str(tmp_path / "out"), "--findings"])
    assert res.exit_code == 0, res.output
    assert "3 data check(s)" in res.output and "massive_activations" in res.output


def test_report_data_and_section_carry_the_findings(tmp_path):
    from repscope.report.data import gather
    from repscope.report.html import write_report

    store = _store(tmp_path / "store", sink=True)
    run = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_pr",),
                                max_rows=None, report=False))
    data = gather(run.db_path)
    assert [f["layer"] for f in data.findings] == list(LAYERS)
    assert data.findings[1]["detail"]["coordinates"][0]["positions"] == {"0": 12}
    page = write_report(run.db_path, tmp_path / "report.html").read_text()
    assert "<section id='checks'><h2>Data checks</h2>" in page
    assert "data-warn='2'" in page and "--exclude-positions 0" in page
