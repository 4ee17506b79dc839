"""How the ``repscope`` command ends on an error: one line ``error: ...`` and an exit code.

Every exception that leaves a command goes through :func:`exit_code_for`: the message is
printed as a single line on stderr and the process exits with

- ``2`` for usage errors: click's own parsing errors, :class:`repscope.errors.UsageError`
  (a value refused before any work), and ``ValueError``/``KeyError`` from the library's input
  checks (``repscope._validate``);
- ``1`` for a failed run: :class:`repscope.errors.UserError` (unreadable or corrupt files,
  failed tasks), an ``OSError`` (disk full, read-only directory, permission denied: the message
  names the path), and anything unexpected (then marked as an internal error);
- ``130`` when interrupted (Ctrl-C).

``repscope --debug`` or ``REPSCOPE_DEBUG=1`` also prints the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

import click

from repscope.errors import UserError, one_line

#: set by ``repscope --debug``
DEBUG = {"on": False}

_OS_HINTS = {
    errno.ENOSPC: "free space and rerun the same command to resume",
    errno.EDQUOT: "free space and rerun the same command to resume",
    errno.EFBIG: "rerun the same command to resume once the file size limit is lifted",
    errno.EROFS: "choose a writable output directory",
    errno.EACCES: "choose a path you can read and write",
    errno.EPERM: "choose a path you can read and write",
    errno.ENOTDIR: "a part of the path is a file",
    errno.EISDIR: "pass a file, not a directory",
}


def describe_os_error(exc: OSError) -> str:
    """``'<path>': <reason>; <what to do>`` for an ``OSError`` raised by a file operation."""
    reason = exc.strerror or str(exc)
    where = " -> ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
    hint = _OS_HINTS.get(exc.errno or 0)
    text = f"{where}: {reason}" if where else reason
    return f"{text} ({hint})" if hint else text


def _debug() -> bool:
    return DEBUG["on"] or os.environ.get("REPSCOPE_DEBUG", "") not in ("", "0")


def exit_code_for(exc: BaseException, ctx_name: str | None = None) -> int:
    """Print ``exc`` as one ``error:`` line on stderr and return the exit code to use."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    if no_args and isinstance(exc, no_args):  # `repscope` or `repscope sae` alone: the help
        exc.show()
        return exc.exit_code
    if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
        _echo("error: interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):  # `repscope results ... | head`
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (silence the interpreter's flush)
        return 1
    if _debug():
        traceback.print_exception(exc, file=sys.stderr)
    code, message = _classify(exc, ctx_name)
    _echo(f"error: {one_line(message)}")
    return code


def _classify(exc: BaseException, ctx_name: str | None) -> tuple[int, str]:
    if isinstance(exc, click.UsageError):
        ctx = exc.ctx
        where = ctx.command_path if ctx is not None else (ctx_name or "repscope")
        return 2, f"{exc.format_message()} (see '{where} --help')"
    if isinstance(exc, click.ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, UserError):
        return exc.exit_code, str(exc)
    if isinstance(exc, OSError):
        return 1, describe_os_error(exc)
    if isinstance(exc, KeyError):  # raised with a full sentence (e.g. an unknown layer)
        return 2, str(exc.args[0]) if exc.args else repr(exc)
    if isinstance(exc, ValueError):
        return 2, str(exc)
    hint = "" if _debug() else " (rerun with 'repscope --debug' for the traceback)"
    if isinstance(exc, RuntimeError):  # a failed computation (e.g. a forward pass), not a bug
        return 1, f"{exc}{hint}"
    return 1, f"internal error: {type(exc).__name__}: {exc}{hint}"


def _echo(text: str) -> None:
    click.echo(text, err=True)


def invoke_safely(main: Any, *args: Any, **kwargs: Any) -> Any:
    """Call click's ``main`` in non-standalone mode and end the process like standalone mode
    would, but with :func:`exit_code_for`'s one-line errors."""
    try:
        rv = main(*args, standalone_mode=False, **kwargs)
    except BaseException as exc:  # noqa: BLE001 (every error ends as one line + exit code)
        sys.exit(exit_code_for(exc))
    sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)
