from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from repscope.config import build_config, cli_options, config_to_dict, load_config, save_config


@dataclass(frozen=True)
class Cfg:
    model: str = field(default="minilm", metadata={"help": "Model."})
    layers: tuple[str, ...] = ()
    pooling: Literal["none", "mean"] = "none"
    batch_size: int = 32
    frac: float = 0.5
    max_docs: int | None = None
    out: Path = Path("out")
    verbose: bool = False


def test_cli_options_roundtrip():
    seen = {}

    @click.command()
    @cli_options(Cfg)
    def cmd(**kw):
        seen["cfg"] = build_config(Cfg, kw)

    r = CliRunner().invoke(cmd, ["--layers", "a", "--layers", "b.*", "--pooling", "mean",
                                 "--batch-size", "4", "--max-docs", "3", "--verbose"])
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == Cfg(layers=("a", "b.*"), pooling="mean", batch_size=4, max_docs=3,
                              verbose=True)
    r = CliRunner().invoke(cmd, [])
    assert seen["cfg"] == Cfg()
    r = CliRunner().invoke(cmd, ["--pooling", "max"])
    assert r.exit_code != 0 and "max" in r.output


def test_load_yaml_toml_and_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("model: x\nlayers: [a, b]\nbatch_size: 8\n")
    assert load_config(Cfg, tmp_path / "c.yaml") == Cfg(model="x", layers=("a", "b"), batch_size=8)
    (tmp_path / "c.toml").write_text('pooling = "mean"\nfrac = 1\n')
    assert load_config(Cfg, tmp_path / "c.toml", batch_size=2) == Cfg(pooling="mean", frac=1.0,
                                                                      batch_size=2)
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['modle'\] for Cfg"):
        build_config(Cfg, {"modle": "x"})
    with pytest.raises(ValueError, match="'batch_size' must be an int; got 2.5"):
        build_config(Cfg, {"batch_size": 2.5})
    with pytest.raises(ValueError, match="'pooling' must be one of"):
        build_config(Cfg, {"pooling": "max"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(Cfg, tmp_path / "missing.yaml")
    save_config(Cfg(layers=("a",)), tmp_path / "saved.json")
    assert load_config(Cfg, tmp_path / "saved.json") == Cfg(layers=("a",))
    assert config_to_dict(Cfg())["out"] == "out"
