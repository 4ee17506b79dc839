"""The HTML report, static figures and the report / plot / results commands."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from analysis_support import (
    LAYERS,
    make_store,
    register_toys,
    toys,  # noqa: F401 (shared fixtures)
)
from repscope.analysis.plan import AnalyzeConfig
from repscope.cli import app
from repscope.pipeline import analyze
from repscope.report.data import gather
from repscope.report.figures import write_figures
from repscope.report.html import write_report

MEASURES = ("_toy_pr", "_toy_pr:scale=2", "_toy_local", "_toy_sim", "_toy_fail")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    register_toys()
    root = tmp_path_factory.mktemp("report")
    store = make_store(root / "store")
    return analyze(AnalyzeConfig(store=store.path, out=root / "out", measures=MEASURES,
                                 max_rows=200))


def test_gather_collects_every_kind_of_plot(run):
    data = gather(run.db_path)
    assert data.layers == list(LAYERS)
    labels = {s.label for s in data.series}
    assert labels == {"_toy_pr", "_toy_pr (scale=2)", "_toy_local"}
    pr = next(s for s in data.series if s.label == "_toy_pr")
    assert all(v is not None for v in pr.values)
    np.testing.assert_allclose(pr.err_high, [0.1 * v for v in pr.values], rtol=1e-9)
    (m,) = data.matrices
    np.testing.assert_allclose(np.diag(m.values), 1.0)
    np.testing.assert_allclose(m.values, m.values.T)  # symmetric measure mirrored
    assert "p_value = 0.01" in m.hover[0][1] and "n = 200" in m.hover[0][1]
    assert set(data.spectra["_toy_pr"]) == set(LAYERS)
    assert data.local["_toy_local"][LAYERS[0]].shape == (200,)
    assert len(data.failures) == len(LAYERS)
    assert data.provenance["source"]["model"] == "toy-model"


def test_html_is_self_contained_with_plots_and_empty_states(run):
    text = run.report_path.read_text()
    assert not re.search(r"<script[^>]+src=", text) and "<link" not in text  # nothing fetched
    plots = dict(re.findall(r'id="(plot-[\w-]+)" data-traces="(\d+)"', text))
    assert plots == {"plot-family-dimension": "2", "plot-family-local_dimension": "1",
                     "plot-sim-0": "1", "plot-spectra": str(len(LAYERS)),
                     "plot-local-0": str(len(LAYERS))}
    for family in ("Spread and isotropy", "Label-aware geometry", "Outlier dimensions"):
        i = text.index(f"<h3>{family}")
        assert "Not run." in text[i:i + 400]
    assert "toy failure on purpose" in text and "toy-model" in text and "ab" * 8 in text
    assert "Resolved plan (plan.json)" in text


def test_report_with_no_results_shows_empty_states(tmp_path):
    store = make_store(tmp_path / "store", n_chunks=1)
    res = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "out", measures=("_toy_fail",),
                                max_rows=None))
    text = res.report_path.read_text()
    assert 'class="rs-plot"' not in text
    for message in ("No layer x layer similarity was computed.",
                    "No eigenvalue spectra in the results.",
                    "No per-point (local) estimates in the results.", "No scalar results."):
        assert message in text


def test_static_figures(run, tmp_path):
    paths = write_figures(run.db_path, tmp_path / "fig", formats=("png", "pdf"))
    names = {p.name for p in paths}
    assert names == {f"{stem}.{ext}" for ext in ("png", "pdf") for stem in (
        "family_dimension", "family_local_dimension", "similarity_toy_sim", "spectra",
        "local_toy_local")}
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"Figure formats must be a non-empty subset"):
        write_figures(run.db_path, tmp_path / "fig", formats=("gif",))


def test_report_plot_results_commands(run, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(run.out), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js inlined
    res = runner.invoke(app, ["plot", str(run.db_path), "--out-dir", str(tmp_path / "f"),
                              "--format", "svg"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "f" / "spectra.svg").is_file()
    res = runner.invoke(app, ["results", str(run.out), "--measure", "_toy_pr"])
    assert res.exit_code == 0 and "scale=2" in res.output, res.output
    res = runner.invoke(app, ["results", str(run.out), "--status", "error"])
    assert f"{len(LAYERS)} result(s)" in res.output and "purpose" in res.output  # (wrapped)
    res = runner.invoke(app, ["results", str(run.out), "--export", str(tmp_path / "x.csv")])
    assert res.exit_code == 0 and (tmp_path / "x.csv").is_file()
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code != 0 and "No results database" in res.output


def test_report_of_an_older_run_and_unknown_run(run, tmp_path):
    out = write_report(run.db_path, tmp_path / "old.html", run_id=run.run_id)
    assert out.is_file()
    with pytest.raises(ValueError, match=r"Unknown run id 'nope'"):
        write_report(run.db_path, tmp_path / "x.html", run_id="nope")
