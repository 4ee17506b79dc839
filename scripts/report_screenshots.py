"""Screenshots of a report's main sections and of a feature page, for reviewers who do not run
anything: ``docs/report-screenshots/*.png``.

    .venv/bin/repscope analyze --out repscope-out          # the main job
    .venv/bin/repscope sae train --store repscope-out/store --layer encoder.layer.2 \\
        --out sae --architecture topk --k 16 --steps 300
    .venv/bin/repscope sae inspect sae --store repscope-out/store --report repscope-out
    .venv/bin/python scripts/report_screenshots.py repscope-out

Opens ``OUT/report.html`` (and the first page under ``OUT/features/``) in Debian's chromium
(headless, offline) and writes one PNG per section, 1400 px wide, plus ``metrics.json`` (file
size, load and render time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SECTIONS = ("scalars", "similarity", "spectra", "local", "measures")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a `repscope analyze` output directory")
    ap.add_argument("--dest", type=Path, default=Path("docs/report-screenshots"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.dest.mkdir(parents=True, exist_ok=True)
    report = args.out / "report.html"
    pages = sorted((args.out / "features").glob("*.html"))
    metrics = {"report_bytes": report.stat().st_size}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(report.resolve().as_uri())
        page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                               timeout=120_000)
        metrics["load_ms"] = page.evaluate("performance.getEntriesByType('navigation')[0]"
                                           ".duration")
        metrics["render_ms"] = page.evaluate("Number(document.body.dataset.renderMs)")
        page.add_style_tag(content="nav { position: static !important; }")
        for sid in SECTIONS:
            loc = page.locator(f"section#{sid}")
            if loc.count():
                loc.screenshot(path=str(args.dest / f"report-{sid}.png"))
        if pages:
            page.goto(pages[0].resolve().as_uri())
            page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                                   timeout=120_000)
            page.locator(".card >> nth=0").screenshot(path=str(args.dest / "feature-card.png"))
            page.screenshot(path=str(args.dest / "feature-page-top.png"))
        browser.close()
    for png in args.dest.glob("*.png"):  # 256-colour palette: a third of the bytes
        from PIL import Image

        Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
    (args.dest / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
