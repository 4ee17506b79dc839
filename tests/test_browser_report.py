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
