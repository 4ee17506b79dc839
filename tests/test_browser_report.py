"""End-to-end: the generated report opens in a real headless Chromium, offline, without errors.

Checks every plot rendered (an SVG with the expected number of drawn traces, heat map images),
that the page made no network request and logged no JavaScript error, and saves a screenshot
to ``test-artifacts/report.png``. Skipped when Debian's chromium is absent, unless
``REPSCOPE_REQUIRE_BROWSER=1`` (CI), where a missing browser fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis_support import LAYERS, make_store, register_toys, unregister_toys
from repscope.analysis.plan import AnalyzeConfig
from repscope.pipeline import analyze

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

_PROBE = """() => Array.from(document.querySelectorAll('.rs-plot')).map(d => ({
  id: d.id,
  kind: d.dataset.kind,
  expected: Number(d.dataset.traces),
  data: d.data ? d.data.length : -1,
  svg: d.querySelectorAll('svg.main-svg').length,
  width: d.getBoundingClientRect().width,
  drawn: d.querySelectorAll('g.trace').length,
  lines: Array.from(d.querySelectorAll('g.trace path.js-line, g.trace path.point,'
                                      + ' g.trace path.violin'))
              .filter(p => (p.getAttribute('d') || '').length > 2).length,
  heatmaps: d.querySelectorAll('g.hm image').length,
}))"""


def _browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("REPSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and REPSCOPE_REQUIRE_BROWSER=1 "
                        "(install Debian's chromium: scripts/ensure_browser.sh)")
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    return sync_api


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    register_toys()
    try:
        root = tmp_path_factory.mktemp("browser")
        store = make_store(root / "store")
        run = analyze(AnalyzeConfig(
            store=store.path, out=root / "out", max_rows=200,
            measures=("_toy_pr", "_toy_pr:scale=2", "_toy_local", "_toy_sim", "_toy_fail")))
        return run.report_path
    finally:
        unregister_toys()


def _open(sync_api, path: Path, shot: Path | None = None):
    """Load ``path``; return (plot probes, console errors, network requests)."""
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                if not r.request.url.startswith("file://"):
                    requests.append(r.request.url)
                    return r.abort()
                return r.continue_()

            page.route("**/*", route)
            page.goto(path.resolve().as_uri())
            page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                                   timeout=60_000)
            probes = page.evaluate(_PROBE)
            rendered = page.evaluate("document.body.dataset.plotsRendered")
            if shot is not None:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert int(rendered) == len(probes)
    return probes, errors, requests


def test_report_renders_every_plot_offline_without_errors(report):
    sync_api = _browser()
    probes, errors, requests = _open(sync_api, report, ARTIFACTS / "report.png")
    assert errors == [], errors
    assert requests == [], f"the report fetched {requests}"
    L = len(LAYERS)
    expected = {"plot-family-dimension": ("scatter", 2), "plot-family-local_dimension": ("scatter", 1),
                "plot-sim-0": ("heatmap", 1), "plot-spectra": ("scatter", L),
                "plot-local-0": ("violin", L)}
    assert {p["id"]: (p["kind"], p["expected"]) for p in probes} == expected
    for p in probes:
        assert p["svg"] >= 1 and p["width"] > 200, p
        assert p["data"] == p["expected"], p
        if p["kind"] == "heatmap":
            assert p["heatmaps"] == 1, p
        else:
            assert p["drawn"] == p["expected"] and p["lines"] >= p["expected"], p
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000


# -- what a reader sees: axis titles, buttons, intervals, captions, measures, size, load time --

_SEEN = """() => Array.from(document.querySelectorAll('.rs-plot')).map(d => ({
  id: d.id,
  kind: d.dataset.kind,
  xtitle: (d.querySelector('.g-xtitle') || {textContent: ''}).textContent.trim(),
  ytitle: (d.querySelector('.g-ytitle') || {textContent: ''}).textContent.trim(),
  caption: ((d.closest('figure') || {}).querySelector
            ? (d.closest('figure').querySelector('figcaption') || {textContent: ''}).textContent
            : ''),
  errorbars: d.querySelectorAll('g.errorbar path').length,
  withbars: d.data.filter(t => t.error_y && t.error_y.visible).map(t => t.name),
  drawnbars: Array.from(d.querySelectorAll('g.trace.scatter'))
                  .filter(g => g.querySelector('g.errorbar path')).length,
  legend: Array.from(d.querySelectorAll('g.legendtext, text.legendtext'))
              .map(t => t.textContent),
  buttons: Array.from(d.querySelectorAll('g.updatemenu-button text')).map(t => t.textContent),
}))"""


def _page_facts(sync_api, path: Path, shots: dict[str, str] | None = None):
    """Open ``path``; return (facts about every plot, console errors, load ms, render ms, page
    state after clicking), screenshots of the named sections when asked."""
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.resolve().as_uri())
            page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                                   timeout=60_000)
            load_ms = page.evaluate("performance.getEntriesByType('navigation')[0].duration "
                                    "|| performance.now()")
            render_ms = page.evaluate("Number(document.body.dataset.renderMs)")
            facts = page.evaluate(_SEEN)
            out = {"page": page, "facts": facts, "errors": errors, "load_ms": load_ms,
                   "render_ms": render_ms}
            if shots:
                for sid, name in shots.items():
                    page.locator(f"section#{sid}").screenshot(path=str(ARTIFACTS / name))
            yield out
        finally:
            browser.close()


def test_a_reader_sees_axis_titles_intervals_captions_and_working_buttons(report):
    import json
    import time

    sync_api = _browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gen = _page_facts(sync_api, report, shots={
        "scalars": "report-scalars.png", "similarity": "report-similarity.png",
        "measures": "report-measures.png", "table": "report-table.png"})
    seen = next(gen)
    wall = time.perf_counter() - t0
    page, facts = seen["page"], seen["facts"]
    try:
        assert seen["errors"] == [], seen["errors"]
        for f in facts:  # every plot: non-empty axis titles and a caption
            assert f["xtitle"] and f["ytitle"], f
            assert len(f["caption"]) > 40, f
            assert f["drawnbars"] == len(f["withbars"]), f  # every interval is drawn
        # intervals are drawn for every measure that has one, and only those
        from repscope.report.data import gather

        with_interval = {s.label for s in gather(report.parent / "results.duckdb").series
                         if s.interval != "no interval"}
        drawn = {name.rsplit(" (", 1)[0] for f in facts for name in f["withbars"]}
        assert drawn == with_interval == {"_toy_pr", "_toy_pr (scale=2)"}
        dim = next(f for f in facts if f["id"] == "plot-family-dimension")
        # _toy_pr reports a CI without a level: the legend says what the bars are
        assert dim["errorbars"] > 0 and all("CI" in t for t in dim["legend"]), dim
        assert "(dimensions)" in dim["ytitle"]
        local = next(f for f in facts if f["id"] == "plot-family-local_dimension")
        assert local["legend"] == ["_toy_local (no interval)"], local
        assert local["errorbars"] == 0

        # the measures section lists every measure of the run, generated from the registry
        listed = page.evaluate("Array.from(document.querySelectorAll('#measures .measure-doc'))"
                               ".map(d => d.dataset.measure)")
        assert sorted(listed) == sorted(["_toy_pr", "_toy_pr (scale=2)", "_toy_local", "_toy_sim"])
        text = page.inner_text("#measures")
        assert "Participation ratio of the covariance spectrum" in text and "scale=2" in text

        # the results table: intervals and p-values as columns, sortable, downloadable as CSV
        head = page.evaluate("Array.from(document.querySelectorAll('#results-table th'))"
                             ".map(t => t.textContent)")
        assert {"interval low", "interval high", "interval kind", "p-value"} <= set(head)
        col = head.index("value")
        page.click(f"#results-table th:nth-child({col + 1})")
        values = page.evaluate(f"Array.from(document.querySelectorAll('#results-table tbody tr'))"
                               f".map(r => Number(r.cells[{col}].dataset.v))")
        assert values == sorted(values)
        with page.expect_download() as dl:
            page.click("button[data-csv='results-table'][data-action='download']")
        csv = Path(dl.value.path()).read_text().splitlines()
        assert csv[0].startswith("measure,family,layer,layer_b,value,ci_low,ci_high,interval")
        assert len(csv) == 1 + len(values)
        assert any(",0.01," in row for row in csv)  # the toy similarity's p-value

        # SVG download button next to plotly's PNG one
        page.hover("#plot-family-dimension")
        svg = page.locator("#plot-family-dimension [data-title='Download plot as SVG']")
        assert svg.count() == 1
        with page.expect_download() as dl:
            svg.click()
        assert dl.value.suggested_filename == "plot-family-dimension.svg"
        assert Path(dl.value.path()).read_text().lstrip().startswith("<svg")
    finally:
        next(gen, None)
    metrics = {"report_bytes": report.stat().st_size, "load_ms": seen["load_ms"],
               "render_ms": seen["render_ms"], "wall_s": round(wall, 2)}
    (ARTIFACTS / "report-metrics.json").write_text(json.dumps(metrics, indent=2))
    assert report.stat().st_size < 2_500_000, metrics
    for name in ("report-scalars.png", "report-measures.png", "report-table.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


def test_the_rescale_button_changes_the_plot(tmp_path):
    """A panel whose lines differ ~4x in scale gets 'values' / 'scaled to max |value|' buttons;
    clicking the second rescales every line to a peak of 1 and retitles the y axis."""
    from repscope.report.data import Series
    from repscope.report.page import Page, document
    from repscope.report.plots import family_figure

    sync_api = _browser()
    layers = ["a.0", "a.1", "a.2"]
    series = [Series("big", "dimension", layers, [20.0, 30.0, 25.0], [1.0] * 3, [2.0] * 3,
                     [10] * 3, measure="big", interval="95 % CI (bootstrap)"),
              Series("small", "dimension", layers, [5.0, 7.0, 6.0], [0.5] * 3, [0.5] * 3,
                     [10] * 3, measure="small", interval="± 1 SE")]
    page_ = Page()
    div = page_.plot(family_figure("dimension", series), "plot-x", "caption text " * 5)
    import json

    path = tmp_path / "buttons.html"
    path.write_text(document(title="t", header="", nav="", sections=div, version="0",
                             figures_json=json.dumps(page_.figures)))
    gen = _page_facts(sync_api, path)
    seen = next(gen)
    try:
        page = seen["page"]
        (fact,) = seen["facts"]
        assert fact["buttons"] == ["values", "scaled to max |value|"]
        assert seen["errors"] == []
        state = "() => { const d = document.getElementById('plot-x'); return {y: d.data.map(t => " \
                "Math.max(...t.y)), title: d.layout.yaxis.title.text, shown: " \
                "document.querySelector('#plot-x .g-ytitle').textContent}; }"
        before = page.evaluate(state)
        assert before["y"] == [30.0, 7.0]
        page.locator("#plot-x g.updatemenu-button").nth(1).click()
        page.wait_for_function("document.getElementById('plot-x').data[0].y[1] === 1")
        after = page.evaluate(state)
        assert after["y"] == [1.0, 1.0]
        assert after["title"] == after["shown"] == "value / max |value| of the line"
        page.locator("#plot-x g.updatemenu-button").nth(0).click()
        page.wait_for_function("document.getElementById('plot-x').data[0].y[1] === 30")
        assert page.evaluate(state) == before
        assert seen["errors"] == []
    finally:
        next(gen, None)


def test_a_feature_page_shades_every_token_and_decodes_wordpieces(tmp_path):
    """A feature page in Chromium: every token of every context carries the latent's activation
    (shaded, with the value on hover), WordPiece pieces are joined as the tokenizer decodes
    them, quantile samples lie inside their printed intervals, the histograms have axis titles,
    and nothing logs an error; a screenshot goes to test-artifacts/feature-page.png."""
    import numpy as np
    import pandas as pd
    import torch

    from repscope.dictionaries.inspect import feature_stats
    from repscope.dictionaries.page import feature_page
    from repscope.dictionaries.sae import TopKSAE

    sync_api = _browser()
    torch.manual_seed(0)
    sae = TopKSAE(6, 24, k=3, seed=1).eval()
    words = ["the", "syntax", "##er", "##ror", "was", "raised", "here", "."]
    n_docs = 30
    X = np.random.default_rng(0).standard_normal((n_docs * len(words), 6)).astype(np.float32)
    meta = pd.DataFrame({"doc_id": np.repeat(np.arange(n_docs), len(words)),
                         "position": np.tile(np.arange(len(words)), n_docs),
                         "token": words * n_docs})
    stats = feature_stats(sae, X, top_k=4, n_random=12)

    def codes(rows):
        with torch.no_grad():
            return sae.encode(torch.from_numpy(X[rows])).numpy()

    path = feature_page(tmp_path / "features.html", stats, meta=meta, n_features=3, n_top=4,
                        activations=codes)
    gen = _page_facts(sync_api, path)
    seen = next(gen)
    try:
        page = seen["page"]
        assert seen["errors"] == []
        titles = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map("
                               "d => [d.querySelector('.g-xtitle').textContent, "
                               "d.querySelector('.g-ytitle').textContent])")
        assert len(titles) == 4 and all(x and y for x, y in titles), titles  # density + 3 latents
        tokens = page.evaluate("Array.from(document.querySelectorAll('.ctx .tok')).map(t => ("
                               "{act: t.dataset.act, bg: t.style.background, "
                               "title: t.title}))")
        assert tokens and all(t["act"] != "" and t["title"].startswith("activation")
                              for t in tokens)
        shaded = [t for t in tokens if float(t["act"]) > 0]
        assert shaded and all("rgba(255, 120, 0" in t["bg"] for t in shaded)
        assert len(tokens) > 2 * page.locator(".ctx .tok.hit").count()  # context, not only hits
        text = page.inner_text(".ctx >> nth=0")
        assert "syntaxerror" in text and "here." in text and "##" not in text
        for q in page.evaluate("Array.from(document.querySelectorAll('.quantile')).map(q => ({"
                               "low: Number(q.dataset.low), high: Number(q.dataset.high), "
                               "values: (() => { const out = []; let e = q.nextElementSibling; "
                               "while (e && e.classList.contains('ctx')) { out.push(Number("
                               "e.querySelector('.val').textContent)); e = e.nextElementSibling; }"
                               " return out; })()}))"):
            assert q["values"] and all(q["low"] - 5e-4 <= v <= q["high"] + 5e-4
                                       for v in q["values"]), q
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "feature-page.png"), full_page=True)
    finally:
        next(gen, None)
    assert (ARTIFACTS / "feature-page.png").stat().st_size > 20_000
