"""What a reader of the report and of the static figures needs: axis titles with units, panels
per scale, intervals with their kind and level, registry-generated explanations, a results
table with intervals and p-values, Type 42 fonts, readable cell text and a terminal table that
fits its width. (The browser checks live in test_browser_report.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from analysis_support import LAYERS, make_store, register_toys, toys  # noqa: F401
from repscope import registry
from repscope.analysis.plan import AnalyzeConfig
from repscope.pipeline import analyze
from repscope.report.cells import interval_kind
from repscope.report.data import Series, gather
from repscope.report.html import render_report
from repscope.report.plots import family_figure, scale_groups


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    register_toys()
    root = tmp_path_factory.mktemp("readable")
    store = make_store(root / "store")
    return analyze(AnalyzeConfig(store=store.path, out=root / "out", max_rows=200, measures=(
        "_toy_pr", "_toy_pr:scale=2", "_toy_local", "_toy_sim")))


def _series(label, values, interval="95 % CI (bootstrap)", measure=None, **kw):
    n = len(values)
    return Series(label, "dimension", [f"l.{i}" for i in range(n)], list(values), [0.1] * n,
                  [0.2] * n, [100] * n, measure=measure or label, interval=interval, **kw)


def test_interval_kind_names_kind_and_level():
    assert interval_kind({"ci_level": 0.9, "uncertainty": "analytic"}, has_ci=True,
                         has_se=True) == "90 % CI (analytic)"
    assert interval_kind({"uncertainty": "none"}, has_ci=True, has_se=False) == \
        "CI, level not recorded"
    assert interval_kind({"uncertainty": "bootstrap"}, has_ci=False, has_se=True) == \
        "± 1 SE (bootstrap)"


def test_measures_of_different_magnitude_or_unit_get_their_own_panels():
    counts = _series("pca", [200.0, 170.0], measure="pca")
    pr = _series("participation_ratio", [80.0, 55.0], measure="participation_ratio")
    knn = [_series(n, v, measure=n) for n, v in (("twonn", [3.5, 6.1]), ("mle", [5.4, 7.7]))]
    groups = scale_groups([counts, pr, *knn])
    assert [[s.label for s in g] for g in groups] == [["pca", "participation_ratio"],
                                                      ["twonn", "mle"]]
    rank = _series("effective_rank", [280.0], measure="effective_rank")
    total = _series("spectrum", [140.0], measure="spectrum")  # same magnitude, other unit
    assert len(scale_groups([rank, total])) == 2
    # one panel whose lines still differ > 3x gets the rescaling buttons; their relayout
    # targets the title object that plotly.js reads
    fig = family_figure("dimension", [counts, pr])
    assert "updatemenus" not in fig["layout"]
    fig = family_figure("dimension", [_series("a", [30.0]), _series("b", [7.0])])
    (menu,) = fig["layout"]["updatemenus"]
    assert [b["label"] for b in menu["buttons"]] == ["values", "scaled to max |value|"]
    assert menu["buttons"][1]["args"][1] == {"yaxis.title.text": "value / max |value| of the line",
                                             "yaxis.autorange": True}
    assert menu["buttons"][1]["args"][0]["y"] == [[1.0], [1.0]]


def test_very_wide_intervals_and_long_tails_are_cut_at_the_axis_edge():
    from repscope.report.plots import local_axis, value_range

    narrow = _series("a", [5.0, 6.0, 7.0])
    assert value_range([narrow])[2] is False
    wide = Series("b", "dimension", ["l.0", "l.1"], [5.0, 6.0], [4.0, 4.0], [90.0, 90.0],
                  [10, 10], measure="b")
    lo, hi, cut = value_range([narrow, wide])
    assert cut and 7.0 < hi < 20 and 1.0 < lo < 5.0  # ends beyond 1.5 x the span are cut
    fig = family_figure("dimension", [narrow, wide])
    assert fig["layout"]["yaxis"]["range"] == [lo, hi]
    rng = np.random.default_rng(0)
    body = rng.normal(10, 2, 2000)
    assert local_axis([body]) is None  # a normal sample has nothing beyond the far-out fence
    tailed = np.concatenate([body, [500.0, 900.0]])
    lo, hi = local_axis([tailed])
    q25, q75 = np.quantile(tailed, [0.25, 0.75])
    fence = q75 + 3 * (q75 - q25)
    assert hi == pytest.approx(fence + 0.05 * (fence - tailed.min()), rel=1e-9)
    assert lo < tailed.min() and hi < 30


def test_every_figure_has_title_objects_units_and_interval_legends(run):
    import json

    text = run.report_path.read_text()
    figs = json.loads(re.search(r'<script type="application/json" id="rs-figures">(.*?)</script>',
                                text, re.S).group(1).replace("<\\/", "</"))
    assert len(figs) == 5
    for f in figs:
        for ax in ("xaxis", "yaxis"):
            title = f["layout"][ax]["title"]
            assert isinstance(title, dict) and title["text"], (f["id"], ax)
    dim = next(f for f in figs if f["id"] == "plot-family-dimension")
    assert dim["layout"]["yaxis"]["title"]["text"] == "value (dimensions)"
    assert all(t["name"].endswith("(CI, level not recorded)") for t in dim["data"])
    assert "CI, level not recorded: [" in dim["data"][0]["hovertemplate"]
    assert text.count("<figcaption class='caption'>") == 5
    # heat maps of a bounded measure share its registered range
    sim = next(f for f in figs if f["id"] == "plot-sim-0")
    assert (sim["data"][0]["zmin"], sim["data"][0]["zmax"]) == (0.0, 1.0)


def test_measures_section_and_results_table_come_from_registry_and_results(run):
    data = gather(run.db_path)
    text = render_report(data)
    section = text[text.index("<section id='measures'>"):text.index("<section id='table'>")]
    for label in ("_toy_pr", "_toy_pr (scale=2)", "_toy_local", "_toy_sim"):
        assert f"data-measure='{label}'" in section
    assert "Linear CKA in feature space" in section and "higher is better" in section
    assert "<code>scale=2</code>" in section and "[0, 1]" in section
    table = text[text.index("<table class='grid sortable' id='results-table'>"):]
    table = table[:table.index("</table>")]
    n_pairs = len(LAYERS) * (len(LAYERS) - 1) // 2 + len(LAYERS)
    assert table.count("<tr>") == 1 + 3 * len(LAYERS) + n_pairs
    pr = next(r for r in data.rows if r.label == "_toy_pr")
    assert f"data-v='{pr.ci_low!r}'" in table and f"data-v='{pr.ci_high!r}'" in table
    assert "data-v='0.01'" in table  # the toy similarity's p-value


def test_recommended_estimate_first_with_its_verdict():
    from repscope.report.page import Page
    from repscope.report.sections import scalar_sections

    verdict = _series("zz_recommended", [6.0, 7.0], notes=[("agree",), ("disagree", "wide")])
    other = _series("aa_other", [5.0, 6.5])
    data = gather.__globals__["ReportData"](
        db_path="x", layers=["l.0", "l.1"], series=[other, verdict], matrices=[], spectra={},
        local={}, failures=[], skipped=[], provenance={}, plan={}, run={}, n_results=4)
    page = Page()
    scalar_sections(page, data)
    fig = page.figures[0]
    assert fig["data"][0]["name"].startswith("zz_recommended")
    body = page.sections[0][2]
    assert "<b>l 1</b>: disagree wide</li>" in body


def test_local_lines_say_which_summary_they_plot():
    from repscope.report.sections import _legend_label

    s = Series("local_mle", "local_dimension", ["a"], [1.0], [None], [None], [1],
               params={"summary": "median"})
    assert _legend_label(s).label == "local_mle (median over points)"
    assert "mean over points" not in registry.FAMILIES["local_dimension"]


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="poppler-utils not installed")
def test_static_pdfs_embed_only_type42_fonts_and_cell_text_is_readable(run, tmp_path):
    from repscope.report.figures import text_color, write_figures

    paths = write_figures(run.db_path, tmp_path, formats=("pdf",))
    for path in paths:
        out = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[2:]
        kinds = {" ".join(line.split()[-6:-5]) for line in out}
        assert out and all("Type 3" not in line for line in out), (path.name, out)
        assert all("TrueType" in line or "Type 1" in line for line in out), (path.name, out)
        assert kinds
    captions = (tmp_path / "captions.md").read_text()
    assert "**similarity_toy_sim**" in captions and "<code>" not in captions
    import matplotlib

    for name in ("viridis", "viridis_r", "magma"):
        cmap = matplotlib.colormaps[name]
        for x in np.linspace(0, 1, 11):
            rgb = np.array(cmap(x)[:3])
            lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
            assert text_color(cmap(x)) == ("black" if lum > 0.5 else "white") or \
                abs(lum - 0.5) < 0.2


def test_terminal_summary_fits_80_columns_and_keeps_every_layer(tmp_path):
    from rich.console import Console

    from repscope.capture import ActivationStore
    from repscope.cli.analyze import _summary_table

    names = ["embeddings"] + [f"model.layers.{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    w = ActivationStore.create(tmp_path / "s", layers={n: 4 for n in names}, shard_rows=100,
                               identity={"model": "t"}, info={"model": {"id": "t"}})
    w.append({n: rng.normal(size=(20, 4)).astype(np.float32) for n in names},
             {"doc_id": np.arange(20), "position": np.zeros(20, dtype=int),
              "token_id": np.zeros(20, dtype=int)}, chunk=0)
    store = w.finish()
    res = analyze(AnalyzeConfig(store=store.path, out=tmp_path / "o", max_rows=None,
                                measures=("_toy_pr", "_toy_pr:scale=2"), report=False))
    console = Console(width=80, record=True, force_terminal=False)
    console.print(_summary_table(res.db_path, res.plan, 80))
    out = console.export_text()
    assert max(len(line) for line in out.splitlines()) <= 80
    heads = re.findall(r"\bL(\d+)\b", out)
    assert sorted({int(h) for h in heads}) == list(range(30)) and re.search(r"\bE\b", out)
    assert "_toy_pr (scale=2)" in out and "layers 1-" in out
