"""What a killed store writer leaves behind, and how the next writer removes it.

A writer creates ``.lock`` before anything else and holds an exclusive ``flock`` on it while
it runs, so a writer that has just taken the lock knows that no other writer is alive. What it
finds is then debris of a dead one:

- temporary files of atomic writes (``.manifest.json.<random>.tmp``, ``.documents.json.…``,
  ``.vocab.json.…``), from a kill during such a write;
- ``documents.json``, ``vocab.json`` and an empty ``shards/`` without ``manifest.json``: a store
  creation killed before its manifest (the commit point) was written.

Both are removed, so a kill at any point of store creation is resumed by running the same
capture again (a temporary file is removed only when no process holds its ``flock``, see
:mod:`repscope._io`). Shard debris (``shards/.tmp-NNNNNN`` and incomplete shards) is handled by the
writer's own recovery. A directory without ``.lock`` was never a store: nothing in it is
touched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from repscope._io import remove_stale_temporaries

__all__ = ["CREATION_FILES", "remove_dead_writer_debris"]

log = logging.getLogger(__name__)

#: what a store creation writes before its manifest
CREATION_FILES = ("documents.json", "vocab.json", "shards")
_ATOMIC_TARGETS = ("manifest.json", "documents.json", "vocab.json")


def remove_dead_writer_debris(path: Path, had_lock: bool) -> list[str]:
    """Remove a dead writer's debris from the store directory ``path``; return the names.

    Call only while holding the store's lock. ``had_lock``: ``.lock`` existed before this
    writer created it (a writer has been here); without it nothing is removed.
    """
    if not had_lock:
        return []
    removed = [p.name for p in remove_stale_temporaries(path, lambda n: n in _ATOMIC_TARGETS)]
    if not (path / "manifest.json").is_file():
        rest = [p for p in path.iterdir() if p.name != ".lock"]
        shards = path / "shards"
        empty_shards = not shards.is_dir() or not any(shards.iterdir())
        if rest and empty_shards and all(p.name in CREATION_FILES for p in rest):
            for p in rest:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p.name)
    if removed:
        log.info("removed the debris of a killed writer in %s: %s", path, sorted(removed))
    return removed
