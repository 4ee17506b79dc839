"""The results database: unique keys, concurrent writers, export round trip, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from repscope.analysis.db import (
    RESULT_COLUMNS,
    ResultsDB,
    decode_json_columns,
    export_results,
    load_results,
)


def _row(key: str, value: float, status: str = "ok", **kw) -> dict:
    return {"key": key, "run_id": "r1", "layer": "l0", "layer_index": 0, "measure": "m",
            "family": "dimension", "kind": "single", "variant": "", "params": {"k": 3},
            "value": value, "status": status, "started_at": datetime(2026, 1, 1),
            "diagnostics": {"local": np.arange(3.0)}, **kw}


def test_keys_are_unique_ok_results_are_never_overwritten(tmp_path):
    db = ResultsDB(tmp_path / "r.duckdb")
    assert db.done_keys() == set()
    assert db.write_results([_row("a", 1.0), _row("b", float("nan"), status="error")]) == 2
    assert db.write_results([_row("a", 99.0), _row("b", 2.0)]) == 1  # 'a' kept, 'b' replaced
    df = load_results(db.path, status=None).set_index("key")
    assert df.loc["a", "value"] == 1.0 and df.loc["b", "value"] == 2.0
    assert df.loc["b", "status"] == "ok" and len(df) == 2
    assert db.done_keys() == {"a", "b"} and db.done_keys(["a", "zz"]) == {"a"}


def test_json_columns_round_trip_arrays(tmp_path):
    db = ResultsDB(tmp_path / "r.duckdb")
    db.write_results([_row("a", 1.0)])
    df = decode_json_columns(load_results(db.path))
    assert df.params.iloc[0] == {"k": 3}
    np.testing.assert_array_equal(df.diagnostics.iloc[0]["local"], np.arange(3.0))


def test_unknown_column_and_missing_db_are_clear_errors(tmp_path):
    db = ResultsDB(tmp_path / "r.duckdb")
    with pytest.raises(ValueError, match=r"Unknown result column\(s\) \['valu'\]"):
        db.write_results([{"key": "a", "valu": 1.0}])
    with pytest.raises(FileNotFoundError, match=r"No results database at '.*nope.duckdb'"):
        load_results(tmp_path / "nope.duckdb")


def test_at_accepts_a_results_directory(tmp_path):
    assert ResultsDB.at(tmp_path).path == tmp_path / "results.duckdb"
    assert ResultsDB.at(tmp_path / "x.duckdb").path == tmp_path / "x.duckdb"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip(tmp_path, suffix):
    db = ResultsDB(tmp_path / "r.duckdb")
    db.write_results([_row(f"k{i}", i / 3, layer=f"l{i}", layer_index=i,
                           ci_low=i / 3 - 0.1, ci_high=i / 3 + 0.1, n=100 + i)
                      for i in range(5)] + [_row("bad", float("nan"), status="error",
                                                 error="ValueError: boom")])
    out = export_results(db.path, tmp_path / f"out{suffix}")
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    want = load_results(db.path, status=None)
    assert list(back.columns) == list(RESULT_COLUMNS)
    assert sorted(back.key) == sorted(want.key)
    b, w = back.set_index("key").sort_index(), want.set_index("key").sort_index()
    np.testing.assert_allclose(b.value.astype(float), w.value.astype(float), equal_nan=True)
    np.testing.assert_allclose(b.ci_high.astype(float), w.ci_high.astype(float), equal_nan=True)
    assert list(b.params) == list(w.params) and list(b.status) == list(w.status)
    with pytest.raises(ValueError, match=r"must end in .parquet or .csv; got suffix '.xlsx'"):
        export_results(db.path, tmp_path / "out.xlsx")


_WRITER = """
import sys
from repscope.analysis.db import ResultsDB
db = ResultsDB.at(sys.argv[1])
who = sys.argv[2]
for batch in range(10):
    rows = [dict(key=f"shared-{batch}-{i}", run_id=who, value=float(i), status="ok",
                 measure="m", layer="l", kind="single") for i in range(5)]
    rows += [dict(key=f"{who}-{batch}-{i}", run_id=who, value=float(i), status="ok",
                  measure="m", layer="l", kind="single") for i in range(5)]
    db.write_results(rows)
    db.done_keys()
"""


def test_two_processes_writing_one_database_do_not_corrupt_it(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(_WRITER))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), who],
                              stderr=subprocess.PIPE) for who in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()
    df = load_results(tmp_path)
    assert len(df) == df.key.nunique() == 10 * 5 * 3  # shared keys once, each private set once
    shared = df[df.key.str.startswith("shared-")]
    assert len(shared) == 50 and set(shared.run_id) <= {"p1", "p2"}
    for who in ("p1", "p2"):
        assert (df.key.str.startswith(f"{who}-")).sum() == 50
