"""The landscape page opens in a real headless Chromium, offline, every plot drawn, no error.

Skipped when Debian's chromium is absent, unless ``REPSCOPE_REQUIRE_BROWSER=1`` (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from repscope.landscape.report import write_landscape_report
from repscope.landscape.results import PointResult, summarize

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _result(task: str, shift: float):
    pts = []
    for s in (0, 1, 2):
        pts += [PointResult("init", None, s, 0.1, 2.3, 2.3, 0, 0.1, 0),
                PointResult("full", None, s, 0.95 - 0.01 * s, 0.2, 0.1, 10, 1.0, 100)]
        for d in (4, 8, 16, 32, 64, 128, 256):
            v = 0.95 / (1 + np.exp(-(np.log2(d) - shift))) + 0.01 * s
            pts.append(PointResult("subspace", d, s, float(v), 1.0, 1.0, 10, 0.5, d))
    return summarize(task, pts, (0, 1, 2), (0.9,), n_params=5000, projection="fastfood",
                     said=False, n_scales=0, metric="accuracy", higher_is_better=True,
                     tolerance=0.0, params={"metric_label": "accuracy on the test split "
                                            "(fraction correct)"})


def test_landscape_page_renders_offline(tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("REPSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and REPSCOPE_REQUIRE_BROWSER=1")
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path = write_landscape_report([_result("mlp", 5.0), _result("cnn", 4.0)],
                                       tmp_path / "landscape.html")
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
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
            page.goto(page_path.resolve().as_uri())
            page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                                   timeout=60_000)
            rendered = int(page.evaluate("document.body.dataset.plotsRendered"))
            probes = page.evaluate("""() => Array.from(document.querySelectorAll('.rs-plot'))
                .map(d => ({expected: Number(d.dataset.traces), data: d.data.length,
                            drawn: d.querySelectorAll('g.trace').length,
                            xtitle: (d.querySelector('.xtitle') || {}).textContent}))""")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "landscape.png"), full_page=True)
        finally:
            browser.close()
    assert errors == [] and requests == []
    assert rendered == len(probes) == 3  # two sweeps and the comparison
    for probe in probes:
        assert probe["data"] == probe["expected"] and probe["drawn"] == probe["expected"]
        assert probe["xtitle"].startswith("subspace dimension d")
