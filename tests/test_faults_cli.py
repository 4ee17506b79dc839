"""How every ``repscope`` command ends on an error: one line ``error: ...``, exit code 2 for
usage errors and 1 for failed runs, the traceback only with ``--debug``."""

from __future__ import annotations

import errno

import pytest
from click.testing import CliRunner

from repscope.cli import app


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="repscope")


def test_parsing_errors_are_one_line_with_exit_code_2():
    res = _invoke("nosuch")
    assert res.exit_code == 2 and res.stderr == (
        "error: No such command 'nosuch'. (see 'repscope --help')\n")
    res = _invoke("analyze", "--bogus")
    assert res.exit_code == 2 and res.stderr.startswith(
        "error: No such option '--bogus'.") and res.stderr.endswith(
        "(see 'repscope analyze --help')\n")
    res = _invoke()  # no command: click shows the help, as before
    assert res.exit_code == 2 and res.output.startswith("Usage: repscope [OPTIONS] COMMAND")
    res = _invoke("--version")
    assert res.exit_code == 0 and res.stdout.startswith("repscope, version ")


@pytest.mark.parametrize(("exc", "code", "line"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/report.html"), 1,
     "'/data/out/report.html': No space left on device (free space and rerun the same command "
     "to resume)"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/report.html"), 1,
     "'/data/out/report.html': Permission denied (choose a path you can read and write)"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), 1,
     "'/mnt/ro/x': Read-only file system (choose a writable output directory)"),
    (KeyError("Store 'x' has no layer 'y'."), 2, "Store 'x' has no layer 'y'."),
    (ValueError("The 'k' parameter of twonn must be an int in [2, n). Got 1 instead.\nmore"), 2,
     "The 'k' parameter of twonn must be an int in [2, n). Got 1 instead. more"),
    (RuntimeError("The forward pass failed on batch 3"), 1,
     "The forward pass failed on batch 3 (rerun with 'repscope --debug' for the traceback)"),
])
def test_exceptions_become_one_line_with_their_exit_code(monkeypatch, tmp_path, exc, code, line):
    from repscope.capture import ActivationStore

    def fails(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ActivationStore, "open", fails)
    res = _invoke("info", str(tmp_path))
    assert res.exit_code == code, res.output
    assert res.stdout == "" and res.stderr == f"error: {line}\n"


def test_an_interrupt_exits_130(monkeypatch, tmp_path):
    import repscope.report.html as html

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(html, "write_report", interrupted)
    res = _invoke("report", str(tmp_path))
    assert res.exit_code == 130 and res.stderr.strip() == "error: interrupted"  # after ^C's line


def test_the_debug_switch_also_works_from_the_environment(monkeypatch, tmp_path):
    import repscope.report.html as html

    def fails(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(html, "write_report", fails)
    monkeypatch.setenv("REPSCOPE_DEBUG", "1")
    res = _invoke("report", str(tmp_path))
    assert res.exit_code == 1 and "Traceback (most recent call last)" in res.stderr
    assert res.stderr.endswith("error: boom\n")
