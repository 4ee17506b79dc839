"""``repscope landscape``: a sweep end to end (database, plan, report, figure), resuming on a
rerun, a config file, and one-line errors for bad input."""

from __future__ import annotations

import json

from click.testing import CliRunner

from repscope.cli import app
from repscope.landscape import LandscapeDB

ARGS = ["landscape", "--task", "lstsq", "--task-params", '{"rank": 3}', "--fractions", "1.0",
        "--seeds", "0", "--precision", "0"]


def test_cli_sweep_report_and_resume(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    first = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "d_int100" in first.output and "lstsq" in first.output
    for name in ("results.duckdb", "plan.json", "config.json", "landscape.html",
                 "landscape.png"):
        assert (out / name).is_file(), name
    plan = json.loads((out / "plan.json").read_text())
    assert plan[0]["task_name"] == "lstsq" and plan[0]["n_params"] == 24
    html = (out / "landscape.html").read_text()
    assert "Plotly.newPlot" in html and "data-traces=" in html and "d_int100 = 3" in html
    assert (out / "landscape.png").stat().st_size > 10_000
    (_, _, result), = LandscapeDB.at(out).sweeps()
    assert result.d_int(1.0).value == 3
    second = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert "0 training runs computed" in second.output


def test_cli_config_file(tmp_path):
    cfg = tmp_path / "landscape.yaml"
    cfg.write_text("task: [lstsq]\ntask_params: {rank: 2}\nfractions: [1.0]\nseeds: [1]\n"
                   "precision: 0\nreport: false\n")
    res = CliRunner().invoke(app, ["landscape", "--config", str(cfg), "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "o" / "landscape.html").exists()
    (_, _, result), = LandscapeDB.at(tmp_path / "o").sweeps()
    assert result.d_int(1.0).value == 2 and result.seeds == (1,)


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["landscape", "--task", "mnist", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "The 'task' parameter of ready_task must be one of" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, [*ARGS, "--fractions", "1.5", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "must be a float in (0, 1]. Got 1.5" in res.output
    res = runner.invoke(app, ["landscape", "--task-params", "{not json", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "task_params" in res.output
    res = runner.invoke(app, ["landscape", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--projection" in res.output
