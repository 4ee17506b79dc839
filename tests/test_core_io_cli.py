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
