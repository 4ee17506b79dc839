"""The command line is consistent: every command's help has examples, mentions only commands
that exist and prints defaults as typed; shared options share defaults; the corpus iterates."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from repscope.cli import app


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
    return out


COMMANDS = _commands(app)


def _exists(words: list[str]) -> bool:
    cmd: click.Command = app
    for w in words:
        if not isinstance(cmd, click.Group):
            return True  # the rest are arguments
        sub = cmd.get_command(click.Context(cmd), w)
        if sub is None:
            return False
        cmd = sub
    return True


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "repscope")
def test_help_has_examples_names_real_commands_and_plain_defaults(path):
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:" in res.output
    assert "PosixPath(" not in res.output and "WindowsPath(" not in res.output
    for m in re.finditer(r"repscope ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", res.output):
        words = m.group(1).split()
        assert _exists(words), f"help of {' '.join(path)} mentions 'repscope {m.group(1)}'"


def test_max_docs_reads_the_same_in_both_commands_and_all_means_every_document():
    from repscope.analysis.plan import AnalyzeConfig
    from repscope.capture.run import CaptureConfig

    # one default (a quick first run) in both commands; each help says so, and both take 'all'
    assert CaptureConfig().max_docs == AnalyzeConfig().max_docs == 40
    for cmd in ("capture", "analyze"):
        text = " ".join(CliRunner().invoke(app, [cmd, "--help"]).output.split())
        assert "--max-docs INT|ALL" in text and "'repscope" in text.split("--max-docs INT|ALL")[1][:400]
    seen = {}

    def fake(cfg, **kw):
        seen["cfg"] = cfg
        raise SystemExit(0)

    import repscope.capture as capture_pkg

    mp = pytest.MonkeyPatch()
    mp.setattr(capture_pkg, "run_capture", fake)
    try:
        CliRunner().invoke(app, ["capture", "--max-docs", "all", "--out", "x"])
        assert seen["cfg"].max_docs is None
        CliRunner().invoke(app, ["capture", "--max-docs", "7", "--out", "x"])
        assert seen["cfg"].max_docs == 7
    finally:
        mp.undo()
    res = CliRunner().invoke(app, ["capture", "--max-docs", "0"])
    assert res.exit_code == 2 and "'--max-docs' must be an int >= 1 or 'all'. Got '0'." in \
        res.output


def test_corpus_iterates_over_its_documents():
    from repscope.data.corpus import load_corpus

    corpus = load_corpus("pydoc")
    docs = list(corpus)
    assert docs == corpus.documents and len(docs) == len(corpus) > 40
    assert corpus[3] == corpus.documents[3]
    assert repr(corpus).startswith("Corpus(id='pydoc', documents=")
