"""``repscope analyze`` and its results database under faults: exit codes with a summary of
failed tasks, readers that never break a running analysis, SIGKILL at several points, a full
disk and a read-only directory, damaged databases, and one-line errors everywhere."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner

from analysis_support import LAYERS, make_store, toys  # noqa: F401 (fixture)
from faults_support import (
    assert_killed,
    cli,
    error_line,
    fork,
    kill_when,
    mount_tmpfs,
    private_mounts,
    require_namespaces,
    run_in_read_only,
    start,
)
from repscope.analysis.db import load_results, load_runs
from repscope.cli import app

MEASURES = ("_toy_pr", "_toy_local", "_toy_sim")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "store")


def _args(store, out: Path, *measures: str) -> list[str]:
    ms = [x for m in (measures or MEASURES) for x in ("--measures", m)]
    return ["analyze", "--store", str(store.path), "--out", str(out), "--max-rows", "120",
            "--no-report", *ms]


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory, request):
    from analysis_support import register_toys

    register_toys()
    out = tmp_path_factory.mktemp("ref")
    res = CliRunner().invoke(app, _args(store, out))
    assert res.exit_code == 0, res.output
    _REFERENCE_DIR["out"] = out
    return _rows(out)


_REFERENCE_DIR: dict[str, Path] = {}


def _copy_of_reference(reference, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(_REFERENCE_DIR["out"], out)
    return out


def _rows(out: Path):
    df = load_results(out, status=None)
    assert df.key.is_unique
    return df.set_index("key").sort_index()


def _same_results(out: Path, reference) -> None:
    got = _rows(out)
    assert list(got.index) == list(reference.index)
    assert (got.status == "ok").all()
    np.testing.assert_array_equal(got.value.to_numpy(float), reference.value.to_numpy(float))
    # the published snapshot, read the way docs/analyze.md shows, holds the same rows
    with duckdb.connect(str(out / "results.duckdb"), read_only=True) as con:
        keys = [k for (k,) in con.execute("SELECT key FROM results ORDER BY key").fetchall()]
    assert keys == list(reference.index)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# -- exit codes ---------------------------------------------------------------------------------


def test_exit_code_is_0_only_when_every_result_was_computed(store, tmp_path):
    res = CliRunner().invoke(app, _args(store, tmp_path / "ok", "_toy_pr"))
    assert res.exit_code == 0 and res.stderr == "", res.output
    res = CliRunner().invoke(app, _args(store, tmp_path / "some", "_toy_pr", "_toy_fail"))
    assert res.exit_code == 1, res.output
    run_id = load_runs(tmp_path / "some").run_id.iloc[-1]
    assert res.stderr == (
        f"error: 4 of 8 result(s) of run {run_id} failed: _toy_fail on 4 layer(s) x4 "
        f"[RuntimeError: toy failure on purpose]. Details: 'repscope results {tmp_path / 'some'} "
        f"--status error'; rerun the same command to retry the failed ones.\n")
    assert "4 results computed" in res.stdout  # the summary table and counts still print
    res = CliRunner().invoke(app, _args(store, tmp_path / "all", "_toy_fail"))
    assert res.exit_code == 1 and res.stderr.startswith("error: 4 of 4 result(s) of run ")


def test_usage_errors_exit_2_in_one_line(store, tmp_path):
    (tmp_path / "file").write_text("x")
    cases = [
        (["--seed", "-1"], "The 'seed' option must be an int >= 0. Got -1."),
        (["--out", str(tmp_path / "file")],
         f"The 'out' parameter of analyze must be a directory (existing or to create). Got "
         f"'{tmp_path / 'file'}', which is an existing file."),
        (["--measures", "twnn"], "Unknown measure 'twnn'. Did you mean ['twonn', 'local_twonn']? "),
        (["--layers", "encoder.layer.9"], "Unknown layer 'encoder.layer.9'. Did you mean "),
        (["--max-rows", "5"], "Invalid value for '--max-rows': '--max-rows' must be an int >= 10 "
                              "or 'all' (every row). Got '5'. (see 'repscope analyze --help')"),
    ]
    for extra, message in cases:
        args = ["analyze", "--store", str(store.path), "--out", str(tmp_path / "o"), *extra]
        res = CliRunner().invoke(app, args, prog_name="repscope")
        assert res.exit_code == 2, (extra, res.output)
        assert res.stdout == "" and res.stderr.count("\n") == 1, (extra, res.output)
        assert res.stderr.startswith("error: " + message), (extra, res.stderr)


def test_debug_shows_the_traceback_and_internal_errors_say_so(store, tmp_path, monkeypatch):
    import repscope.analysis.run as run_module

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(run_module, "make_plan", broken)
    res = CliRunner().invoke(app, _args(store, tmp_path / "o"))
    assert res.exit_code == 1
    assert res.stderr == ("error: internal error: TypeError: a bug (rerun with 'repscope --debug' "
                          "for the traceback)\n")
    res = CliRunner().invoke(app, ["--debug", *_args(store, tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback (most recent call last)" in res.stderr
    assert res.stderr.endswith("error: internal error: TypeError: a bug\n")


# -- the results table and damaged databases ----------------------------------------------------


def test_results_prints_single_and_pair_rows(reference, tmp_path):
    out = _copy_of_reference(reference, tmp_path)
    res = CliRunner().invoke(app, ["results", str(out), "--limit", "100"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert f"{len(reference)} result(s)" in text
    assert "_toy_pr" in text and "_toy_sim" in text and "encoder.layer.2" in text


DAMAGED = {
    "not DuckDB": lambda db: db.write_bytes(b"this is not a database\n" * 100),
    "truncated": lambda db: db.write_bytes(db.read_bytes()[:4096]),
    "corrupt header": lambda db: db.write_bytes(b"\0" * 4096 + db.read_bytes()[4096:]),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_results_database_is_one_line_naming_it(reference, store, tmp_path, damage):
    out = _copy_of_reference(reference, tmp_path)
    db = out / "results.duckdb"
    for p in out.glob(".results.duckdb.work*"):  # only the published file remains
        p.unlink()
    DAMAGED[damage](db)
    prefix = (f"error: Cannot open the results database '{db}': it is not a DuckDB database, or "
              f"it is damaged (")
    for args in (["results", str(out)], ["report", str(out)], _args(store, out)):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith(prefix), (args, res.stderr)
        assert res.stderr.endswith("). Move it away to start a new one.\n"), res.stderr
    db.unlink()  # moved away: the same command recomputes everything
    res = CliRunner().invoke(app, _args(store, out))
    assert res.exit_code == 0, res.output
    _same_results(out, reference)


# -- readers never break a writer ---------------------------------------------------------------


def test_a_reader_holding_the_database_open_does_not_break_analyze(store, tmp_path):
    """The access pattern docs/analyze.md shows, during a run: a read-only connection kept
    open (a notebook) and short ones opened repeatedly."""
    out = tmp_path / "out"
    args = _args(store, out, "_toy_slow:sleep=0.15", "_toy_pr", "_toy_sim")
    run = cli(*args)

    db = out / "results.duckdb"
    held, counts = None, []
    running = start(run)  # fork first: no other thread touches DuckDB then
    deadline = time.monotonic() + 120
    while running.running() and time.monotonic() < deadline:
        if db.exists():
            if held is None:
                held = duckdb.connect(str(db), read_only=True)
                pinned = held.execute("SELECT count(*) FROM results").fetchone()[0]
            counts.append(held.execute("SELECT count(*) FROM results").fetchone()[0])
            with duckdb.connect(str(db), read_only=True) as con:  # short ones too
                con.execute("SELECT count(*) FROM results").fetchone()
        time.sleep(0.02)
    result = {"child": running.wait()}
    child = result["child"]
    assert child.code == 0, child.stderr
    assert held is not None and set(counts) == {pinned}  # an open connection keeps its snapshot
    held.close()
    with duckdb.connect(str(db), read_only=True) as con:  # a new one sees every result
        n = con.execute("SELECT count(*) FROM results WHERE status = 'ok'").fetchone()[0]
    assert n == len(load_results(out)) == 4 * 2 + 10


# -- kills --------------------------------------------------------------------------------------


def _kill_in_publish() -> None:
    import repscope._io as io

    n = []
    kill_when(io.os, "replace", lambda src, dst: str(dst).endswith("results.duckdb")
              and (n.append(1) or len(n) == 3))


def _kill_in_transaction() -> None:
    from repscope.analysis.db import ResultsDB

    n = []  # the 1st call reads the done keys; the 3rd is inside the 2nd write transaction
    kill_when(ResultsDB, "_ok_keys", lambda con, keys: n.append(1) or len(n) == 3)
    ResultsDB._ok_keys = staticmethod(ResultsDB._ok_keys)


def _kill_after_start() -> None:
    import repscope.analysis.run as run_module

    kill_when(run_module, "_execute", lambda cfg, tasks: True)


def _kill_in_report() -> None:
    import repscope._io as io

    kill_when(io.os, "replace", lambda src, dst: str(dst).endswith("report.html"))


KILL_POINTS = {
    "after the run started": _kill_after_start,
    "inside a write transaction": _kill_in_transaction,
    "while publishing the snapshot": _kill_in_publish,
    "while writing the report": _kill_in_report,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_analyze_killed_at_any_point_resumes_to_the_same_results(store, reference, tmp_path,
                                                                 point):
    out = tmp_path / "out"
    args = _args(store, out)
    if point == "while writing the report":
        args.remove("--no-report")
    arm = KILL_POINTS[point]
    assert_killed(fork(lambda: (arm(), cli(*args)())))
    assert (out / "results.duckdb").exists()  # published at the start of the run
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    _same_results(out, reference)
    runs = load_runs(out)
    killed = "done" if point == "while writing the report" else "running"  # stays visible
    assert list(runs.status) == [killed, "done"]
    assert res.stdout.count("already present") == 1


# -- a full disk and a read-only directory ------------------------------------------------------


def test_a_full_disk_during_analyze_is_one_line_and_resumable(store, reference, tmp_path):
    """ENOSPC raised where the snapshot is written (the 3rd publish), in a child process."""
    out = tmp_path / "out"

    def full_disk():
        import repscope._io as io

        real, n = io.atomic_write, []

        def write(path, fn):
            if Path(path).name == "results.duckdb" and (n.append(1) or len(n) == 3):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(path, fn)

        io.atomic_write = write
        return cli(*_args(store, out))()

    child = fork(full_disk)
    assert child.code == 1, child.stderr
    assert error_line(child) == (
        f"Cannot write the results database '{out / 'results.duckdb'}': No space left on device. "
        f"The results written before are kept; fix the cause (e.g. free disk space) and rerun "
        f"the same command to resume.")
    res = CliRunner().invoke(app, _args(store, out))
    assert res.exit_code == 0, res.output
    _same_results(out, reference)


def test_a_really_full_file_system_during_analyze(store, reference, tmp_path):
    """A 1 MiB tmpfs (DuckDB's own writes hit ENOSPC); then the same file system made larger
    and the same command resumes. Runs in a private mount namespace."""
    require_namespaces()
    mnt, saved = tmp_path / "mnt", tmp_path / "saved"
    mnt.mkdir()
    out = mnt / "out"

    def scenario():
        private_mounts()
        mount_tmpfs(mnt, "1m")
        first = fork(cli(*_args(store, out)))
        from faults_support import _libc_call

        _libc_call("mount", b"tmpfs", str(mnt).encode(), b"tmpfs", 32, b"size=64m")  # remount
        second = fork(cli(*_args(store, out)))
        shutil.copytree(out, saved)
        (saved / "codes.json").write_text(json.dumps([first.code, first.stderr, second.code,
                                                     second.stderr]))

    child = fork(scenario)
    assert child.code == 0, child.stderr
    code1, err1, code2, err2 = json.loads((saved / "codes.json").read_text())
    assert code1 == 1 and err1.count("\n") == 1, err1
    assert err1.startswith(f"error: Cannot write the results database '{out / 'results.duckdb'}'")
    assert "No space left on device" in err1 and err1.endswith(
        "The results written before are kept; fix the cause (e.g. free disk space) and rerun the "
        "same command to resume.\n"), err1
    assert code2 == 0, err2
    (saved / "codes.json").unlink()
    _same_results(saved, reference)


def test_analyze_into_a_read_only_directory_is_one_line(store, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    child, why = run_in_read_only(ro, cli(*_args(store, ro / "o")))
    assert child.code == 1, child.stderr
    assert error_line(child) == (f"Cannot write the output directory '{ro / 'o'}': '{ro}' {why}. "
                                 f"Choose a writable directory with --out.")
