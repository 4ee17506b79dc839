"""Config precedence (explicit flag > config file > default) for every option of every command,
config files that cannot be used, and the documented ``--config`` examples run as written."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from analysis_support import LAYERS, make_store, register_toys, toys  # noqa: F401 (fixture)
from faults_support import tiny_model
from repscope.analysis.db import load_results
from repscope.cli import app
from repscope.config import cli_options, load_config, with_config

DOCS = Path(__file__).parent.parent / "docs"


@dataclass(frozen=True)
class Cfg:
    model: str = field(default="m", metadata={"help": "Model."})
    layers: tuple[str, ...] = ()
    pooling: Literal["none", "mean"] = "none"
    max_rows: int | None = 2000
    out: Path = Path("out")
    report: bool = True


def _command(seen: dict):
    @click.command()
    @with_config(Cfg, symbols={"max_rows": {"all": None}})
    @click.option("--tag", "tags", multiple=True, help="Repeatable, not a Cfg field.")
    @click.option("--progress/--no-progress", default=True)
    @click.option("--limit", type=int, default=7)
    @click.option("--store", "store_path", type=click.Path(path_type=Path), required=True)
    @cli_options(Cfg)
    def cmd(cfg, tags, progress, limit, store_path):
        seen.update(cfg=cfg, tags=tags, progress=progress, limit=limit, store=store_path)

    return cmd


def test_flag_beats_file_beats_default_for_every_kind_of_option(tmp_path):
    seen: dict = {}
    cmd = _command(seen)
    run = CliRunner().invoke
    res = run(cmd, ["--store", "s"])
    assert res.exit_code == 0, res.output
    assert seen == dict(cfg=Cfg(), tags=(), progress=True, limit=7, store=Path("s"))
    (tmp_path / "c.yaml").write_text(
        "layers: [a, 'b.*']\npooling: mean\nmax_rows: null\nreport: false\nout: o\n"
        "tag: [x, y]\nprogress: false\nlimit: 3\nstore: from-file\n")
    res = run(cmd, ["--config", str(tmp_path / "c.yaml")])  # every value from the file
    assert res.exit_code == 0, res.output
    assert seen == dict(cfg=Cfg(layers=("a", "b.*"), pooling="mean", max_rows=None, out=Path("o"),
                                report=False),
                        tags=("x", "y"), progress=False, limit=3, store=Path("from-file"))
    res = run(cmd, ["--config", str(tmp_path / "c.yaml"), "--layers", "c", "--pooling", "none",
                    "--max-rows", "50", "--report", "--out", "p", "--tag", "z", "--progress",
                    "--limit", "9", "--store", "cli"])  # every flag beats the file
    assert res.exit_code == 0, res.output
    assert seen == dict(cfg=Cfg(layers=("c",), max_rows=50, out=Path("p"), report=True),
                        tags=("z",), progress=True, limit=9, store=Path("cli"))
    (tmp_path / "d.yaml").write_text("max-rows: all\nlayers: single\ntag: one\n")
    res = run(cmd, ["--config", str(tmp_path / "d.yaml"), "--store", "s"])
    assert res.exit_code == 0, res.output  # '-' keys, symbols, a scalar for a list option
    assert seen["cfg"] == Cfg(layers=("single",), max_rows=None) and seen["tags"] == ("one",)
    res = run(cmd, [])  # a required option given nowhere: click's usage error
    assert res.exit_code == 2 and "Missing option '--store'" in res.output


def test_load_config_keeps_a_files_null(tmp_path):
    (tmp_path / "c.yaml").write_text("max_rows: null\nlayers: [a]\n")
    assert load_config(Cfg, tmp_path / "c.yaml") == Cfg(max_rows=None, layers=("a",))
    assert load_config(Cfg, tmp_path / "c.yaml", max_rows=5, layers=None) == Cfg(
        max_rows=5, layers=("a",))


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "store")


def _computed(db: Path) -> set[tuple[str, str, str, str]]:
    df = load_results(db, status=None)
    return {(r.measure, r.variant or "", r.layer, r.layer_b if isinstance(r.layer_b, str) else "")
            for r in df.itertuples()}


def test_analyze_takes_layers_and_measures_from_the_config_file(toy_store, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"store: {toy_store.path}\nlayers: [encoder.layer.1]\nmeasures: [_toy_pr]\n"
                    f"max_rows: 100\nreport: false\n")
    res = CliRunner().invoke(app, ["analyze", "--config", str(plan), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert _computed(tmp_path / "a") == {("_toy_pr", "", "encoder.layer.1", "")}
    res = CliRunner().invoke(app, ["analyze", "--config", str(plan), "--out", str(tmp_path / "b"),
                                   "--layers", "embeddings", "--layers", "encoder.layer.2",
                                   "--measures", "_toy_local", "--max-rows", "all"])
    assert res.exit_code == 0, res.output
    assert _computed(tmp_path / "b") == {("_toy_local", "", layer, "")
                                         for layer in ("embeddings", "encoder.layer.2")}
    assert (load_results(tmp_path / "b").n == toy_store.n_rows).all()  # --max-rows all
    saved = json.loads((tmp_path / "b" / "plan.json").read_text())["config"]
    assert saved["report"] is False and saved["max_rows"] is None  # the file's report: false


def _doc_yaml(doc: str, title: str) -> str:
    m = re.search(r"```yaml\n(# " + re.escape(title) + r".*?)```", (DOCS / doc).read_text(), re.S)
    assert m, f"no yaml block '# {title}' in docs/{doc}"
    return m.group(1)


@pytest.mark.slow
def test_the_documented_plan_yaml_computes_what_it_names(toy_store, tmp_path):
    """docs/analyze.md's plan.yaml as written (only the store swapped for a toy one); the
    command line overrides the executor and the permutation count to keep the test short."""
    from repscope import registry

    text = _doc_yaml("analyze.md", "plan.yaml")
    assert "store: runs/minilm/store" in text
    (tmp_path / "plan.yaml").write_text(text.replace("runs/minilm/store", str(toy_store.path)))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["analyze", "--config", str(tmp_path / "plan.yaml"),
                                   "--out", str(out), "--no-report", "--executor", "local",
                                   "--workers", "1", "--permutations", "2"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "plan.json").read_text())["config"]
    assert {k: saved[k] for k in ("layers", "max_rows", "seed", "pairs", "labels", "executor",
                                  "workers", "permutations")} == {
        "layers": ["encoder.layer.*"], "max_rows": 4000, "seed": 0, "pairs": "all",
        "labels": "doc_id", "executor": "local", "workers": 1, "permutations": 2}
    want = {(s.name, "") for s in registry.specs() if s.default_panel} | {
        ("mle", "k=10"), ("rsa", 'rdm="cosine"'), ("cka_linear_debiased", "")}
    got = _computed(out)
    assert {(m, v) for m, v, _, _ in got} == want
    layers = {"encoder.layer.0", "encoder.layer.1", "encoder.layer.2"}  # the glob; no embeddings
    assert {a for _, _, a, _ in got} == layers and {b for *_, b in got} <= layers | {""}
    df = load_results(out)
    assert (df.n == toy_store.n_rows).all()  # max_rows 4000 > 240 rows: every row
    pairs = df[(df.kind == "pair") & (df.layer != df.layer_b)]
    assert pairs.extra.str.contains('"n_perm": 2').all()  # the flag's permutation count


@pytest.mark.slow
def test_the_documented_capture_yaml_captures_the_layers_it_names(tmp_path):
    text = _doc_yaml("capture.md", "capture.yaml")
    model = tiny_model(tmp_path / "tiny")
    corpus = tmp_path / "docs.txt"
    corpus.write_text("the first document\nanother one, a little longer\nthird\n")
    text = re.sub(r"(?m)^model: .*$", f"model: {model}", text)
    text = re.sub(r"(?m)^corpus: .*$", f"corpus: {corpus}", text)
    (tmp_path / "capture.yaml").write_text(re.sub(r"(?m)^out: .*$", f"out: {tmp_path / 's'}",
                                                  text))
    res = CliRunner().invoke(app, ["capture", "--config", str(tmp_path / "capture.yaml"),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    from repscope.capture import ActivationStore

    store = ActivationStore.open(tmp_path / "s")
    assert store.layers == ["embeddings", "encoder.layer.2"]  # the file's layers, not all 4
    assert store.pooling == "mean" and store.n_rows == 3  # pooling: mean, one row per document
    res = CliRunner().invoke(app, ["capture", "--config", str(tmp_path / "capture.yaml"),
                                   "--no-progress", "--layers", "encoder.layer.0",
                                   "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert ActivationStore.open(tmp_path / "t").layers == ["encoder.layer.0"]


BAD_CONFIGS = [
    ("u.yaml", "layer: [a]\n",
     "Config file '{p}': Unknown key(s) ['layer'] for AnalyzeConfig (did you mean 'layers' for "
     "'layer'?); known keys: ['address', "),
    ("t.yaml", "max_rows: lots\n",
     "Config file '{p}': key 'max_rows' must be an int or null; got 'lots' (AnalyzeConfig)."),
    ("l.yaml", "layers: 5\n",
     "Config file '{p}': key 'layers' must be a list of strings; got 5 (AnalyzeConfig)."),
    ("b.yaml", "report: maybe\n",
     "Config file '{p}': key 'report' must be a boolean; got 'maybe' (AnalyzeConfig)."),
    ("s.yaml", "layers: [a\nseed: 1\n",
     "Config file '{p}' is not valid YAML: expected ',' or ']', but got ':' at line 2, column 5."),
    ("x.toml", "seed = 1\nseed = 2\n",
     "Config file '{p}' is not valid TOML: Cannot overwrite a value (at line 2, column 9)."),
    ("j.json", '{"seed": }',
     "Config file '{p}' is not valid JSON: Expecting value at line 1, column 10."),
    ("m.yaml", "- seed\n",
     "Config file '{p}' must hold a mapping of keys to values; it holds a list."),
    ("e.yaml", b"seed: 1\nmodel: caf\xe9\n",
     "Config file '{p}' is not valid UTF-8: line 2 (byte 11 of the line) holds the byte(s) e9. "
     "Convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)."),
    ("c.ini", "seed = 1\n", "Config file '{p}' must end in .yaml, .yml, .toml or .json."),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CONFIGS])
def test_a_config_file_that_cannot_be_used_is_one_line_naming_file_and_key(
        tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = CliRunner().invoke(app, ["analyze", "--config", str(path)])
    assert res.exit_code == 1, res.output
    assert res.stdout == "" and res.stderr.count("\n") == 1, res.output
    assert res.stderr.startswith("error: " + message.format(p=path)), res.stderr


def test_every_command_takes_a_config_file(tmp_path, toy_store):
    (tmp_path / "m.yaml").write_text("family: similarity\n")
    res = CliRunner().invoke(app, ["measures", "--config", str(tmp_path / "m.yaml")])
    assert res.exit_code == 0 and "cka_linear" in res.stdout and "twonn" not in res.stdout
    (tmp_path / "i.yaml").write_text("verify: false\n")
    res = CliRunner().invoke(app, ["info", str(toy_store.path), "--config", str(tmp_path / "i.yaml")])
    assert res.exit_code == 0 and "sha256 not checked, --no-verify" in res.stdout, res.output
    (tmp_path / "r.yaml").write_text("status: sometimes\n")
    res = CliRunner().invoke(app, ["results", str(tmp_path), "--config", str(tmp_path / "r.yaml")])
    assert res.exit_code == 1 and res.stderr.startswith(
        f"error: Config file '{tmp_path / 'r.yaml'}': key 'status': 'sometimes' is not one of "
        f"'ok', 'error', 'any'."), res.output
    res = CliRunner().invoke(app, ["analyze", "--config", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.stderr  # click's own check
