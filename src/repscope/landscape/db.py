"""Landscape runs in the results database: two tables of their own in a ``results.duckdb`` file.

``landscape_points`` holds one row per training run (task fingerprint, kind, ``d``, seed,
projection, SAID, the metric and losses, time, status and error), keyed by a deterministic hash
of all of them, so a sweep run again skips every run already recorded and a killed sweep resumes
where it stopped. ``landscape_sweeps`` holds one row per sweep: its plan and its
:class:`~repscope.landscape.results.LandscapeResult` as JSON, which the report reads.

Access goes through :class:`repscope.analysis.db.ResultsDB` connections (short-lived, under its
``fcntl`` file lock), so a landscape sweep and ``repscope analyze`` can share one file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repscope.analysis.db import ResultsDB
from repscope.landscape.results import LandscapeResult, PointResult

__all__ = ["POINT_COLUMNS", "SWEEP_COLUMNS", "LandscapeDB", "load_points"]

POINT_COLUMNS: dict[str, str] = {
    "key": "VARCHAR PRIMARY KEY",  # hash(task fingerprint, kind, d, seed, projection, said, block)
    "sweep_key": "VARCHAR",  # the sweep that first ran it (baselines are shared between sweeps)
    "task": "VARCHAR",
    "task_key": "VARCHAR",  # the task's fingerprint
    "kind": "VARCHAR",  # 'init', 'full' or 'subspace'
    "d": "BIGINT",  # NULL for init and full
    "seed": "BIGINT",
    "projection": "VARCHAR",  # NULL for init and full
    "said": "BOOLEAN",
    "metric": "VARCHAR",
    "value": "DOUBLE",
    "loss": "DOUBLE",
    "train_loss": "DOUBLE",
    "steps": "BIGINT",
    "seconds": "DOUBLE",
    "n_trainable": "BIGINT",
    "diverged": "BOOLEAN",
    "status": "VARCHAR",  # 'ok' or 'error'
    "error": "VARCHAR",
    "attempts": "INTEGER",
    "worker": "VARCHAR",
    "repscope_version": "VARCHAR",
    "recorded_at": "TIMESTAMP",
}

SWEEP_COLUMNS: dict[str, str] = {
    "sweep_key": "VARCHAR PRIMARY KEY",
    "task": "VARCHAR",
    "projection": "VARCHAR",
    "said": "BOOLEAN",
    "plan": "JSON",
    "result": "JSON",  # LandscapeResult.to_json()
    "updated_at": "TIMESTAMP",
}

_FIELDS = ("kind", "d", "seed", "value", "loss", "train_loss", "steps", "seconds",
           "n_trainable", "diverged")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass(frozen=True)
class LandscapeDB:
    """The landscape tables of the database at ``path`` (a ``.duckdb`` file or a directory)."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> LandscapeDB:
        return cls(ResultsDB.at(path).path)

    def _connect(self, *, write: bool) -> Any:
        return ResultsDB(self.path).connect(write=write)

    @staticmethod
    def _ensure(con: Any) -> None:
        for table, columns in (("landscape_points", POINT_COLUMNS),
                               ("landscape_sweeps", SWEEP_COLUMNS)):
            body = ", ".join(f"{c} {t}" for c, t in columns.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")

    def _has_tables(self, con: Any) -> bool:
        rows = con.execute("SELECT 1 FROM information_schema.tables "
                           "WHERE table_name = 'landscape_points'").fetchall()
        return bool(rows)

    # -- writes -----------------------------------------------------------------------------
    def write_point(self, row: Mapping[str, Any]) -> None:
        """Insert one run's row; a key already recorded as 'ok' is never overwritten."""
        cols = list(POINT_COLUMNS)
        bad = sorted(set(row) - set(cols))
        if bad:
            raise ValueError(f"Unknown landscape_points column(s) {bad}; known: {cols}.")
        values = [_nan_to_none(row.get(c)) for c in cols]
        with self._connect(write=True) as con:
            self._ensure(con)
            con.execute("BEGIN TRANSACTION")
            done = con.execute("SELECT 1 FROM landscape_points WHERE key = ? AND status = 'ok'",
                               [row["key"]]).fetchall()
            if not done:
                con.execute(f"INSERT OR REPLACE INTO landscape_points ({', '.join(cols)}) "
                            f"VALUES ({', '.join('?' for _ in cols)})", values)
            con.execute("COMMIT")

    def write_sweep(self, sweep_key: str, plan: Mapping[str, Any],
                    result: LandscapeResult) -> None:
        """Record (or replace) a sweep's plan and result."""
        with self._connect(write=True) as con:
            self._ensure(con)
            con.execute("INSERT OR REPLACE INTO landscape_sweeps VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [sweep_key, result.task, result.projection, result.said,
                         json.dumps(plan, default=str), result.to_json(), _now()])

    # -- reads ------------------------------------------------------------------------------
    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys (of ``keys``, or all) recorded with status 'ok'."""
        return set(self.points(keys))

    def points(self, keys: Iterable[str] | None = None) -> dict[str, PointResult]:
        """The successful runs among ``keys`` (or all), by key."""
        if not self.path.exists():
            return {}
        sql = f"SELECT key, {', '.join(_FIELDS)} FROM landscape_points WHERE status = 'ok'"
        args: list[Any] = []
        if keys is not None:
            keys = list(keys)
            if not keys:
                return {}
            sql += " AND key IN (SELECT unnest(?::VARCHAR[]))"
            args.append(keys)
        with self._connect(write=False) as con:
            if not self._has_tables(con):
                return {}
            rows = con.execute(sql, args).fetchall()
        out = {}
        for key, *vals in rows:
            rec = dict(zip(_FIELDS, vals, strict=True))
            for f in ("value", "loss", "train_loss", "seconds"):
                rec[f] = math.nan if rec[f] is None else float(rec[f])
            rec["d"] = None if rec["d"] is None else int(rec["d"])
            out[key] = PointResult(**rec)
        return out

    def sweeps(self) -> list[tuple[str, dict[str, Any], LandscapeResult]]:
        """Every recorded sweep as ``(sweep_key, plan, result)``, in recording order."""
        if not self.path.exists():
            return []
        with self._connect(write=False) as con:
            if not self._has_tables(con):
                return []
            rows = con.execute("SELECT sweep_key, plan, result FROM landscape_sweeps "
                               "ORDER BY updated_at").fetchall()
        return [(k, json.loads(p), LandscapeResult.from_json(r)) for k, p, r in rows]


def load_points(path: str | Path) -> Any:
    """Every recorded run (``landscape_points``) as a pandas DataFrame."""
    db = LandscapeDB.at(path)
    with db._connect(write=False) as con:
        if not db._has_tables(con):
            import pandas as pd

            return pd.DataFrame(columns=list(POINT_COLUMNS))
        return con.execute("SELECT * FROM landscape_points ORDER BY task, kind, d, seed").df()
