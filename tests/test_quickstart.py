"""docs/quickstart.md runs as written: its python blocks, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_quickstart_blocks_run_and_draw_the_figure(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__quickstart__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    png = tmp_path / "quickstart-out" / "participation_ratio.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # what the prose claims: ~1 with every token, several times more without the massive rows
    pr_kept, pr_clean = namespace["pr_kept"], namespace["pr_clean"]
    late = [i for i, x in enumerate(namespace["layers"]) if 12 <= int(x.rsplit(".", 1)[1]) < 29]
    assert all(pr_kept[i] < 1.5 for i in late)
    assert all(pr_clean[i] > 3 * pr_kept[i] for i in late)
    assert 1 <= len(namespace["drop"]) < 5  # the sink that moved: one document's second token
    df = namespace["df"]
    assert df["p_value"].notna().sum() == len(namespace["layers"]) - 1  # adjacent pairs
