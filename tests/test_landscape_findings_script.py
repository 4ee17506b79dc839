"""The options of benchmarks/landscape_findings.py that reduce a documented run (no training)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("landscape_findings",
                                                  ROOT / "benchmarks" / "landscape_findings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_overrides_are_typed_and_checked():
    mod = _script()
    assert mod._sweep_override("d_min=128") == ("d_min", 128)
    assert mod._sweep_override("precision=1") == ("precision", 1.0)
    with pytest.raises(argparse.ArgumentTypeError, match=r"--sweep expects KEY=VALUE.*'seeds=2'"):
        mod._sweep_override("seeds=2")
    with pytest.raises(argparse.ArgumentTypeError, match=r"--sweep d_max expects a int, got 'x'"):
        mod._sweep_override("d_max=x")


def test_configure_marks_a_reduced_run_and_keeps_the_default_otherwise():
    mod = _script()
    full = mod.configure("minilm", None, {})
    assert full["seeds"] == (0, 1) and not full["reduced"]
    assert full["sweep"]["precision"] == 0.5 and full["sweep"]["d_max"] == 8192
    mod = _script()
    spec = mod.configure("minilm", [0], {"d_min": 128, "d_max": 512, "precision": 1.0},
                         ["chatterbot-minilm-random"])
    assert spec["reduced"] and spec["seeds"] == (0,)
    assert spec["tasks"] == ("chatterbot-minilm-random",)
    assert spec["sweep"] == {"precision": 1.0, "growth": 4.0, "d_max": 512, "overshoot": 0,
                             "d_min": 128}


def test_landscape_docs_have_no_placeholder_left():
    text = (ROOT / "docs" / "landscape.md").read_text()
    lines = {line.strip() for line in text.splitlines()}
    assert not lines & {"FINDINGS", "COST", "TODO", "TBD"}
    for png in ("landscape_digits.png", "landscape_fashion.png", "landscape_minilm.png"):
        assert png in text and (ROOT / "docs" / png).is_file()
