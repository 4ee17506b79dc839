"""Crash-safe file writes: write to a temporary name in the same directory, fsync, rename.

A write killed before its rename leaves a temporary file ``.<name>.<8 random chars>.tmp``
beside its target. The writer holds an ``flock`` on its temporary file until the rename, so
:func:`stale_temporaries` tells a dead writer's file (no lock) from a live one's, and the next
run removes the debris without ever touching a write in progress.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "fsync_dir",
    "read_utf8",
    "remove_stale_temporaries",
    "stale_temporaries",
]

#: the names ``atomic_write`` gives its temporary files (``tempfile.mkstemp``'s 8 characters)
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _file_mode() -> int:
    """0o666 minus the process umask (what ``open()`` would create), read without changing it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then atomically rename it.

    A reader sees either the old file or the complete new one, never a partial write,
    even if the process is killed at any point.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "live": held until after the rename (stale_temporaries)
        os.fchmod(fd, _file_mode())  # mkstemp creates 0o600; match a normally created file
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def stale_temporaries(directory: Path, names: Callable[[str], bool] | None = None) -> list[Path]:
    """Temporary files that a killed :func:`atomic_write` left in ``directory`` (for targets
    ``names`` accepts): those whose writer's ``flock`` is gone."""
    found = []
    for p in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and (names is None or names(m.group("name"))) and not _live(p):
            found.append(p)
    return found


def _live(path: Path) -> bool:
    """True while a process holds the ``flock`` of ``path`` (a write in progress)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale_temporaries(directory: Path, names: Callable[[str], bool] | None = None
                             ) -> list[Path]:
    """Delete :func:`stale_temporaries`; return what was removed."""
    removed = stale_temporaries(directory, names)
    for p in removed:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    return removed


def read_utf8(path: Path, *, what: str = "File") -> str:
    """The text of ``path`` decoded as UTF-8; a file that is not UTF-8 raises
    :class:`repscope.errors.InputFileError` naming the file, the line and the column."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from repscope.errors import InputFileError

        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start:exc.end].hex(" ")
        raise InputFileError(
            f"{what} {str(path)!r} is not valid UTF-8: line {line} (byte {column} of the line) "
            f"holds the byte(s) {bad}. Convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)."
        ) from None


def check_output_dir(path: Path, name: str, fn: str) -> Path:
    """Check, before any work, that ``path`` can be an output directory and return it.

    A path that exists as a file is a :class:`~repscope.errors.UsageError` (exit code 2); a
    directory that cannot be written (read-only file system, no permission) is a
    :class:`~repscope.errors.UserError` naming the directory that refuses.
    """
    from repscope.errors import UsageError, UserError

    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = "is an existing file" if probe == path else f"lies under {str(probe)!r}, a file"
        raise UsageError(f"The '{name}' parameter of {fn} must be a directory (existing or to "
                         f"create). Got {str(path)!r}, which {what}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise UserError(f"Cannot write the output directory {str(path)!r}: {str(probe)!r} {why}. "
                        f"Choose a writable directory with --{name.replace('_', '-')}.")
    return path
