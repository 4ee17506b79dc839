"""The results database: one DuckDB file, one row per result, safe under concurrent writers.

Every measure evaluated by ``repscope analyze`` becomes one row of the ``results`` table, keyed
by a deterministic task key (a hash of source, layer(s), measure, resolved parameters and the
selected rows). The key is the primary key, so re-running a plan skips what is already there
and a killed run resumes without duplicates. A second table, ``runs``, records each
invocation's plan and provenance (model, data, versions, machine).

Concurrency: DuckDB allows one read-write process per file, so every access opens a
short-lived connection while holding an ``fcntl`` lock on ``<db>.lock`` (exclusive for writes,
shared for reads). Two processes writing to one database therefore serialise instead of
failing or corrupting it. In ``repscope analyze`` the driver is the only writer; workers only
compute.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_COLUMNS",
    "ResultsDB",
    "decode_json_columns",
    "export_results",
    "load_results",
    "load_runs",
]

DB_NAME = "results.duckdb"

#: column name -> DuckDB type, in table order.
RESULT_COLUMNS: dict[str, str] = {
    "key": "VARCHAR PRIMARY KEY",  # deterministic task key: hash(source, layers, measure, params, rows)
    "run_id": "VARCHAR",  # the run that computed the row
    "source": "VARCHAR",  # store path the rows were read from
    "source_id": "VARCHAR",  # hash identifying the store's content
    "model": "VARCHAR",
    "model_hash": "VARCHAR",
    "data": "VARCHAR",
    "data_hash": "VARCHAR",
    "checkpoint": "VARCHAR",
    "checkpoint_step": "BIGINT",  # training step of the checkpoint (NULL: none, or not known)
    "layer": "VARCHAR",
    "layer_index": "INTEGER",  # position of ``layer`` in the store (for ordering plots)
    "layer_b": "VARCHAR",  # second layer of a pair measure, NULL for single measures
    "layer_b_index": "INTEGER",
    "measure": "VARCHAR",  # registered name
    "family": "VARCHAR",
    "kind": "VARCHAR",  # 'single' or 'pair'
    "variant": "VARCHAR",  # user-set parameters, e.g. 'k=20' ('' = defaults)
    "params": "JSON",  # every resolved parameter
    "value": "DOUBLE",
    "stderr": "DOUBLE",
    "ci_low": "DOUBLE",
    "ci_high": "DOUBLE",
    "n": "BIGINT",  # rows the estimate was computed from
    "seed": "BIGINT",
    "rows_hash": "VARCHAR",  # hash of the selected row indices
    "repscope_version": "VARCHAR",
    "started_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "seconds": "DOUBLE",
    "status": "VARCHAR",  # 'ok' or 'error'
    "error": "VARCHAR",
    "diagnostics": "JSON",  # the Estimate's diagnostics (arrays as tagged lists)
    "result_type": "VARCHAR",  # Estimate subclass name
    "extra": "JSON",  # typed fields of Estimate subclasses
}

RUN_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR PRIMARY KEY",
    "started_at": "TIMESTAMP",
    "finished_at": "TIMESTAMP",
    "status": "VARCHAR",  # 'running', 'done', 'failed'
    "n_tasks": "BIGINT",
    "n_done": "BIGINT",
    "n_failed": "BIGINT",
    "plan": "JSON",  # the resolved plan
    "provenance": "JSON",  # model, data, hashes, versions, machine
}


@dataclass(frozen=True)
class ResultsDB:
    """A results database at ``path`` (a ``.duckdb`` file); created on first write."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> ResultsDB:
        """The database ``path``, or ``path/results.duckdb`` when ``path`` is a directory."""
        path = Path(path)
        if path.is_dir() or (not path.suffix and not path.exists()):
            path = path / DB_NAME
        return cls(path)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def connect(self, *, write: bool) -> Iterator[Any]:
        """A short-lived connection under the file lock (exclusive when ``write``)."""
        import duckdb

        if not write and not self.path.exists():
            raise FileNotFoundError(
                f"No results database at {str(self.path)!r}. Run 'repscope analyze' first, "
                "or pass the directory or .duckdb file it wrote."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            try:
                con = duckdb.connect(str(self.path), read_only=not write)
                try:
                    if write:
                        _ensure_schema(con)
                    yield con
                finally:
                    con.close()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- writes -------------------------------------------------------------------------------

    def write_results(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace ``rows`` (dicts keyed by column) in one transaction; return count.

        A row whose key is already present with ``status='ok'`` is kept, not overwritten:
        a result once computed never changes, whichever process wrote it first.
        """
        if not rows:
            return 0
        cols = list(RESULT_COLUMNS)
        bad = sorted({c for r in rows for c in r} - set(cols))
        if bad:
            raise ValueError(f"Unknown result column(s) {bad}; known: {cols}.")
        values = [tuple(_to_db(r.get(c)) for c in cols) for r in rows]
        marks = ", ".join("?" for _ in cols)
        with self.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            keys = [v[0] for v in values]
            done = self._ok_keys(con, keys)
            fresh = [v for v in values if v[0] not in done]
            if fresh:
                con.executemany(
                    f"INSERT OR REPLACE INTO results ({', '.join(cols)}) VALUES ({marks})",
                    fresh,
                )
            con.execute("COMMIT")
        return len(fresh)

    def start_run(self, run_id: str, plan: Mapping[str, Any], provenance: Mapping[str, Any],
                  n_tasks: int, started_at: Any) -> None:
        """Record the start of a run."""
        with self.connect(write=True) as con:
            con.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, NULL, 'running', ?, 0, 0, ?, ?)",
                [run_id, started_at, n_tasks, json.dumps(plan), json.dumps(provenance)],
            )

    def finish_run(self, run_id: str, *, status: str, n_done: int, n_failed: int,
                   finished_at: Any) -> None:
        """Record the end of a run."""
        with self.connect(write=True) as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, n_done = ?, n_failed = ? "
                "WHERE run_id = ?",
                [finished_at, status, n_done, n_failed, run_id],
            )

    # -- reads --------------------------------------------------------------------------------

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys (of ``keys``, or all) already present with ``status='ok'``."""
        if not self.path.exists():
            return set()
        with self.connect(write=False) as con:
            if not _has_table(con, "results"):
                return set()
            return self._ok_keys(con, None if keys is None else list(keys))

    @staticmethod
    def _ok_keys(con: Any, keys: list[str] | None) -> set[str]:
        if keys is None:
            rows = con.execute("SELECT key FROM results WHERE status = 'ok'").fetchall()
        else:
            if not keys:
                return set()
            rows = con.execute(
                "SELECT key FROM results WHERE status = 'ok' AND key IN "
                "(SELECT unnest(?::VARCHAR[]))", [keys]
            ).fetchall()
        return {r[0] for r in rows}

    def query(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run a read-only SQL query; return a pandas DataFrame."""
        with self.connect(write=False) as con:
            return con.execute(sql, params or []).df()


def _has_table(con: Any, name: str) -> bool:
    rows = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()
    return bool(rows)


def _ensure_schema(con: Any) -> None:
    for table, columns in (("results", RESULT_COLUMNS), ("runs", RUN_COLUMNS)):
        body = ", ".join(f"{c} {t}" for c, t in columns.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
        have = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        for c, t in columns.items():  # databases written before a column was added
            if c not in have:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {c} {t}")


def _to_db(value: Any) -> Any:
    """Python values for DuckDB: JSON text for mappings, None for NaN."""
    if isinstance(value, Mapping):
        from repscope.results import to_jsonable

        return json.dumps(to_jsonable(value), allow_nan=True)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def load_results(path: str | Path, *, status: str | None = "ok",
                 measure: str | None = None, layer: str | None = None) -> Any:
    """The results as a pandas DataFrame, one row per result (see :data:`RESULT_COLUMNS`).

    ``path`` is a ``.duckdb`` file or the directory ``repscope analyze`` wrote. Filter by
    ``status`` ('ok', 'error' or None for all), ``measure`` and ``layer``. Rows are sorted by
    measure, variant and layer order. ``params``, ``diagnostics`` and ``extra`` stay JSON text;
    :func:`decode_json_columns` turns them into Python objects.
    """
    db = ResultsDB.at(path)
    where, args = [], []
    for col, val in (("status", status), ("measure", measure), ("layer", layer)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "SELECT * FROM results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY measure, variant, layer_index, layer_b_index NULLS FIRST"
    with db.connect(write=False) as con:
        if not _has_table(con, "results"):
            import pandas as pd

            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        return con.execute(sql, args).df()


def load_runs(path: str | Path) -> Any:
    """The ``runs`` table (one row per ``repscope analyze`` invocation) as a DataFrame."""
    db = ResultsDB.at(path)
    with db.connect(write=False) as con:
        if not _has_table(con, "runs"):
            import pandas as pd

            return pd.DataFrame(columns=list(RUN_COLUMNS))
        return con.execute("SELECT * FROM runs ORDER BY started_at").df()


def decode_json_columns(df: Any, columns: Sequence[str] = ("params", "diagnostics", "extra")) -> Any:
    """Return a copy of ``df`` with JSON text columns decoded (numpy arrays restored)."""
    from repscope.results import _from_jsonable

    out = df.copy()
    for col in columns:
        if col in out:
            out[col] = [
                _from_jsonable(json.loads(v)) if isinstance(v, str) else v for v in out[col]
            ]
    return out


def export_results(path: str | Path, out: str | Path, *, status: str | None = None,
                   measure: str | None = None, layer: str | None = None) -> Path:
    """Export results (filtered as in :func:`load_results`) to ``out``, ``.parquet`` or ``.csv``.

    JSON columns (params, diagnostics, extra) are written as JSON text, so
    ``load_results`` and a Parquet/CSV reader give the same table.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(
            f"Export file {str(out)!r} must end in .parquet or .csv; got suffix {out.suffix!r}."
        )
    df = load_results(path, status=status, measure=measure, layer=layer)
    from repscope._io import atomic_write

    if out.suffix == ".parquet":
        atomic_write(out, lambda f: df.to_parquet(f, index=False))
    else:
        atomic_write(out, lambda f: f.write(df.to_csv(index=False).encode("utf-8")))
    return out
