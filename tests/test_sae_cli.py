"""`repscope sae train` and `repscope sae inspect` on a small token-level store."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import app


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    from repscope.capture import ActivationStore

    path = tmp_path_factory.mktemp("sae_cli") / "store"
    rng = np.random.default_rng(0)
    vocab = [f"tok{i}" for i in range(40)]
    with ActivationStore.create(path, layers={"encoder.layer.2": 8}, shard_rows=100, vocab=vocab) as w:
        for doc in range(6):
            ids = rng.integers(0, 40, 50)
            X = rng.standard_normal((50, 8)).astype(np.float32)
            X[ids == 7, 0] += 6.0  # token 'tok7' lights up one direction
            w.append({"encoder.layer.2": X},
                     {"doc_id": np.full(50, doc), "position": np.arange(50), "token_id": ids}, chunk=doc)
        w.finish()
    return path


def test_train_then_inspect(store_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sae"
    res = runner.invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", "encoder.layer.2",
                              "--out", str(out), "--d-sae", "16", "--k", "2", "--batch-size", "50",
                              "--steps", "30", "--lr", "0.01", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["hook_name"] == "encoder.layer.2" and cfg["d_sae"] == 16 and cfg["k"] == 2
    assert json.loads((out / "eval.json").read_text())["measure"] == "sae_evaluation"
    res = runner.invoke(app, ["sae", "inspect", str(out), "--store", str(store_dir), "--features", "4"])
    assert res.exit_code == 0, res.output
    page = (out / "features.html").read_text()
    assert "Plotly.newPlot" in page and "https://cdn" not in page.split("<body>")[1]
    assert page.count('class="card"') == 4
    assert "tok" in page and 'class="tok hit"' in page


def test_cli_errors(store_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", "nope",
                              "--out", str(tmp_path / "x"), "--no-progress"])
    assert res.exit_code != 0 and "Layer 'nope' is not in the store" in res.output
    res = runner.invoke(app, ["sae", "inspect", str(tmp_path / "missing"), "--store", str(store_dir)])
    assert res.exit_code != 0 and "is not a saved SAE" in res.output


class _Links(HTMLParser):
    """Collect ``href`` of <a> tags by class / id."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append(a)
        if tag == "section":
            self.sections.append(a.get("id", ""))


def _links(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


@pytest.fixture(scope="module")
def linked(store_dir, tmp_path_factory):
    """An analyze output directory OUT and an SAE inspected with `--report OUT`."""
    from analysis_support import register_toys, unregister_toys
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.pipeline import analyze

    root = tmp_path_factory.mktemp("linked")
    register_toys()
    try:
        run = analyze(AnalyzeConfig(store=store_dir, out=root / "out", measures=("_toy_pr",),
                                    max_rows=200))
    finally:
        unregister_toys()
    assert "Sparse features" not in run.report_path.read_text()  # no pages yet: no section
    runner = CliRunner()
    sae_dir = root / "sae"
    res = runner.invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", "encoder.layer.2",
                              "--out", str(sae_dir), "--d-sae", "16", "--k", "2", "--batch-size", "50",
                              "--steps", "10", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sae", "inspect", str(sae_dir), "--store", str(store_dir),
                              "--features", "3", "--report", str(root / "out")])
    assert res.exit_code == 0, res.output
    return root / "out", sae_dir


def test_inspect_links_feature_page_into_analyze_report(linked, store_dir, tmp_path):
    """`sae inspect --report OUT` writes the page under OUT, regenerates OUT/report.html with a
    'Sparse features' section linking to it, and the page links back: both links resolve."""
    out, sae_dir = linked
    report = _links(out / "report.html")
    assert "features" in report.sections
    (link,) = [a for a in report.links if a.get("class") == "feature-page"]
    page = (out / link["href"]).resolve()
    assert page.is_file() and page.parent == (out / "features").resolve()
    text = (out / "report.html").read_text()
    assert "encoder.layer.2" in text and ">topk<" in text and ">16<" in text  # layer, arch, d_sae
    side = json.loads(page.with_suffix(".json").read_text())
    assert side["d_sae"] == 16 and 0 <= side["fvu"] and side["l0_mean"] <= 2
    (back,) = [a for a in _links(page).links if a.get("id") == "report-link"]
    assert (page.parent / back["href"]).resolve() == (out / "report.html").resolve()
    # `repscope report` (the existing code path) keeps the link; --out inside OUT links by itself
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and "feature-page" in (out / "report.html").read_text()
    res = runner.invoke(app, ["sae", "inspect", str(sae_dir), "--store", str(store_dir), "--features",
                              "2", "--out", str(out / "more" / "p.html")])
    assert res.exit_code == 0, res.output
    hrefs = {a["href"] for a in _links(out / "report.html").links if a.get("class") == "feature-page"}
    assert hrefs == {link["href"], "more/p.html"}
    res = runner.invoke(app, ["sae", "inspect", str(sae_dir), "--store", str(store_dir),
                              "--report", str(tmp_path)])
    assert res.exit_code != 0 and "expected a `repscope analyze` output directory" in res.output


@pytest.mark.browser
def test_feature_page_link_opens_in_browser(linked):
    """In headless Chromium, offline: the report's link opens the feature page (its density plot
    draws) and the page's back link returns to the report. Skipped without chromium."""
    from test_browser_report import ARGS, CHROMIUM, _browser

    sync_api = _browser()
    out, _ = linked
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):  # type: ignore[no-untyped-def]
                if not r.request.url.startswith("file://"):
                    requests.append(r.request.url)
                    return r.abort()
                return r.continue_()

            page.route("**/*", route)
            page.goto((out / "report.html").resolve().as_uri())
            page.click("a.feature-page")
            page.wait_for_selector("#density svg.main-svg", timeout=60_000)
            assert "SAE features of encoder.layer.2" in page.title()
            assert page.locator("div.card").count() >= 1
            page.click("#report-link")
            page.wait_for_selector("section#features", timeout=60_000)
            assert page.url == (out / "report.html").resolve().as_uri()
        finally:
            browser.close()
    assert errors == [] and requests == [], (errors, requests)


def test_find_feature_pages_reads_only_feature_page_sidecars(tmp_path):
    from repscope.feature_pages import FEATURE_PAGE_KIND, find_feature_pages

    def page(rel: str, kind: str = FEATURE_PAGE_KIND, html_too: bool = True, **meta):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if html_too:
            p.write_text("<html></html>")
        p.with_suffix(".json").write_text(json.dumps({"kind": kind, "title": rel, **meta}))

    page("b/f.html", layer="l2")
    page("a/x/y/f.html", layer="l1")  # depth 3: found
    page("a/x/y/z/f.html", layer="l0")  # depth 4: too deep
    page("c/f.html", kind="other")  # another JSON file
    page("d/f.html", html_too=False)  # sidecar without page
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "bad.json").write_text("{not json")
    (tmp_path / "e" / "bad.html").write_text("")
    found = find_feature_pages(tmp_path)
    assert [(p.href, p.summary["layer"]) for p in found] == [("a/x/y/f.html", "l1"), ("b/f.html", "l2")]
    assert find_feature_pages(tmp_path / "missing") == []
