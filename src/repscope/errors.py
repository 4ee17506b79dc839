"""The errors a user can act on: their message alone explains what went wrong and what to do.

The ``repscope`` command prints any of them as one line, ``error: <message>``, and exits with
:attr:`UserError.exit_code` (never a traceback; ``repscope --debug`` or ``REPSCOPE_DEBUG=1``
shows it). Exit codes follow click's convention:

- ``2`` (:class:`UsageError`): what was asked cannot run as given: an option or config value
  that fails validation before any work starts (an unknown measure, ``--seed -1``, ``--out``
  naming a file). Click's own command-line parsing errors also exit 2.
- ``1`` (every other :class:`UserError`): the run failed: a file could not be read or written
  (config file, corpus, store, results database, a full disk or a read-only directory), or a
  task failed.

Library code raises these (or ``ValueError`` through :mod:`repscope._validate` for a bad
function argument); it never prints.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputFileError", "StoreError", "UsageError", "UserError", "one_line"]


class UserError(Exception):
    """A failure explained by its message (a path, a value, what to do); exit code 1."""

    exit_code = 1


class UsageError(UserError, ValueError):
    """A request that cannot run as given (validated before any work); exit code 2."""

    exit_code = 2


class InputFileError(UserError, ValueError):
    """An input file that cannot be read as what it should be (not UTF-8, not parseable); the
    message names the file and the line; exit code 1."""


class ConfigError(InputFileError):
    """A config file that cannot be used: unreadable, not parseable, an unknown key or a value
    of the wrong type. The message names the file and the key; exit code 1."""


class StoreError(UserError):
    """An ActivationStore is missing, incomplete, corrupt, of a newer format, or different."""


def one_line(text: str) -> str:
    """``text`` with its lines joined: a message is printed as exactly one line."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
