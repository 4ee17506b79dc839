import os
import subprocess
import sys

import pytest

from repscope._io import atomic_write, atomic_write_text
from repscope.cli import main


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # no temporary left behind


def test_atomic_write_uses_the_normal_file_mode(tmp_path):
    p = tmp_path / "g.txt"
    atomic_write_text(p, "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_import_has_no_heavy_side_effects():
    code = ("import sys, repscope; heavy = [m for m in ('transformers', 'duckdb', 'plotly', 'ray') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_version_and_measures(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "repscope" in capsys.readouterr().out


def test_a_command_whose_module_cannot_import_fails_clearly(monkeypatch):
    from click.testing import CliRunner

    from repscope import cli

    monkeypatch.setitem(cli._COMMANDS, "broken", "repscope._no_such_module:cmd")
    result = CliRunner().invoke(cli.app, ["broken"])
    assert result.exit_code != 0
    assert "'repscope broken' is unavailable" in result.output
    assert "_no_such_module" in result.output


def test_every_listed_command_loads():
    from click.testing import CliRunner

    from repscope import cli

    for name in cli._COMMANDS:
        result = CliRunner().invoke(cli.app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "unavailable" not in result.output
