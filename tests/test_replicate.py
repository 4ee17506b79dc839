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


# ------------------------------------------------------------------ grokking-lid: its parts


def test_modular_addition_split_is_seeded_disjoint_and_twin_aware():
    from repscope.replicate._transformer import modular_addition

    d = modular_addition(11, 0.4, seed=3)
    assert d.tokens.shape == (121, 3) and (d.tokens[:, 2] == 11).all()
    assert np.array_equal(d.labels, (d.tokens[:, 0] + d.tokens[:, 1]) % 11)
    assert d.train.size == round(0.4 * 121) and np.intersect1d(d.train, d.test).size == 0
    assert np.array_equal(np.union1d(d.train, d.test), np.arange(121))
    again, other = modular_addition(11, 0.4, seed=3), modular_addition(11, 0.4, seed=4)
    assert np.array_equal(again.train, d.train) and not np.array_equal(other.train, d.train)
    # novel pairs: held out together with their twin [b, a]
    tw = d.swapped(d.novel)
    assert np.isin(d.novel, d.test).all() and np.isin(tw, d.test).all()
    assert set(d.test) - set(d.novel) == set(d.test[np.isin(d.swapped(d.test), d.train)])
    # one train input per unordered pair, every unordered train pair represented
    key = lambda idx: {tuple(sorted(divmod(int(i), 11))) for i in idx}  # noqa: E731
    assert len(key(d.train_unordered)) == d.train_unordered.size
    assert key(d.train_unordered) == key(d.train)
    with pytest.raises(ValueError, match=r"'train_fraction' parameter of modular_addition must be"):
        modular_addition(11, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"'p' parameter of modular_addition must be an int"):
        modular_addition(1, 0.5, seed=0)


def test_grok_transformer_equals_a_full_causal_block_read_at_the_last_position():
    import torch

    from repscope.replicate._transformer import GrokTransformer

    torch.manual_seed(0)
    m = GrokTransformer(7, d_model=16, n_heads=4, d_mlp=32).double()
    for w in m.parameters():  # non-zero biases too
        torch.nn.init.normal_(w, std=0.3)
    x = torch.tensor([[1, 2, 7], [6, 0, 7], [3, 3, 7]])
    logits, res = m(x)
    # reference: every position through causal attention, then the MLP, the last row read out
    r = m.embed(x) + m.pos.weight[:3]  # (B, 3, 16)
    q = m.q(r).view(3, 3, 4, 4).transpose(1, 2)
    k, v = (t.view(3, 3, 4, 4).transpose(1, 2) for t in m.kv(r).split(16, dim=-1))
    a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    r = r + m.out(a.transpose(1, 2).reshape(3, 3, 16))
    r = r + m.proj(torch.relu(m.fc(r)))
    torch.testing.assert_close(res, r[:, -1])
    torch.testing.assert_close(logits, m.unembed(r[:, -1]))
    with pytest.raises(ValueError, match="'n_heads' parameter of GrokTransformer must divide"):
        GrokTransformer(7, d_model=10, n_heads=4)


def test_train_grokking_calls_back_at_the_recorded_steps_and_stops_when_asked():
    from repscope.replicate._transformer import modular_addition, train_grokking

    d = modular_addition(7, 0.5, seed=0)
    seen = []

    def cb(ck):
        seen.append(ck)
        return ck.step >= 4

    train_grokking(d, steps=50, lr=1e-3, weight_decay=1.0, seed=0, record=[0, 2, 4, 6],
                   on_checkpoint=cb, d_model=16, n_heads=2, d_mlp=32)
    assert [c.step for c in seen] == [0, 2, 4]
    c = seen[-1]
    assert c.reps.shape == (49, 16) and c.correct.shape == (49,)
    assert c.train_acc == pytest.approx(c.correct[d.train].mean())


def test_lid_measure_reads_known_dimensions():
    from repscope.replicate.grokking import measure_lid

    rng = np.random.default_rng(0)
    for dim in (3, 6):  # a uniform cube and a Gaussian, rotated into 20 dimensions
        Z = rng.uniform(size=(800, dim)) if dim == 3 else rng.normal(size=(800, dim))
        Q = np.linalg.qr(rng.normal(size=(20, 20)))[0][:, :dim]
        m = measure_lid(Z @ Q.T, k=64, k_mle=20)
        for key in ("lid", "mle", "twonn"):
            assert abs(m[key] - dim) < 0.15 * dim, (dim, key, m)
        assert 0 < m["lid_se"] < 0.05 * dim


def test_grokking_analysis_on_a_synthetic_record():
    from repscope.replicate.grokking import _checks, analyse, record_steps

    assert record_steps(100, 20) == [0, 1, 2, 4, 8, 16, 20, 40, 60, 80, 100]
    steps = [0, 10, 20, 30, 40, 50, 60, 70, 80]
    rec = {"step": steps,
           "train_acc": [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
           "test_acc": [0.0, 0.3, 0.5, 0.5, 0.5, 0.6, 0.9, 1.0, 1.0],
           "novel_acc": [0.0, 0.0, 0.0, 0.0, 0.05, 0.2, 0.6, 0.95, 1.0],
           "lid": [8.0, 9.0, 10.0, 9.0, 8.0, 7.0, 6.0, 6.0, 6.0],
           "lid_se": [0.1] * 9, "mle": [5.0] * 9, "twonn": [4.0] * 9, "lid_test": [3.0] * 9}
    a = analyse(rec)
    assert (a["t_mem"], a["t_gen"], a["t_jump"], a["t_jump_all_held_out"]) == (20, 70, 60, 20)
    assert (a["t_peak"], a["peak"], a["lid_gen"], a["t_half"]) == (20, 10.0, 6.0, 40)
    assert a["t_onset_lid"] == 30 and a["t_onset_acc"] == 50
    assert [c.passed for c in _checks({0: a})] == [True, True, True]
    # the drop coinciding with the jump fails "before"; no delay fails "grokking"
    late = {**rec, "lid": [8.0, 9.0, 10.0, 10.0, 10.0, 10.0, 7.0, 6.0, 6.0]}
    assert [c.passed for c in _checks({0: analyse(late)})] == [True, True, False]
    fast = {**rec, "novel_acc": [0.0, 0.5, 0.95, 1, 1, 1, 1, 1, 1]}
    assert not _checks({0: analyse(fast)})[0].passed


def test_commutative_twins_are_near_duplicates_that_fool_a_twonn():
    # why grokking-lid keeps one input per unordered pair: at initialisation [a, b] and [b, a]
    # differ only through the positional embeddings, so each input's nearest neighbour is its
    # twin and the TwoNN ratio r2 / r1 is huge
    import torch

    from repscope.measures.dimension import twonn
    from repscope.replicate._transformer import GrokTransformer, modular_addition

    d = modular_addition(23, 0.5, seed=0)
    torch.manual_seed(0)
    with torch.no_grad():
        _, reps = GrokTransformer(23)(torch.from_numpy(d.tokens))
    H = reps.numpy()  # (529, 128)
    a, b = np.divmod(np.arange(23 * 23), 23)
    once = np.flatnonzero(a < b)
    assert twonn(H, fit="mle", n_boot=0).value < 2
    assert twonn(H[once], fit="mle", n_boot=0).value > 3 * twonn(H, fit="mle", n_boot=0).value
