"""`repscope sae train` and `repscope sae inspect` on a small token-level store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from repscope.cli import app


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    from repscope.capture import ActivationStore

    path = tmp_path_factory.mktemp("sae_cli") / "store"
    rng = np.random.default_rng(0)
    vocab = [f"tok{i}" for i in range(40)]
    with ActivationStore.create(path, layers={"encoder.layer.2": 8}, shard_rows=100, vocab=vocab) as w:
        for doc in range(6):
            ids = rng.integers(0, 40, 50)
            X = rng.standard_normal((50, 8)).astype(np.float32)
            X[ids == 7, 0] += 6.0  # token 'tok7' lights up one direction
            w.append({"encoder.layer.2": X},
                     {"doc_id": np.full(50, doc), "position": np.arange(50), "token_id": ids}, chunk=doc)
        w.finish()
    return path


def test_train_then_inspect(store_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sae"
    res = runner.invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", "encoder.layer.2",
                              "--out", str(out), "--d-sae", "16", "--k", "2", "--batch-size", "50",
                              "--steps", "30", "--lr", "0.01", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["hook_name"] == "encoder.layer.2" and cfg["d_sae"] == 16 and cfg["k"] == 2
    assert json.loads((out / "eval.json").read_text())["measure"] == "sae_evaluation"
    res = runner.invoke(app, ["sae", "inspect", str(out), "--store", str(store_dir), "--features", "4"])
    assert res.exit_code == 0, res.output
    page = (out / "features.html").read_text()
    assert "Plotly.newPlot" in page and "https://cdn" not in page.split("<body>")[1]
    assert page.count('class="card"') == 4
    assert "tok" in page and 'class="tok hit"' in page


def test_cli_errors(store_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["sae", "train", "--store", str(store_dir), "--layer", "nope",
                              "--out", str(tmp_path / "x"), "--no-progress"])
    assert res.exit_code != 0 and "Layer 'nope' is not in the store" in res.output
    res = runner.invoke(app, ["sae", "inspect", str(tmp_path / "missing"), "--store", str(store_dir)])
    assert res.exit_code != 0 and "is not a saved SAE" in res.output
