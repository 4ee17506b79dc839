"""``repscope replicate``: the claim framework (verdicts, JSON round trip, pages, CLI) on a
synthetic claim, and the quick versions of the fast claims with their asserted verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import app
from repscope.replicate import (
    Check,
    Claim,
    ClaimResult,
    Line,
    Outcome,
    Panel,
    Row,
    all_claims,
    get_claim,
    read_result,
    run_claim,
    write_index,
    write_page,
)


def _toy_run(p):
    x = np.arange(1, 5, dtype=float)
    return Outcome(
        checks=(Check("slope is positive", p["slope"] > 0, f"slope {p['slope']}"),
                Check("always true", True, "-")),
        rows=(Row("slope", f"{p['slope']}", "positive"),),
        panels=(Panel("line", "x", "y", (Line("y", tuple(x), tuple(p["slope"] * x)),)),),
        analysis="toy", details={"arr": np.ones(3)})


TOY = Claim(name="toy", title="A toy claim", citation="Nobody, 'A toy', 2026",
            statement="Lines go up.", protocol="y = slope x.", run=_toy_run,
            quick={"slope": 1.0}, full={"slope": 2.0})


def test_verdict_is_the_conjunction_of_checks():
    assert run_claim(TOY, "quick").verdict == "PASS"
    res = run_claim(TOY, "quick", slope=-1.0)
    assert res.verdict == "FAIL" and not res.passed
    assert res.params == {"slope": -1.0} and res.mode == "quick" and res.seconds >= 0
    assert run_claim(TOY, "full").params == {"slope": 2.0}


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"'mode' parameter of run_claim must be one of"):
        run_claim(TOY, "medium")
    with pytest.raises(ValueError, match=r"'bogus' parameter of run_claim must be one of \['slope'\]"):
        run_claim(TOY, "quick", bogus=1)
    with pytest.raises(ValueError, match=r"'name' parameter of replicate must be one of .*'nope'"):
        get_claim("nope")


def test_result_json_round_trip_and_page(tmp_path):
    res = run_claim(TOY, "full")
    back = ClaimResult.from_dict(json.loads(res.to_json()))
    assert back == res or back.to_dict() == res.to_dict()
    page = write_page(TOY, res, tmp_path)
    text = page.read_text()
    for part in ("# A toy claim", "**Verdict: PASS** (full run", "> Lines go up.",
                 "| slope | 2.0 | positive |", "![toy](toy.png)", "repscope replicate toy --out DIR"):
        assert part in text, part
    png = (tmp_path / "toy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert read_result(tmp_path / "toy.json").to_dict() == res.to_dict()
    index = write_index([TOY], [res], tmp_path).read_text()
    assert "[toy](toy.md)" in index and "**PASS**" in index
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"Replication result .*bad.json.* is not a valid"):
        read_result(tmp_path / "bad.json")


def test_registry_lists_the_claims_with_citations():
    claims = all_claims()
    assert {"debiased-similarity", "neural-collapse", "lm-id-depth",
            "outlier-dimensions"} <= set(claims)
    for c in claims.values():
        assert c.citation and c.statement and c.protocol and set(c.quick) == set(c.full)


def test_cli_list_and_errors():
    runner = CliRunner()
    res = runner.invoke(app, ["replicate", "--list"])
    assert res.exit_code == 0 and "debiased-similarity" in res.output
    for args, msg in ((["replicate"], "Give a claim NAME, --all or --list"),
                      (["replicate", "--all"], "--all writes one page per claim: give --out DIR"),
                      (["replicate", "nope"], "'name' parameter of replicate must be one of"),
                      (["replicate", "toy", "--all", "--out", "x"], "either a claim NAME or --all")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output


# ------------------------------------------------------------------ quick claims and verdicts
# The asserted verdict is the one the quick run reaches and its page explains; a change of
# verdict is a finding to look at, never a reason to retune a claim's threshold.


def test_debiased_similarity_quick_passes(tmp_path):
    res = CliRunner().invoke(app, ["replicate", "debiased-similarity", "--quick", "--strict",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = read_result(tmp_path / "debiased-similarity.json")
    assert out.verdict == "PASS" and out.mode == "quick"
    cka = out.details["cka"]
    assert cka["plugin"][-1] > 0.5 and max(abs(v) for v in cka["debiased"]) < 0.05


def test_neural_collapse_quick_passes():
    res = run_claim(get_claim("neural-collapse"), "quick")
    assert res.verdict == "PASS", [c for c in res.checks if not c.passed]
    h = res.details["history"]
    assert h["train_acc"][-1] == 1.0 and h["nc1"][-1] < h["nc1"][1] / 10
